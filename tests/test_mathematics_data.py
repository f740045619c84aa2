"""The Mathematics Dataset's data stage: de-duplication and held-out test sets, the official release's
reader (folder and tarball), the shard reader, error messages, the character vocabulary, and (slow)
the workflow building the generator's environment and generating every level at smoke scale."""
from __future__ import annotations

import ast
import json
import logging
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pandas as pd
import pytest
import yaml

from local_data import copy_workflow
from modmask.config import ConfigError, load_config, validate_config
from modmask import generator_env
from modmask.data import mathematics as math
from modmask.data.vocab import SPECIALS, UNK_ID, Vocabulary

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "config"
SHARD_SCRIPT = REPO / "scripts" / "mathematics_generate_shard.py"
LOG = logging.getLogger("test_mathematics_data")
TASK = "comparison__sort"


def frame(pairs) -> pd.DataFrame:
    return pd.DataFrame(pairs, columns=["question", "answer"], dtype=object)


def fake_levels(n: int = 40, overlap: int = 5) -> dict[str, pd.DataFrame]:
    """Three levels of ``n`` rows each; every level repeats some of its own questions and the first
    ``overlap`` questions of the level before it (with other answers)."""
    levels = {}
    for i, level in enumerate(math.LEVELS):
        pairs = [(f"Sort {level} {k}.", f"{k}") for k in range(n - overlap - 2)]
        pairs += pairs[:2]  # repeated within the level
        pairs += [(f"Sort {math.LEVELS[i - 1]} {k}.", f"other {k}") for k in range(overlap)] if i else \
            [(f"Sort easy extra {k}.", "x") for k in range(overlap)]
        levels[level] = frame(pairs)
    return levels


def test_dedup_keeps_every_question_once_across_levels_and_parts():
    train, test, stats = math.split_task(fake_levels(), test_per_level=6, seed=0, task=TASK)
    both = pd.concat([train, test])
    assert not both["question"].duplicated().any()
    # the first occurrence wins: "Sort easy 0." stays an easy question with its easy answer
    row = both[both["question"] == "Sort easy 0."]
    assert list(row["level"]) == ["easy"] and list(row["answer"]) == ["0"]
    assert stats["easy"] == {"read": 40, "duplicates": 2, "test": 6, "train": 32}
    assert stats["medium"]["duplicates"] == 2 + 5 and stats["hard"]["duplicates"] == 7
    assert list(train.columns) == list(math.COLUMNS) and list(test.columns) == list(math.COLUMNS)
    assert all(isinstance(v, str) for v in both.to_numpy().ravel())


def test_each_level_holds_out_its_test_size():
    train, test, stats = math.split_task(fake_levels(), test_per_level=10, seed=3, task=TASK)
    assert test["level"].value_counts().to_dict() == {level: 10 for level in math.LEVELS}
    for level in math.LEVELS:
        assert (train["level"] == level).sum() == stats[level]["read"] - stats[level]["duplicates"] - 10
    assert list(dict.fromkeys(train["level"])) == list(math.LEVELS)  # levels in order


def test_same_seed_same_tables_other_seed_other_test_set():
    first = math.split_task(fake_levels(), 8, seed=1, task=TASK)
    again = math.split_task(fake_levels(), 8, seed=1, task=TASK)
    other = math.split_task(fake_levels(), 8, seed=2, task=TASK)
    pd.testing.assert_frame_equal(first[0], again[0])
    pd.testing.assert_frame_equal(first[1], again[1])
    assert set(first[1]["question"]) != set(other[1]["question"])


def test_too_few_distinct_questions_names_the_level_and_keys():
    with pytest.raises(math.MathematicsDataError, match=r"level easy: 38 distinct.*samples_per_level"):
        math.split_task(fake_levels(), test_per_level=38, seed=0, task=TASK)


