"""DeepMind's Mathematics Dataset (Saxton et al., 2019), the five modules of the paper's section 4.

Each task is one of the generator's modules (:data:`TASKS`) at three training levels (:data:`LEVELS`:
easy, medium and hard are the release's ``train-easy``, ``train-medium`` and ``train-hard``). The
samples come from one of two sources:

* the official pregenerated release ``mathematics_dataset-v1.0`` (config key
  ``mathematics.data.archive``): the unpacked folder or the ``.tar.gz`` itself, with files
  ``train-<level>/<task>.txt`` of alternating question and answer lines (:func:`read_archive`);
* the generator from PyPI (``mathematics-dataset`` 1.0.1), which imports only with old sympy and
  numpy and so runs in an environment of its own (``envs/mathematics-requirements.txt``, built by
  ``modmask.generator_env.build_venv``, or ``envs/mathematics.yaml`` with conda).
  ``scripts/mathematics_generate_shard.py``
  writes one seeded, deterministic shard of a level as JSON lines (:func:`read_shard`).

:func:`split_task` turns a task's levels into its tables: questions are de-duplicated across all
levels, keeping the first occurrence in the order easy, medium, hard (within a level: shard by shard,
line by line), so no question appears twice anywhere; then ``test_per_level`` rows of each level,
drawn with a seed, become the test set and the rest the training set. :func:`write_task` writes
``train.parquet`` and ``test.parquet`` with string columns ``question``, ``answer`` and ``level``.

Text is modelled character by character: :func:`char_vocabulary` is the generator's character set
(space, letters, digits, punctuation) as a :class:`~modmask.data.vocab.Vocabulary`, the same ids for
every task, shared by questions and answers.
"""
from __future__ import annotations

import hashlib
import json
import string
import tarfile
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ..io import write_parquet
from .vocab import Vocabulary

TASKS = ("arithmetic__add_or_sub", "algebra__linear_1d", "calculus__differentiate", "comparison__sort",
         "polynomials__collect")
LEVELS = ("easy", "medium", "hard")
COLUMNS = ("question", "answer", "level")
ARCHIVE_NAME = "mathematics_dataset-v1.0"  # the release's top folder (and tarball name)
# The characters the generator writes (generate_settings.QUESTION_CHARS without its empty entry).
CHARS = " " + string.ascii_letters + string.digits + string.punctuation
# The generator's limits: longer questions/answers are dropped and drawn again.
MAX_QUESTION_LENGTH, MAX_ANSWER_LENGTH = 160, 30
HASH_SEED = "0"  # PYTHONHASHSEED of every generator process
KEY = "mathematics.data"


class MathematicsDataError(ValueError):
    """A missing or malformed source of Mathematics Dataset samples; the message names the file."""


def check_task(task: str) -> str:
    if task not in TASKS:
        raise MathematicsDataError(f"unknown Mathematics Dataset task {task!r}; valid tasks: {', '.join(TASKS)}")
    return task


def check_level(level: str) -> str:
    if level not in LEVELS:
        raise MathematicsDataError(f"unknown level {level!r}; valid levels: {', '.join(LEVELS)}")
    return level


def check_settings(data: Mapping) -> None:
    """Settings the schema cannot check: every shard gets at least one sample."""
    if data.get("archive"):
        return
    samples, shards = int(data["samples_per_level"]), int(data["shards"])
    if shards > samples:
        raise MathematicsDataError(f"{KEY}.shards ({shards}) exceeds {KEY}.samples_per_level ({samples}): "
                                   "every shard needs at least one sample")
    if int(data["test_per_level"]) >= samples:
        raise MathematicsDataError(f"{KEY}.test_per_level ({data['test_per_level']}) must be below "
                                   f"{KEY}.samples_per_level ({samples}), which leaves no training samples")


# -- seeds and shards ----------------------------------------------------------------------------

