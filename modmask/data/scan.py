"""SCAN (Lake & Baroni, 2018): every command of the grammar, its actions, and the released splits.

The grammar (generated here, not read from the release)::

    C -> S and S | S after S | S
    S -> V twice | V thrice | V
    V -> X opposite R | X around R | X R | U       (X: U or "turn"; R: left | right)
    U -> walk | look | run | jump

gives 34 V, 102 S and 102 + 2 * 102**2 = 20,910 distinct commands. Meaning: ``walk`` -> ``I_WALK``
(likewise look, run, jump; "turn" alone does nothing); ``x left`` -> ``I_TURN_LEFT x``;
``x opposite left`` -> ``I_TURN_LEFT I_TURN_LEFT x``; ``x around left`` -> ``(I_TURN_LEFT x)`` four
times; ``twice`` / ``thrice`` repeat; ``a and b`` -> a then b; ``a after b`` -> b then a.

Splits (:data:`SPLITS`, sizes as released in github.com/brendenlake/SCAN):

* ``simple``: a random 80/20 split, 16,728 / 4,182 commands; which command goes where is a function
  of the seed (the release's own assignment cannot be reproduced, only its sizes).
* ``length``: train on action sequences of at most 22 actions (16,990), test on the longer ones
  (3,920; no command has exactly 23 actions, so the shortest test sequence has 24).
* ``addprim_jump`` / ``addprim_turn_left``: test on every command containing the primitive ("jump",
  or the phrase "turn left") except the bare primitive command itself (7,706 / 1,208); train on every
  other command plus the bare primitive repeated so that it is 10% of the training set: 13,203 + 1,467
  = 14,670 and 19,701 + 2,189 = 21,890 rows (repeats = others / 9). Commands like "turn opposite
  left" or "walk left" do not contain the phrase "turn left" and are training commands.

Verified against the released files, read through a search index of public GitHub repositories
(``read_file`` reports each stored file's size in characters and serves it page by page):

* brendenlake/SCAN (the release): ``tasks.txt`` has 4,080,388 characters,
  ``add_prim_split/tasks_test_addprim_turn_left.txt`` 173,679 and ``tasks_train_addprim_turn_left.txt``
  3,974,537: exactly the size of :func:`all_commands` and of our ``addprim_turn_left`` test and train
  sets written one ``IN: <command> OUT: <actions>`` line each (so 2,189 bare "turn left" lines).
* The simple, length and addprim_jump files are stored only for the fork aman313/SCAN, whose copies
  have CRLF line ends (one character more per line): length train 2,740,408 = 2,723,418 + 16,990 and
  test 1,360,890 = 1,356,970 + 3,920; addprim_jump train 2,594,289 = 2,579,619 + 14,670 (so 1,467
  bare "jump" lines); simple train 3,284,666 plus test 816,632 = 4,080,388 + 20,910, i.e. every
  command once. The fork's ``tasks_test_addprim_jump.txt`` has 4 lines prepended ("jump", "turn
  left", "jump right" and the non-SCAN "turn right jump": 141 characters); the rest, 1,539,402 - 141
  = 1,531,555 + 7,706, matches our test set.
* The first page (16,000 characters, 80-300 lines) of each of these files was read: each of 31 lines
  checked (and/after, twice/thrice, opposite, around, turn; "turn left after jump twice" in both
  add-primitive test sets) is in our corresponding set, and the add-primitive train files hold the
  bare primitive interleaved, about every tenth line. ``tests/test_scan_data.py`` keeps those lines.

Same sizes do not prove same lines (a swapped "after" keeps every length), which is why the sampled
lines are compared too. Row order is not reproduced: the release shuffles (its length files go by
increasing action count); each split here comes in an order shuffled by the seed.

:func:`read_official` reads the release's text files; :func:`split_from_official` a whole split.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..io import write_parquet

SPLITS = ("simple", "length", "addprim_jump", "addprim_turn_left")
PRIMITIVES = ("walk", "look", "run", "jump")
DIRECTIONS = ("left", "right")
SIMPLE_TEST_SIZE = 4182  # 20% of 20,910, as released
MAX_TRAIN_LENGTH = 22  # the length split's longest training action sequence
# The command an add-primitive split holds out (its bare form stays in training, over-represented).
HELD_OUT = {"addprim_jump": "jump", "addprim_turn_left": "turn left"}
PRIMITIVE_SHARE = 0.1  # the bare primitive's share of the add-primitive training sets
# Files of the release (relative to a checkout of brendenlake/SCAN), per split: (train, test).
OFFICIAL_FILES = {
    "simple": ("simple_split/tasks_train_simple.txt", "simple_split/tasks_test_simple.txt"),
    "length": ("length_split/tasks_train_length.txt", "length_split/tasks_test_length.txt"),
    "addprim_jump": ("add_prim_split/tasks_train_addprim_jump.txt",
                     "add_prim_split/tasks_test_addprim_jump.txt"),
    "addprim_turn_left": ("add_prim_split/tasks_train_addprim_turn_left.txt",
                          "add_prim_split/tasks_test_addprim_turn_left.txt"),
}
COLUMNS = ("command", "actions")


class ScanFileError(ValueError):
    """A missing or malformed SCAN text file; the message names the file (and line)."""


def _verb_phrases() -> list[tuple[str, list[str]]]:
    """Every V of the grammar (34) with its actions."""
    phrases = [(u, [f"I_{u.upper()}"]) for u in PRIMITIVES]
    for x in PRIMITIVES + ("turn",):
        act = [] if x == "turn" else [f"I_{x.upper()}"]  # "turn" only turns
        for r in DIRECTIONS:
            t = f"I_TURN_{r.upper()}"
            phrases.append((f"{x} {r}", [t] + act))
            phrases.append((f"{x} opposite {r}", [t, t] + act))
            phrases.append((f"{x} around {r}", ([t] + act) * 4))
    return phrases


def _sentences() -> list[tuple[str, list[str]]]:
    """Every S of the grammar (102): V, V twice, V thrice."""
    out = []
    for v, act in _verb_phrases():
        out += [(v, act), (f"{v} twice", act * 2), (f"{v} thrice", act * 3)]
    return out


def all_commands() -> list[tuple[str, str]]:
    """All 20,910 commands as ``(command, actions)``, actions space-separated, in a fixed order."""
    sentences = _sentences()
    pairs = [(s, " ".join(a)) for s, a in sentences]
    for s1, a1 in sentences:
        for s2, a2 in sentences:
            pairs.append((f"{s1} and {s2}", " ".join(a1 + a2)))
            pairs.append((f"{s1} after {s2}", " ".join(a2 + a1)))  # "after": the second part runs first
    return pairs


def _contains(command: str, phrase: str) -> bool:
    """Whether ``phrase`` occurs in ``command`` as whole words."""
    return f" {phrase} " in f" {command} "


def _frame(pairs, rng: np.random.Generator) -> pd.DataFrame:
    """Rows in an order shuffled by ``rng`` (the release's files are shuffled too)."""
    df = pd.DataFrame(pairs, columns=list(COLUMNS))
    return df.iloc[rng.permutation(len(df))].reset_index(drop=True)


def make_split(name: str, seed: int = 0) -> dict[str, pd.DataFrame]:
    """``{"train": df, "test": df}`` of split ``name``, columns ``command`` and ``actions`` (str).

    Only ``simple``'s membership depends on ``seed``; every split's row order does.
    """
    if name not in SPLITS:
        raise ValueError(f"unknown SCAN split {name!r}; known: {', '.join(SPLITS)}")
    pairs = all_commands()
    rng = np.random.default_rng(seed)
    if name == "simple":
        order = rng.permutation(len(pairs))
        test_index = set(order[:SIMPLE_TEST_SIZE].tolist())
        train = [p for i, p in enumerate(pairs) if i not in test_index]
        test = [p for i, p in enumerate(pairs) if i in test_index]
    elif name == "length":
        train = [p for p in pairs if len(p[1].split()) <= MAX_TRAIN_LENGTH]
        test = [p for p in pairs if len(p[1].split()) > MAX_TRAIN_LENGTH]
    else:
        primitive = HELD_OUT[name]
        bare = [p for p in pairs if p[0] == primitive]
        test = [p for p in pairs if _contains(p[0], primitive) and p[0] != primitive]
        train = [p for p in pairs if not _contains(p[0], primitive)]
        # repeats r with r / (len(train) + r) == 10%; integral for both released splits
        repeats = round(len(train) * PRIMITIVE_SHARE / (1 - PRIMITIVE_SHARE))
        train += bare * repeats
    return {"train": _frame(train, rng), "test": _frame(test, rng)}


def parse_line(line: str, where: str = "SCAN line") -> tuple[str, str]:
    """``"IN: <command> OUT: <actions>"`` -> ``(command, actions)``; ``where`` names it in errors."""
    text = line.strip()
    if not text.startswith("IN: ") or " OUT: " not in text:
        raise ScanFileError(f"{where}: expected 'IN: <command> OUT: <actions>', got {text[:80]!r}")
    command, actions = text[len("IN: "):].split(" OUT: ", 1)
    command, actions = " ".join(command.split()), " ".join(actions.split())
    if not command or not actions or "OUT:" in actions.split() or "IN:" in command.split():
        raise ScanFileError(f"{where}: empty or repeated command/actions in {text[:80]!r}")
    return command, actions


def read_official(path: str | Path) -> pd.DataFrame:
    """One of the release's text files as a frame with columns ``command`` and ``actions``.

    Blank lines are skipped; duplicates (the add-primitive training files' repeats) are kept.
    """
    path = Path(path)
    if not path.is_file():
        raise ScanFileError(f"SCAN file not found: {path.resolve()}")
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if line.strip():
                rows.append(parse_line(line, where=f"{path}, line {number}"))
    return pd.DataFrame(rows, columns=list(COLUMNS))


def official_paths(directory: str | Path, name: str) -> tuple[Path, Path]:
    """Paths of split ``name``'s (train, test) files in ``directory``: a checkout of the release
    (``directory/add_prim_split/...``) or a flat folder holding the files."""
    if name not in SPLITS:
        raise ValueError(f"unknown SCAN split {name!r}; known: {', '.join(SPLITS)}")
    directory = Path(directory)
    paths = []
    for relative in OFFICIAL_FILES[name]:
        nested, flat = directory / relative, directory / Path(relative).name
        if not nested.is_file() and not flat.is_file():
            raise ScanFileError(f"SCAN file {Path(relative).name} for split {name!r} not found: "
                                f"looked for {nested.resolve()} and {flat.resolve()}")
        paths.append(nested if nested.is_file() else flat)
    return paths[0], paths[1]


def split_from_official(directory: str | Path, name: str) -> dict[str, pd.DataFrame]:
    """``{"train": df, "test": df}`` of split ``name`` read from the release's files."""
    train, test = official_paths(directory, name)
    return {"train": read_official(train), "test": read_official(test)}


def to_official_text(df: pd.DataFrame) -> str:
    """Rows as the release writes them: one ``IN: <command> OUT: <actions>`` line each."""
    return "".join(f"IN: {c} OUT: {a}\n" for c, a in zip(df["command"], df["actions"]))


def write_split(name: str, settings: dict, train_path, test_path, log) -> None:
    """Write split ``name``'s train and test tables (Parquet, atomically): generated from the grammar
    with ``settings["seed"]``, or read from the release's files in ``settings["official_dir"]``."""
    official = settings.get("official_dir")
    seed = int(settings.get("seed", 0))
    split = split_from_official(official, name) if official else make_split(name, seed)
    source = f"official files in {official}" if official else f"generated from the grammar (seed {seed})"
    for part, path in (("train", train_path), ("test", test_path)):
        write_parquet(split[part], path, {"experiment": "scan", "split": name, "part": part, "settings": settings})
        log.info("SCAN %s %s: %d rows, %s -> %s", name, part, len(split[part]), source, path)
