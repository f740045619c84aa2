"""The Mathematics Dataset generator's own Python environment: DeepMind's generator needs sympy 1.5.1 and
numpy 1.23.5, which cannot live beside this project's, so rule mathematics_env builds a virtual environment
for it (see rules/mathematics.smk for the other ways to provide one)."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from .data.mathematics import KEY, MathematicsDataError
from .io import current_umask, write_json

# Interpreters a virtual environment for the generator can be made from (numpy 1.23.5: 3.8-3.11).
BASE_PYTHONS = ("python3.11", "python3.10", "python3.9", "python3.8", "python3")
SUPPORTED_PYTHON = ((3, 8), (3, 11))


def venv_python(venv: str | Path) -> Path:
    """The interpreter of a virtual environment."""
    return Path(venv) / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _python_version(python: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run([python, "-c", "import sys; print(*sys.version_info[:2])"], capture_output=True,
                             text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    major, minor = out.stdout.split()
    return int(major), int(minor)


def find_base_python(base_python: str | None = None) -> tuple[str, tuple[int, int]]:
    """An interpreter the generator's venv can be made from: ``base_python``, or the first of
    :data:`BASE_PYTHONS` on the PATH whose version is 3.8 to 3.11."""
    low, high = SUPPORTED_PYTHON
    tried = []
    for name in ([base_python] if base_python else BASE_PYTHONS):
        path = shutil.which(name) or (name if Path(name).is_file() else None)
        version = _python_version(path) if path else None
        tried.append(f"{name} ({'.'.join(map(str, version)) if version else 'not found'})")
        if version and low <= version <= high:
            return path, version
    raise MathematicsDataError(
        f"no Python {low[0]}.{low[1]} to {high[0]}.{high[1]} to build the Mathematics Dataset generator's "
        f"environment from (numpy 1.23.5 needs one); tried {', '.join(tried)}. Install one and name it in "
        f"{KEY}.base_python, or name an interpreter that has the generator (envs/mathematics-requirements.txt) "
        f"in {KEY}.python, or run with --use-conda (envs/mathematics.yaml)")


def _run(cmd: list[str], log, what: str) -> str:
    log.info("$ %s", " ".join(cmd))
    result = subprocess.run(cmd, capture_output=True, text=True)
    output = (result.stdout + result.stderr).strip()
    if output:
        log.info("%s", output)
    if result.returncode != 0:
        raise MathematicsDataError(f"{what} failed (exit {result.returncode}): {' '.join(cmd)}\n{output[-3000:]}")
    return result.stdout


def build_venv(requirements: str | Path, venv: str | Path, marker: str | Path, log,
               base_python: str | None = None) -> dict:
    """Build the generator's virtual environment at ``venv`` from ``requirements``, atomically.

    The environment is made in a temporary folder beside ``venv``, checked (the generator must
    import), and renamed into place; ``marker`` (JSON: interpreter, versions, installed packages) is
    written last, so its presence means a complete environment. Returns the marker's content.
    """
    requirements, venv = Path(requirements), Path(venv)
    if not requirements.is_file():
        raise MathematicsDataError(f"requirements file {requirements} not found")
    base, version = find_base_python(base_python)
    venv.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{venv.name}.", suffix=".tmp", dir=venv.parent))
    os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes it private; the environment is not
    try:
        _run([base, "-m", "venv", "--clear", str(tmp)], log, "creating the virtual environment")
        python = str(venv_python(tmp))
        # --no-compile: byte-compiling all of sympy took three quarters of the build (about 15 s); the
        # generator's import check below compiles the modules it uses, the rest are never imported
        _run([python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--no-compile", "-r",
              str(requirements)], log, f"installing {requirements}")
        _run([python, "-c", "import mathematics_dataset.modules.modules"], log, "importing the generator")
        frozen = _run([python, "-m", "pip", "freeze", "--disable-pip-version-check"], log, "pip freeze")
        if venv.exists():
            shutil.rmtree(venv)
        os.replace(tmp, venv)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    info = {"python": str(venv_python(venv)), "base_python": base, "python_version": ".".join(map(str, version)),
            "requirements": str(requirements),
            "requirements_sha256": hashlib.sha256(requirements.read_bytes()).hexdigest(),
            "packages": frozen.split()}
    write_json(info, marker)
    log.info("generator environment ready: %s (Python %s; %s)", venv, info["python_version"],
             ", ".join(info["packages"]))
    return info


def file_version(*paths: str | Path, length: int = 12) -> str:
    """Hash of files outside the library (the shard script, the requirements) for rerun triggers."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(Path(path).name.encode())
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()[:length]