def test_shard_sizes_and_seeds():
    assert math.shard_sizes(10, 3) == [4, 3, 3]
    assert sum(math.shard_sizes(666666, 20)) == 666666
    seeds = {math.shard_seed(0, t, level, s) for t in math.TASKS for level in math.LEVELS for s in range(4)}
    assert len(seeds) == len(math.TASKS) * 3 * 4 and all(0 <= s < 2 ** 32 for s in seeds)
    assert math.shard_seed(0, TASK, "easy", 0) == math.shard_seed(0, TASK, "easy", 0)
    assert math.shard_settings({"samples_per_level": 10, "shards": 3, "seed": 5}, TASK, "hard", "2") == \
        {"samples": 3, "seed": math.shard_seed(5, TASK, "hard", 2)}
    with pytest.raises(math.MathematicsDataError, match="shards"):
        math.check_settings({"samples_per_level": 2, "shards": 3, "test_per_level": 1, "seed": 0})


# -- the official release ---------------------------------------------------------------------

def write_release(root: Path, tasks=(TASK,), n: int = 30) -> Path:
    """A tiny copy of mathematics_dataset-v1.0: train-<level>/<task>.txt, alternating lines."""
    top = root / math.ARCHIVE_NAME
    for level in math.LEVELS:
        for task in tasks:
            path = top / f"train-{level}" / f"{task}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(f"Sort {level} {k}, {k + 1}.\n{k}, {k + 1}\n" for k in range(n)))
    (top / "interpolate").mkdir()
    (top / "interpolate" / f"{tasks[0]}.txt").write_text("Sort 1, 2.\n1, 2\n")
    return top


def test_release_folder_and_tarball_give_the_same_tables(tmp_path):
    top = write_release(tmp_path / "release")
    tarball = tmp_path / f"{math.ARCHIVE_NAME}.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(top, arcname=math.ARCHIVE_NAME)
    tables = {}
    for name, archive in (("top", top), ("parent", tmp_path / "release"), ("tar", tarball)):
        data = {"archive": str(archive), "test_per_level": 5, "seed": 0}
        train, test = tmp_path / name / "train.parquet", tmp_path / name / "test.parquet"
        stats = math.write_task(TASK, data, None, train, test, LOG)
        assert stats["hard"] == {"read": 30, "duplicates": 0, "test": 5, "train": 25}
        tables[name] = (pd.read_parquet(train), pd.read_parquet(test))
    for name in ("parent", "tar"):
        for a, b in zip(tables["top"], tables[name]):
            pd.testing.assert_frame_equal(a, b)
    both = pd.concat(tables["tar"])
    assert len(both) == 90 and (both["question"].str.split().str[1] == both["level"]).all()
    row = both[both["question"] == "Sort medium 3, 4."].iloc[0]
    assert (row["answer"], row["level"]) == ("3, 4", "medium")
    assert math.task_inputs({"archive": str(tarball)}, TASK, "x") == {"archive": [str(tarball)]}
    files = math.task_inputs({"archive": str(top)}, TASK, "x")["archive"]
    assert files == [str(top / f"train-{level}" / f"{TASK}.txt") for level in math.LEVELS]


def test_missing_release_file_names_the_file_and_the_key(tmp_path):
    top = write_release(tmp_path, tasks=("algebra__linear_1d",))
    with pytest.raises(math.MathematicsDataError) as error:
        math.archive_files(top, TASK)
    assert f"train-easy/{TASK}.txt" in str(error.value) and "mathematics.data.archive" in str(error.value)
    with pytest.raises(math.MathematicsDataError, match=r"nowhere.*mathematics\.data\.archive"):
        math.archive_files(tmp_path / "nowhere", TASK)
    tarball = tmp_path / "release.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(top, arcname=math.ARCHIVE_NAME)
    with pytest.raises(math.MathematicsDataError) as error:
        math.read_archive(tarball, TASK)
    assert f"train-medium/{TASK}.txt" in str(error.value) and "mathematics.data.archive" in str(error.value)


def test_malformed_release_file_is_named(tmp_path):
    top = write_release(tmp_path)
    bad = top / "train-medium" / f"{TASK}.txt"
    bad.write_text("Sort 1, 2.\n1, 2\nSort 3, 4.\n")
    with pytest.raises(math.MathematicsDataError, match=rf"{bad}.*odd number of lines"):
        math.read_archive(top, TASK)


