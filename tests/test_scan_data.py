"""SCAN generation, the released splits' sizes and rules, and the reader of the release's files."""
import pytest

from modmask.data import scan

# (train, test) sizes of the release (github.com/brendenlake/SCAN)
RELEASED_SIZES = {
    "simple": (16728, 4182),
    "length": (16990, 3920),
    "addprim_jump": (14670, 7706),
    "addprim_turn_left": (21890, 1208),
}

# Worked out by hand from the grammar's meaning, not by the generator.
L, R = "I_TURN_LEFT", "I_TURN_RIGHT"
HAND_DERIVED = {
    "walk": "I_WALK",
    "turn left": L,
    "turn opposite right": f"{R} {R}",
    "turn around left twice": " ".join([L] * 8),
    "look right thrice": f"{R} I_LOOK {R} I_LOOK {R} I_LOOK",
    "run left and jump twice": f"{L} I_RUN I_JUMP I_JUMP",
    "run left after jump twice": f"I_JUMP I_JUMP {L} I_RUN",
    "walk opposite right twice and turn right": f"{R} {R} I_WALK {R} {R} I_WALK {R}",
    "turn right after walk left": f"{L} I_WALK {R}",
    "run twice after look opposite left": f"{L} {L} I_LOOK I_RUN I_RUN",
    "jump thrice and run around right": f"I_JUMP I_JUMP I_JUMP {R} I_RUN {R} I_RUN {R} I_RUN {R} I_RUN",
    "look around left after turn opposite left thrice":
        " ".join([L] * 6) + f" {L} I_LOOK {L} I_LOOK {L} I_LOOK {L} I_LOOK",
    # (R WALK) x 4 x 3 first, since "after"; then L L JUMP
    "jump opposite left after walk around right thrice": " ".join([f"{R} I_WALK"] * 12 + [f"{L} {L} I_JUMP"]),
}

# Lines copied from the released files (brendenlake/SCAN; its fork aman313/SCAN where the index
# stores only that), keyed by (split, part); "all" is tasks.txt.
RELEASE_LINES = {
    ("all", None): [
        "IN: walk opposite right thrice after run opposite right OUT: I_TURN_RIGHT I_TURN_RIGHT I_RUN "
        "I_TURN_RIGHT I_TURN_RIGHT I_WALK I_TURN_RIGHT I_TURN_RIGHT I_WALK I_TURN_RIGHT I_TURN_RIGHT I_WALK",
        "IN: jump left twice after turn around right twice OUT: I_TURN_RIGHT I_TURN_RIGHT I_TURN_RIGHT "
        "I_TURN_RIGHT I_TURN_RIGHT I_TURN_RIGHT I_TURN_RIGHT I_TURN_RIGHT I_TURN_LEFT I_JUMP I_TURN_LEFT I_JUMP",
        "IN: look opposite left after run OUT: I_RUN I_TURN_LEFT I_TURN_LEFT I_LOOK",
        "IN: walk left twice after turn opposite left thrice OUT: I_TURN_LEFT I_TURN_LEFT I_TURN_LEFT "
        "I_TURN_LEFT I_TURN_LEFT I_TURN_LEFT I_TURN_LEFT I_WALK I_TURN_LEFT I_WALK",
        "IN: turn around right after jump OUT: I_JUMP I_TURN_RIGHT I_TURN_RIGHT I_TURN_RIGHT I_TURN_RIGHT",
    ],
    ("addprim_turn_left", "test"): [
        "IN: turn left after jump twice OUT: I_JUMP I_JUMP I_TURN_LEFT",
        "IN: turn left twice OUT: I_TURN_LEFT I_TURN_LEFT",
        "IN: walk left after turn left OUT: I_TURN_LEFT I_TURN_LEFT I_WALK",
        "IN: turn left and turn opposite left OUT: I_TURN_LEFT I_TURN_LEFT I_TURN_LEFT",
    ],
    ("addprim_turn_left", "train"): [
        "IN: turn left OUT: I_TURN_LEFT",
        "IN: turn around left after walk left OUT: I_TURN_LEFT I_WALK I_TURN_LEFT I_TURN_LEFT I_TURN_LEFT "
        "I_TURN_LEFT",
        "IN: look after turn opposite right twice OUT: I_TURN_RIGHT I_TURN_RIGHT I_TURN_RIGHT I_TURN_RIGHT I_LOOK",
    ],
    ("length", "train"): [
        "IN: turn opposite left after turn left OUT: I_TURN_LEFT I_TURN_LEFT I_TURN_LEFT",
        "IN: jump right after turn left OUT: I_TURN_LEFT I_TURN_RIGHT I_JUMP",
    ],
    ("length", "test"): [
        "IN: run around left twice and run around right OUT: I_TURN_LEFT I_RUN I_TURN_LEFT I_RUN I_TURN_LEFT "
        "I_RUN I_TURN_LEFT I_RUN I_TURN_LEFT I_RUN I_TURN_LEFT I_RUN I_TURN_LEFT I_RUN I_TURN_LEFT I_RUN "
        "I_TURN_RIGHT I_RUN I_TURN_RIGHT I_RUN I_TURN_RIGHT I_RUN I_TURN_RIGHT I_RUN",
    ],
    ("addprim_jump", "test"): [
        "IN: turn left after jump twice OUT: I_JUMP I_JUMP I_TURN_LEFT",
        "IN: run right after jump OUT: I_JUMP I_TURN_RIGHT I_RUN",
        "IN: jump and jump opposite left OUT: I_JUMP I_TURN_LEFT I_TURN_LEFT I_JUMP",
    ],
    ("addprim_jump", "train"): [
        "IN: jump OUT: I_JUMP",
        "IN: run after run left OUT: I_TURN_LEFT I_RUN I_RUN",
        "IN: turn opposite left after look twice OUT: I_LOOK I_LOOK I_TURN_LEFT I_TURN_LEFT",
    ],
}