def derive_seed(*parts) -> int:
    """A 32-bit seed from ``parts`` (the config seed, task, level, ...), the same on every machine."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "little")


def shard_sizes(samples: int, shards: int) -> list[int]:
    """Samples of each shard of a level: ``samples`` split as evenly as possible."""
    if shards < 1 or samples < shards:
        raise MathematicsDataError(f"cannot split {samples} samples into {shards} non-empty shards")
    return [samples // shards + (i < samples % shards) for i in range(shards)]


def shard_seed(seed: int, task: str, level: str, shard: int) -> int:
    """The generator seed of one shard: distinct for every (task, level, shard) of a config seed."""
    return derive_seed("mathematics", int(seed), check_task(task), check_level(level), int(shard))


def shard_settings(data: Mapping, task: str, level: str, shard: int) -> dict:
    """What one shard job generates: ``{"samples": n, "seed": s}``."""
    sizes = shard_sizes(int(data["samples_per_level"]), int(data["shards"]))
    return {"samples": sizes[int(shard)], "seed": shard_seed(data["seed"], task, level, shard)}


def task_inputs(data: Mapping, task: str, folder: str) -> dict[str, list[str]]:
    """Rule inputs of a task's tables: ``{"archive": [the release's files]}`` when ``data["archive"]``
    is set, else ``{level: [shard paths in order]}``, shards being ``folder/<task>/shards/<level>_<i>.jsonl``."""
    check_task(task)
    if data.get("archive"):
        return {"archive": [str(p) for p in archive_files(data["archive"], task)]}
    return {level: [f"{folder}/{task}/shards/{level}_{shard}.jsonl" for shard in range(int(data["shards"]))]
            for level in LEVELS}


def data_settings(data: Mapping) -> dict:
    """The settings a task's tables depend on (not where the generator's interpreter is)."""
    keys = ("archive", "test_per_level", "seed") if data.get("archive") else (
        "samples_per_level", "shards", "test_per_level", "seed")
    return {key: data.get(key) for key in keys}


# -- reading sources -----------------------------------------------------------------------------

def _check_text(question: str, answer: str, where: str) -> None:
    if not question or not answer:
        raise MathematicsDataError(f"{where}: empty question or answer")
    if "\n" in question or "\n" in answer:
        raise MathematicsDataError(f"{where}: a question or answer spans several lines")


def read_shard(path: str | Path, expected: int | None = None) -> pd.DataFrame:
    """One generated shard (JSON lines ``{"question", "answer"}``) as a frame; ``expected``: its size."""
    path = Path(path)
    if not path.is_file():
        raise MathematicsDataError(f"Mathematics Dataset shard not found: {path}")
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            where = f"shard {path}, line {number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise MathematicsDataError(f"{where}: not a JSON line ({error.msg}): {line[:80]!r}") from None
            if (not isinstance(record, dict) or set(record) != {"question", "answer"}
                    or not all(isinstance(v, str) for v in record.values())):
                raise MathematicsDataError(f"{where}: expected {{\"question\": str, \"answer\": str}}, "
                                           f"got {line[:80]!r}")
            _check_text(record["question"], record["answer"], where)
            rows.append((record["question"], record["answer"]))
    if expected is not None and len(rows) != expected:
        raise MathematicsDataError(f"shard {path} has {len(rows)} samples, expected {expected}: "
                                   "an older or foreign file; delete it to generate it again")
    return pd.DataFrame(rows, columns=["question", "answer"], dtype=object)


def parse_text(text: str, where: str) -> pd.DataFrame:
    """A release file's text (question and answer on alternating lines) as a frame."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline
    lines = [line.rstrip("\r") for line in lines]
    if len(lines) % 2:
        raise MathematicsDataError(f"{where}: odd number of lines ({len(lines)}); expected alternating "
                                   "question and answer lines")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            raise MathematicsDataError(f"{where}, line {number}: empty line")
    return pd.DataFrame({"question": lines[0::2], "answer": lines[1::2]}, dtype=object)


def is_tarball(path: str | Path) -> bool:
    return str(path).endswith((".tar.gz", ".tgz", ".tar"))