def test_unknown_task_lists_the_valid_ones(tmp_path):
    with pytest.raises(math.MathematicsDataError) as error:
        math.task_inputs({"shards": 1}, "comparison__sorting", "x")
    assert "comparison__sorting" in str(error.value) and all(t in str(error.value) for t in math.TASKS)
    config = load_config(CONFIG / "config.yaml")
    config["mathematics"]["tasks"] = ["comparison__sorting"]
    with pytest.raises(ConfigError, match=r"mathematics\.tasks\.0.*comparison__sort"):
        validate_config(config)


# -- shards -----------------------------------------------------------------------------------

def write_shard(path: Path, pairs) -> Path:
    path.write_text("".join(json.dumps({"question": q, "answer": a}, sort_keys=True) + "\n" for q, a in pairs))
    return path


@pytest.mark.parametrize("content, words", [
    ('{"question": "Sort 1, 2.", "answer": "1, 2"}\nnot json\n', "line 2: not a JSON line"),
    ('{"question": "Sort 1, 2.", "solution": "1, 2"}\n', "line 1: expected"),
    ('{"question": "Sort 1, 2.", "answer": 12}\n', "line 1: expected"),
    ('{"question": "", "answer": "1"}\n', "line 1: empty question"),
])
def test_bad_shard_is_named(tmp_path, content, words):
    shard = tmp_path / "easy_0.jsonl"
    shard.write_text(content)
    with pytest.raises(math.MathematicsDataError) as error:
        math.read_shard(shard)
    assert f"shard {shard}" in str(error.value) and words in str(error.value)


def test_shard_of_the_wrong_size_is_named(tmp_path):
    shard = write_shard(tmp_path / "hard_1.jsonl", [("Sort 1, 2.", "1, 2")] * 3)
    with pytest.raises(math.MathematicsDataError, match=rf"shard {shard} has 3 samples, expected 4"):
        math.read_shard(shard, expected=4)
    with pytest.raises(math.MathematicsDataError, match="shard not found"):
        math.read_shard(tmp_path / "missing.jsonl")


def test_tables_from_shards(tmp_path):
    data = {"samples_per_level": 7, "shards": 2, "test_per_level": 2, "seed": 0}
    sources = {}
    for level in math.LEVELS:
        sizes = math.shard_sizes(7, 2)
        sources[level] = [write_shard(tmp_path / f"{level}_{s}.jsonl",
                                      [(f"Sort {level} {s} {k}.", f"{k}") for k in range(n)])
                          for s, n in enumerate(sizes)]
    math.write_task(TASK, data, sources, tmp_path / "train.parquet", tmp_path / "test.parquet", LOG)
    train, test = pd.read_parquet(tmp_path / "train.parquet"), pd.read_parquet(tmp_path / "test.parquet")
    assert len(train) == 3 * 5 and len(test) == 3 * 2
    questions = set(train["question"]) | set(test["question"])
    assert questions == {f"Sort {level} {s} {k}." for level in math.LEVELS for s, n in enumerate([4, 3])
                         for k in range(n)}
    with pytest.raises(math.MathematicsDataError, match="level easy: 1 shard files, expected 2"):
        math.read_shards({**sources, "easy": sources["easy"][:1]}, data)


# -- vocabulary -------------------------------------------------------------------------------

def test_character_vocabulary_round_trip():
    vocab = math.char_vocabulary()
    assert len(vocab) == len(SPECIALS) + 95 and vocab.level == "char"
    assert vocab == Vocabulary.build([math.CHARS], level="char")  # Vocabulary.build's ids
    texts = ["Sort -2, 13, 15 in descending order.", "-12*k**3 - 40", "Solve 0 = -4*t + 3*t + 7 for t."]
    for text in texts:
        ids = vocab.encode(text, eos=True, strict=True)
        assert UNK_ID not in ids and vocab.decode(ids) == text
    batch, lengths = vocab.encode_batch(texts, sos=True, eos=True, batch_first=True)
    assert vocab.decode_batch(batch, batch_first=True) == texts and lengths.tolist() == [len(t) + 2 for t in texts]
    assert Vocabulary.from_dict(json.loads(json.dumps(vocab.to_dict()))) == vocab
    with pytest.raises(math.MathematicsDataError, match=r"\['é'\].*question"):
        math.char_vocabulary(frame([("Résumé 1 + 1?", "2")]))


# -- environment and config -------------------------------------------------------------------