@pytest.fixture(scope="module")
def commands():
    return dict(scan.all_commands())


@pytest.fixture(scope="module")
def splits():
    return {name: scan.make_split(name, seed=0) for name in scan.SPLITS}


def pairs(df):
    return list(zip(df["command"], df["actions"]))


def test_every_command_once(commands):
    assert len(scan.all_commands()) == 20910 == len(commands)
    assert all(isinstance(a, str) and a for a in commands.values())


@pytest.mark.parametrize("command", sorted(HAND_DERIVED))
def test_actions_match_hand_derived(commands, command):
    assert commands[command] == HAND_DERIVED[command]


@pytest.mark.parametrize("key", list(RELEASE_LINES), ids=lambda k: "-".join(filter(None, k)))
def test_lines_of_the_release_are_in_the_same_split(commands, splits, key):
    name, part = key
    target = set(commands.items()) if name == "all" else set(pairs(splits[name][part]))
    for line in RELEASE_LINES[key]:
        assert scan.parse_line(line) in target, line


@pytest.mark.parametrize("name", scan.SPLITS)
def test_split_sizes_match_the_release(splits, name):
    split = splits[name]
    assert (len(split["train"]), len(split["test"])) == RELEASED_SIZES[name]
    assert list(split["train"].columns) == ["command", "actions"]
    assert all(isinstance(c, str) for c in split["test"]["command"])


@pytest.mark.parametrize("name", scan.SPLITS)
def test_train_and_test_commands_are_disjoint(splits, name):
    assert not set(splits[name]["train"]["command"]) & set(splits[name]["test"]["command"])


def test_length_split(splits):
    train, test = splits["length"]["train"], splits["length"]["test"]
    train_len = train["actions"].str.split().str.len()
    test_len = test["actions"].str.split().str.len()
    assert train_len.max() == 22 and test_len.min() == 24 and test_len.max() == 48
    assert len(set(train["command"]) | set(test["command"])) == 20910