def level_file(task: str, level: str) -> str:
    """A task's file of one level inside the release: ``train-<level>/<task>.txt``."""
    return f"train-{check_level(level)}/{check_task(task)}.txt"


def archive_root(archive: str | Path) -> Path:
    """The folder holding ``train-easy/`` etc.: ``archive`` or its ``mathematics_dataset-v1.0``."""
    archive = Path(archive)
    if not archive.exists():
        raise MathematicsDataError(f"Mathematics Dataset archive {archive} (config key {KEY}.archive) does not "
                                   f"exist; give the unpacked {ARCHIVE_NAME} folder or {ARCHIVE_NAME}.tar.gz, "
                                   "or null to generate the data")
    if not archive.is_dir():
        raise MathematicsDataError(f"{KEY}.archive: {archive} is neither a folder nor a .tar.gz/.tgz/.tar file")
    nested = archive / ARCHIVE_NAME
    if not (archive / "train-easy").is_dir() and (nested / "train-easy").is_dir():
        return nested
    return archive


def archive_files(archive: str | Path, task: str) -> list[Path]:
    """The files a task needs from ``archive`` (the tarball itself, or the three level files); a
    missing file is named with the config key."""
    check_task(task)
    if is_tarball(archive):
        if not Path(archive).is_file():
            raise MathematicsDataError(f"Mathematics Dataset archive {archive} (config key {KEY}.archive) "
                                       "does not exist")
        return [Path(archive)]
    root = archive_root(archive)
    files = [root / level_file(task, level) for level in LEVELS]
    for path in files:
        if not path.is_file():
            raise MathematicsDataError(f"Mathematics Dataset file {path} not found in the archive "
                                       f"{archive} (config key {KEY}.archive)")
    return files


def read_archive(archive: str | Path, task: str) -> dict[str, pd.DataFrame]:
    """A task's three levels from the release: the unpacked folder or the tarball (read as a stream,
    so a 2 GB ``.tar.gz`` is never unpacked to disk)."""
    if not is_tarball(archive):
        return {level: parse_text(path.read_text(encoding="utf-8"), f"{path}")
                for level, path in zip(LEVELS, archive_files(archive, task))}
    archive_files(archive, task)  # exists
    wanted = {level_file(task, level): level for level in LEVELS}
    found = {}
    try:
        with tarfile.open(archive, mode="r|*") as tar:
            for member in tar:
                name = "/".join(Path(member.name).parts[-2:])
                if member.isfile() and name in wanted and wanted[name] not in found:
                    text = tar.extractfile(member).read().decode("utf-8")
                    found[wanted[name]] = parse_text(text, f"{archive}: {member.name}")
                    if len(found) == len(LEVELS):
                        break
    except (tarfile.TarError, OSError, EOFError) as error:
        raise MathematicsDataError(f"cannot read the Mathematics Dataset archive {archive} (config key "
                                   f"{KEY}.archive): {error}") from None
    missing = [level_file(task, level) for level in LEVELS if level not in found]
    if missing:
        raise MathematicsDataError(f"Mathematics Dataset file(s) {', '.join(missing)} not found in the archive "
                                   f"{archive} (config key {KEY}.archive)")
    return found


def read_shards(shards: Mapping[str, Sequence], data: Mapping) -> dict[str, pd.DataFrame]:
    """Every level of a task from its shards (``{level: [shard paths in order]}``), sizes checked."""
    sizes = shard_sizes(int(data["samples_per_level"]), int(data["shards"]))
    levels = {}
    for level in LEVELS:
        paths = list(shards.get(level, []))
        if len(paths) != len(sizes):
            raise MathematicsDataError(f"level {level}: {len(paths)} shard files, expected {len(sizes)} "
                                       f"({KEY}.shards)")
        levels[level] = pd.concat([read_shard(p, n) for p, n in zip(paths, sizes)], ignore_index=True)
    return levels


# -- tables --------------------------------------------------------------------------------------

