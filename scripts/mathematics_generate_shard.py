#!/usr/bin/env python3
"""Generate one shard of a Mathematics Dataset training level with DeepMind's generator.

Runs in the generator's own environment (``envs/mathematics-requirements.txt``: mathematics-dataset
1.0.1 with sympy 1.5.1 and numpy 1.23.5), so it imports only the standard library and the generator,
never modmask, torch or pandas::

    python scripts/mathematics_generate_shard.py --task comparison__sort --level easy \\
        --samples 2000 --seed 1234 --output sort_easy_0.jsonl

What it does is what the generator's ``generate_to_file.py --train_split`` does for one module of
train-easy / train-medium / train-hard, without its absl flags: the level's modules come from
``modules.train(entropy_fn)``, whose entropy function keeps the third of every module's training
entropy range that belongs to the level (``generate._make_entropy_fn(level, 3)``), and each sample
is drawn as ``generate.sample_from_module`` draws it: a question longer than
``generate_settings.MAX_QUESTION_LENGTH`` (160) or an answer longer than ``MAX_ANSWER_LENGTH`` (30)
characters is dropped and drawn again. The official release differs only in its (unrecorded) random
state.

Determinism: Python's ``random`` and numpy's global generator are seeded with ``--seed``, and the
string hash seed is fixed (sympy iterates over sets, whose order depends on it): a process started
without ``PYTHONHASHSEED=0`` runs itself again with it. The same arguments give a byte-identical file.

Output: one JSON object per line, ``{"answer": ..., "question": ...}``, written to a temporary file
beside ``--output`` and renamed into place, so an interrupted run leaves no partial shard.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time

HASH_SEED = "0"
# Difficulty levels and their index among the generator's three training levels.
LEVELS = {"easy": 0, "medium": 1, "hard": 2}
NUM_LEVELS = len(LEVELS)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", required=True, help="module name, e.g. comparison__sort")
    parser.add_argument("--level", required=True, choices=sorted(LEVELS))
    parser.add_argument("--samples", required=True, type=int, help="number of (question, answer) pairs")
    parser.add_argument("--seed", required=True, type=int, help="seed of random and numpy (0 .. 2**32 - 1)")
    parser.add_argument("--output", required=True, help="the JSONL file to write")
    args = parser.parse_args(argv)
    if args.samples < 0:
        parser.error(f"--samples must be >= 0, got {args.samples}")
    if not 0 <= args.seed < 2 ** 32:
        parser.error(f"--seed must be in 0 .. 2**32 - 1, got {args.seed}")
    return args


def make_entropy_fn(level: int, num_levels: int):
    """The generator's ``generate._make_entropy_fn``: the level's share of an entropy range."""
    lower = level / num_levels
    upper = (level + 1) / num_levels

    def modify_entropy(range_):
        assert len(range_) == 2
        length = range_[1] - range_[0]
        return (range_[0] + lower * length, range_[0] + upper * length)

    return modify_entropy


def flatten(tree: dict, prefix: str | None = None) -> dict:
    """``{"comparison": {"sort": f}}`` -> ``{"comparison__sort": f}`` (the generator's module names)."""
    flat = {}
    for key, value in tree.items():
        name = key if prefix is None else f"{prefix}__{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name))
        else:
            flat[name] = value
    return flat


def level_modules(level: str) -> dict:
    """Every training module of one level, by name, as ``generate.init_modules(train_split=True)``."""
    from mathematics_dataset.modules import modules

    return flatten(modules.train(make_entropy_fn(LEVELS[level], NUM_LEVELS)))


def sample(module, max_question: int, max_answer: int) -> tuple[str, str, int]:
    """One (question, answer) as ``generate.sample_from_module`` draws it, and how many draws were
    dropped (over-long, or failed inside the generator)."""
    dropped = 0
    while True:
        try:
            problem = module()
        except AssertionError:
            # The generator's samplers occasionally hit one of their own internal assertions (seen:
            # polynomials.integers_with_sum in algebra__linear_1d); draw again. The random streams
            # move on deterministically, so the shard stays reproducible.
            dropped += 1
            continue
        question = str(problem.question)
        if len(question) > max_question:
            dropped += 1
            continue
        answer = str(problem.answer)
        if len(answer) > max_answer:
            dropped += 1
            continue
        return question, answer, dropped


def current_umask() -> int:
    """The umask, read from /proc where it can be (this script cannot import modmask.io's twin)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(lines, path: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.writelines(lines)
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp's 0600 would keep the shard from the group
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def log(message: str) -> None:
    print(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    if os.environ.get("PYTHONHASHSEED") != HASH_SEED:
        # The hash seed is read at interpreter start: run again with the fixed one.
        env = {**os.environ, "PYTHONHASHSEED": HASH_SEED}
        os.execve(sys.executable, [sys.executable, os.path.abspath(__file__), *sys.argv[1:]], env)

    import numpy as np
    import sympy
    from mathematics_dataset import generate_settings

    start = time.time()
    modules = level_modules(args.level)
    if args.task not in modules:
        log(f"error: unknown task {args.task!r}; the generator's modules are: {', '.join(sorted(modules))}")
        return 2
    try:
        from importlib.metadata import version
        generator = version("mathematics-dataset")
    except Exception:  # noqa: BLE001 - only informative
        generator = "?"
    log(f"mathematics-dataset {generator}, sympy {sympy.__version__}, numpy {np.__version__}, "
        f"Python {sys.version.split()[0]}, PYTHONHASHSEED={os.environ['PYTHONHASHSEED']}")
    log(f"{args.task} train-{args.level}: {args.samples} samples, seed {args.seed} -> {args.output}")

    random.seed(args.seed)
    np.random.seed(args.seed)
    module = modules[args.task]
    lines, dropped = [], 0
    every = max(1, args.samples // 10)
    for index in range(args.samples):
        question, answer, extra = sample(module, generate_settings.MAX_QUESTION_LENGTH,
                                         generate_settings.MAX_ANSWER_LENGTH)
        dropped += extra
        lines.append(json.dumps({"question": question, "answer": answer}, sort_keys=True) + "\n")
        if (index + 1) % every == 0:
            log(f"{index + 1}/{args.samples} samples ({time.time() - start:.1f} s)")
    write_atomic(lines, args.output)
    log(f"wrote {len(lines)} samples in {time.time() - start:.1f} s; dropped {dropped} draws (over-long "
        f"questions/answers, as the generator does, or failed inside the generator)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