def test_simple_split_covers_everything_once(splits, commands):
    split = splits["simple"]
    both = pairs(split["train"]) + pairs(split["test"])
    assert len(both) == len(set(both)) == 20910 and set(both) == set(commands.items())


def test_simple_split_depends_on_the_seed_only():
    a, b, c = scan.make_split("simple", 7), scan.make_split("simple", 7), scan.make_split("simple", 8)
    assert a["test"].equals(b["test"]) and a["train"].equals(b["train"])
    assert set(a["test"]["command"]) != set(c["test"]["command"])
    assert len(c["test"]) == 4182


def test_other_splits_membership_does_not_depend_on_the_seed():
    a, b = scan.make_split("length", 0), scan.make_split("length", 1)
    assert set(a["test"]["command"]) == set(b["test"]["command"])


def test_add_jump_split(splits, commands):
    train, test = splits["addprim_jump"]["train"], splits["addprim_jump"]["test"]
    with_jump = {c for c in commands if "jump" in c.split()}
    assert len(with_jump) == 7707
    assert set(test["command"]) == with_jump - {"jump"} and test["command"].is_unique
    assert (train["command"] == "jump").sum() == 1467  # 10% of 14,670
    assert set(train["actions"][train["command"] == "jump"]) == {"I_JUMP"}
    others = train[train["command"] != "jump"]
    assert len(others) == 13203 and others["command"].is_unique
    assert not others["actions"].str.contains("I_JUMP").any()


def test_add_turn_left_split(splits, commands):
    train, test = splits["addprim_turn_left"]["train"], splits["addprim_turn_left"]["test"]
    assert (train["command"] == "turn left").sum() == 2189  # 10% of 21,890
    assert "turn left" not in set(test["command"])
    assert all("turn left" in c for c in test["command"])
    # commands that turn left without the phrase "turn left" are training commands
    train_commands = set(train["command"])
    for command in ("walk left", "turn opposite left", "turn around left twice", "jump left after run"):
        assert command in train_commands
    assert len(train_commands) == 20910 - 1208


def test_unknown_split_names_the_known_ones():
    with pytest.raises(ValueError, match="addprim_turn_left"):
        scan.make_split("addprim_walk", 0)


def test_reader_round_trip(tmp_path, splits):
    rows = splits["addprim_jump"]["test"].head(5)
    path = tmp_path / "tasks_test.txt"
    # CRLF line ends and a blank line, as in some copies of the release
    path.write_text(scan.to_official_text(rows).replace("\n", "\r\n") + "\r\n", encoding="utf-8", newline="")
    df = scan.read_official(path)
    assert pairs(df) == pairs(rows)


def test_reader_names_the_malformed_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("IN: walk OUT: I_WALK\nIN: jump OUT: I_JUMP\nIN: run I_RUN\n")
    with pytest.raises(scan.ScanFileError, match=r"bad\.txt, line 3"):
        scan.read_official(path)
    path.write_text("IN: walk OUT: I_WALK\nIN:  OUT: I_JUMP\n")
    with pytest.raises(scan.ScanFileError, match="line 2"):
        scan.read_official(path)


def test_reader_names_a_missing_file(tmp_path):
    with pytest.raises(scan.ScanFileError, match="nothere.txt"):
        scan.read_official(tmp_path / "nothere.txt")


def test_split_from_official_layouts(tmp_path, splits):
    split = {part: df.head(3) for part, df in splits["length"].items()}
    nested = tmp_path / "length_split"
    nested.mkdir()
    (nested / "tasks_train_length.txt").write_text(scan.to_official_text(split["train"]))
    (tmp_path / "tasks_test_length.txt").write_text(scan.to_official_text(split["test"]))
    read = scan.split_from_official(tmp_path, "length")
    assert pairs(read["train"]) == pairs(split["train"]) and pairs(read["test"]) == pairs(split["test"])
    with pytest.raises(scan.ScanFileError, match="tasks_train_simple.txt"):
        scan.split_from_official(tmp_path, "simple")