def split_task(levels: Mapping[str, pd.DataFrame], test_per_level: int, seed: int, task: str,
               ) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """De-duplicate a task's questions across its levels and hold out each level's test set.

    A question keeps its first occurrence in the order easy, medium, hard (within a level: the
    input order), so every question appears once in train and test together. Then
    ``test_per_level`` rows of each level (drawn with a seed derived from ``seed``, task and level)
    form the test set, in their input order; the rest is the training set. Returns
    ``(train, test, stats)``, ``stats`` counting per level the samples read, duplicates dropped,
    and rows in test and train.
    """
    check_task(task)
    seen: set[str] = set()
    train_parts, test_parts, stats = [], [], {}
    for level in LEVELS:
        if level not in levels:
            raise MathematicsDataError(f"task {task}: no samples of level {level}")
        df = levels[level]
        first = ~df["question"].duplicated(keep="first") & ~df["question"].isin(seen)
        unique = df.loc[first, ["question", "answer"]].reset_index(drop=True)
        seen.update(unique["question"])
        if len(unique) <= test_per_level:
            raise MathematicsDataError(
                f"task {task}, level {level}: {len(unique)} distinct questions ({len(df)} before de-duplication) "
                f"leave nothing for training after a test set of {test_per_level}; raise "
                f"{KEY}.samples_per_level or lower {KEY}.test_per_level")
        rng = np.random.default_rng(derive_seed("mathematics-test", int(seed), task, level))
        is_test = np.zeros(len(unique), dtype=bool)
        is_test[rng.choice(len(unique), size=test_per_level, replace=False)] = True
        unique["level"] = level
        test_parts.append(unique[is_test])
        train_parts.append(unique[~is_test])
        stats[level] = {"read": len(df), "duplicates": len(df) - len(unique), "test": int(is_test.sum()),
                        "train": int((~is_test).sum())}
    frames = [pd.concat(parts, ignore_index=True).astype({c: str for c in COLUMNS})[list(COLUMNS)]
              for parts in (train_parts, test_parts)]
    return frames[0], frames[1], stats


def write_task(task: str, data: Mapping, sources: Mapping[str, Sequence] | None, train_path, test_path,
               log) -> dict:
    """Write a task's ``train.parquet`` and ``test.parquet`` (atomically) from ``data["archive"]`` if
    set, else from its shards (``sources``: ``{level: [shard paths]}``). Returns the per-level stats."""
    check_task(task)
    archive = data.get("archive")
    if archive:
        levels = read_archive(archive, task)
        source = f"the release {archive}"
    else:
        levels = read_shards(sources or {}, data)
        source = f"{int(data['shards'])} generated shard(s) per level"
    train, test, stats = split_task(levels, int(data["test_per_level"]), int(data["seed"]), task)
    char_vocabulary(train, test)  # every character is one the models know
    settings = data_settings(data)
    for part, df, path in (("train", train, train_path), ("test", test, test_path)):
        write_parquet(df, path, {"experiment": "mathematics", "task": task, "part": part, "settings": settings,
                                 "source": source, "levels": stats})
    for level, counts in stats.items():
        log.info("%s %s: %d read, %d duplicate questions dropped, %d test, %d train", task, level,
                 counts["read"], counts["duplicates"], counts["test"], counts["train"])
    log.info("%s from %s: %d train rows -> %s, %d test rows -> %s", task, source, len(train), train_path,
             len(test), test_path)
    return stats


def char_vocabulary(*frames: pd.DataFrame) -> Vocabulary:
    """The character vocabulary of every task: the generator's characters in sorted order after the
    special tokens (ids as ``Vocabulary.build`` would give over all of them). With ``frames``, checks
    that their questions and answers use no other character."""
    vocab = Vocabulary(sorted(CHARS), level="char")
    for df in frames:
        for column in ("question", "answer"):
            texts = df[column]
            extra = sorted(set("".join(texts)) - set(CHARS))
            if extra:
                example = next(t for t in texts if set(t) & set(extra))
                raise MathematicsDataError(f"characters {extra} (e.g. in {column} {example[:80]!r}) are not "
                                           "in the Mathematics Dataset vocabulary")
    return vocab