def test_conda_env_and_requirements_pin_the_same_packages():
    pins = [line.strip() for line in (REPO / "envs" / "mathematics-requirements.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    env = yaml.safe_load((REPO / "envs" / "mathematics.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert sorted(pins) == sorted(pip) and all("==" in p for p in pins)
    assert "mathematics-dataset==1.0.1" in pins and "sympy==1.5.1" in pins and "numpy==1.23.5" in pins


def test_generator_script_imports_only_the_standard_library_and_the_generator():
    tree = ast.parse(SHARD_SCRIPT.read_text())
    modules = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
               for alias in node.names}
    modules |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert modules - set(sys.stdlib_module_names) == {"numpy", "sympy", "mathematics_dataset"}


def test_missing_base_python_says_what_to_do():
    with pytest.raises(math.MathematicsDataError, match=r"no-such-python.*mathematics\.data\.base_python.*"
                                                        r"mathematics\.data\.python.*--use-conda"):
        generator_env.find_base_python("no-such-python3.11")


@pytest.mark.parametrize("scale, sizes, tasks", [
    ("config", (666666, 10000, 20), list(math.TASKS)), ("quick", (10000, 1000, 2), list(math.TASKS)),
    ("smoke", (300, 50, 1), ["comparison__sort"])])  # smoke: one task runs every rule
def test_config_blocks(scale, sizes, tasks):
    files = [CONFIG / "config.yaml"] + ([CONFIG / f"{scale}.yaml"] if scale != "config" else [])
    block = load_config(*files)["mathematics"]
    assert block["tasks"] == tasks
    data = block["data"]
    assert (data["samples_per_level"], data["test_per_level"], data["shards"]) == sizes
    assert data["archive"] is None and data["python"] is None
    math.check_settings(data)


def test_schema_checks_the_mathematics_block_strictly():
    config = load_config(CONFIG / "config.yaml")
    validate_config(config)
    config["mathematics"]["task_settings"] = None  # a smaller scale drops the per-task table
    validate_config(config)
    config["mathematics"]["task_settings"] = {"algebra__linear_1d": {"mask": {"warmup": -1}}}
    with pytest.raises(ConfigError, match=r"warmup"):
        validate_config(config)
    config["mathematics"]["task_settings"] = {"linear_1d": {}}
    with pytest.raises(ConfigError, match=r"linear_1d"):
        validate_config(config)
    config["mathematics"]["task_settings"] = None
    config["mathematics"]["architecture"] = {"model": "transformer"}
    with pytest.raises(ConfigError, match=r"'architecture' was unexpected"):
        validate_config(config)
    del config["mathematics"]["architecture"]
    config["mathematics"]["data"]["sample_per_level"] = 5
    with pytest.raises(ConfigError, match=r"mathematics\.data.*'sample_per_level' was unexpected"):
        validate_config(config)


# -- the workflow (slow: builds the generator's environment with pip) ------------------------

WORKFLOW_FILES = ["Snakefile", "rules", "scripts", "config", "envs", "modmask"]
WORKFLOW_TASKS = ["comparison__sort", "arithmetic__add_or_sub"]


def snakemake(workdir: Path, *args: str, extra: dict | None = None, check: bool = True):
    """Run Snakemake at smoke scale; ``extra``: config overrides on top of config/smoke.yaml."""
    configs = ["config/smoke.yaml"]
    if extra is not None:
        path = workdir / f"extra_{math.derive_seed(json.dumps(extra, sort_keys=True))}.yaml"
        path.write_text(yaml.safe_dump(extra))
        configs.append(path.name)
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", *args, "--configfile", *configs]
    result = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=1800)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    """A copy of the workflow that built the generator's venv and the smoke tables of WORKFLOW_TASKS."""
    workdir = copy_workflow(tmp_path_factory.mktemp("mathematics"), WORKFLOW_FILES)
    snakemake(workdir, "mathematics_data_all", extra={"mathematics": {"tasks": WORKFLOW_TASKS}})
    return workdir


@pytest.mark.slow
def test_workflow_builds_the_env_and_writes_the_tables(generated):
    config = load_config(CONFIG / "config.yaml", CONFIG / "smoke.yaml")["mathematics"]["data"]
    marker = json.loads((generated / ".snakemake/venvs/mathematics.json").read_text())
    assert "mathematics-dataset==1.0.1" in marker["packages"] and "sympy==1.5.1" in marker["packages"]
    assert (generated / marker["python"]).exists()
    assert not list((generated / ".snakemake/venvs").glob(".*.tmp"))  # the temporary build was renamed
    for task in WORKFLOW_TASKS:
        folder = generated / "results/smoke/data/mathematics" / task
        train, test = pd.read_parquet(folder / "train.parquet"), pd.read_parquet(folder / "test.parquet")
        for df in (train, test):
            assert list(df.columns) == ["question", "answer", "level"]
            assert all(pd.api.types.is_string_dtype(df[c]) for c in df.columns)
        assert test["level"].value_counts().to_dict() == {lv: config["test_per_level"] for lv in math.LEVELS}
        assert set(train["level"]) == set(math.LEVELS)
        both = pd.concat([train, test])
        assert not both["question"].duplicated().any()
        assert len(both) <= 3 * config["samples_per_level"] and len(both) > 2.5 * config["samples_per_level"]
        math.char_vocabulary(train, test)
        shards = sorted(p.name for p in (folder / "shards").iterdir())
        assert shards == [f"{level}_0.jsonl" for level in sorted(math.LEVELS)]
        assert len(math.read_shard(folder / "shards/hard_0.jsonl", config["samples_per_level"])) == 300


@pytest.mark.slow
def test_same_seed_gives_byte_identical_shards(generated, tmp_path):
    """The shard script run again with the workflow's seed, with and without the fixed hash seed set,
    writes the workflow's shard byte for byte."""
    python = generated / ".snakemake/venvs/mathematics/bin/python"
    config = load_config(CONFIG / "config.yaml", CONFIG / "smoke.yaml")["mathematics"]["data"]
    expected = (generated / f"results/smoke/data/mathematics/{TASK}/shards/hard_0.jsonl").read_bytes()
    seed = math.shard_seed(config["seed"], TASK, "hard", 0)
    for name, hash_seed in (("again", "0"), ("unset", None)):
        env = {k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"}
        if hash_seed is not None:
            env["PYTHONHASHSEED"] = hash_seed
        out = tmp_path / f"{name}.jsonl"
        subprocess.run([str(python), str(SHARD_SCRIPT), "--task", TASK, "--level", "hard", "--samples",
                        str(config["samples_per_level"]), "--seed", str(seed), "--output", str(out)],
                       check=True, env=env, capture_output=True, timeout=300)
        assert out.read_bytes() == expected
    other = tmp_path / "other.jsonl"
    subprocess.run([str(python), str(SHARD_SCRIPT), "--task", TASK, "--level", "hard", "--samples", "300",
                    "--seed", str(seed + 1), "--output", str(other)], check=True, capture_output=True, timeout=300)
    assert other.read_bytes() != expected


@pytest.mark.slow
def test_second_run_does_nothing_and_archive_needs_no_generator(generated, tmp_path):
    extra = {"mathematics": {"tasks": WORKFLOW_TASKS}}
    result = snakemake(generated, "mathematics_data_all", "--dry-run", extra=extra)
    assert "Nothing to be done" in result.stdout + result.stderr
    top = write_release(tmp_path / "release", tasks=WORKFLOW_TASKS, n=80)
    archive = {"results": "results/archive", "mathematics": {"tasks": WORKFLOW_TASKS, "data": {"archive": str(top)}}}
    result = snakemake(generated, "mathematics_data_all", extra=archive)
    log = result.stdout + result.stderr
    assert "mathematics_env" not in log and "mathematics_shard" not in log
    train = pd.read_parquet(generated / f"results/archive/data/mathematics/{TASK}/train.parquet")
    assert len(train) == 3 * (80 - 50) and train["question"].str.startswith("Sort ").all()


@pytest.mark.slow
def test_missing_archive_stops_with_the_file_and_key_named(generated, tmp_path):
    top = write_release(tmp_path / "release", tasks=("algebra__linear_1d",))
    archive = {"mathematics": {"tasks": [TASK], "data": {"archive": str(top)}}}
    result = snakemake(generated, "mathematics_data_all", "--dry-run", extra=archive, check=False)
    log = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"train-easy/{TASK}.txt" in log and "mathematics.data.archive" in log
