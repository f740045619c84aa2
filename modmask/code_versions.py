"""Code versions of workflow steps, computed from what their code imports.

A rule's ``code`` param is the hash of the sources of its script and of every ``modmask`` module the
script imports, directly or through other modules (the import closure). Editing a module then re-runs
exactly the rules whose code imports it; no list of module names is kept by hand.

The closure is found by reading the sources (``ast``), not by importing them: nothing runs, and an
import inside a function counts as much as one at the top. Imports by computed name
(``importlib.import_module``) cannot be read this way; the caller names those modules (for example
the experiment module that ``experiments.get`` loads for a rule's ``experiment`` wildcard).
"""
from __future__ import annotations

import ast
import hashlib
from functools import lru_cache
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent
PACKAGE = PACKAGE_ROOT.name
# A package ``__init__`` may export names that it loads on first access; it lists them in a dict
# literal of this name ({exported name: submodule}), so that the closure can follow them.
LAZY_EXPORTS = "LAZY_EXPORTS"
# A module that reads other source files (C code it compiles) lists them, relative to its folder, in a
# tuple literal of this name; they belong to the code version of whatever imports the module.
CODE_FILES = "CODE_FILES"


@lru_cache(maxsize=None)
def module_file(name: str) -> Path | None:
    """The source file of a dotted ``modmask`` module name, or None (not ours, or not a module)."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = PACKAGE_ROOT.joinpath(*parts[1:])
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def module_name(path: Path) -> str | None:
    """The dotted name of a file inside the package (``modmask.data.scan``), or None outside it."""
    try:
        relative = Path(path).resolve().relative_to(PACKAGE_ROOT)
    except ValueError:
        return None
    parts = [PACKAGE, *relative.with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _parse(path: Path) -> ast.Module:
    stat = path.stat()
    return _parse_version(path, stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=None)
def _parse_version(path: Path, mtime_ns: int, size: int) -> ast.Module:
    """Parsed once per version of a file: a rule's code version is computed for every job."""
    try:
        return ast.parse(path.read_text(), filename=str(path))
    except SyntaxError as error:
        raise SyntaxError(f"{path}: cannot compute its code version: {error}") from error


def _lazy_exports(init: Path) -> dict[str, str]:
    for node in _parse(init).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == LAZY_EXPORTS for t in node.targets):
            return ast.literal_eval(node.value)
    return {}


def imported_names(path: Path) -> set[str]:
    """Dotted names a source file imports (``from a import b`` gives ``a`` and ``a.b``), relative
    imports resolved against the file's place in the package."""
    stat = Path(path).stat()
    return set(_imported_names(Path(path), stat.st_mtime_ns, stat.st_size))


@lru_cache(maxsize=None)
def _imported_names(path: Path, mtime_ns: int, size: int) -> frozenset[str]:
    """Read once per version of a file: Snakemake asks for a code version for every job of a DAG."""
    own = module_name(path)
    is_package = path.name == "__init__.py"
    names: set[str] = set()
    for node in ast.walk(_parse(path)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                if own is None:
                    continue  # a relative import outside the package is not ours
                anchor = own.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return frozenset(names)


def import_closure(*sources: str | Path) -> list[Path]:
    """Every package file that ``sources`` (script paths, or dotted module names such as
    ``"modmask.experiments.addmul"`` or ``"experiments.addmul"``) run when imported, sorted; the
    script files themselves are included. Importing a submodule runs its packages' ``__init__``."""
    todo: list[Path] = []
    for source in sources:
        is_script = str(source).endswith(".py")
        path = Path(source) if is_script else module_file(_qualified(str(source)))
        if path is None or not path.is_file():
            raise FileNotFoundError(f"code version: no script or {PACKAGE} module {source!r} "
                                    f"(looked under {PACKAGE_ROOT} for modules)")
        todo.extend([path.resolve()] if is_script else _files_run_by_importing(_qualified(str(source))))
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        stat = path.stat()
        todo.extend(_files_imported_by(path, stat.st_mtime_ns, stat.st_size))
    return sorted(seen)


@lru_cache(maxsize=None)
def _files_imported_by(path: Path, mtime_ns: int, size: int) -> tuple[Path, ...]:
    """The package files one version of a file runs by its imports (not following them further), and the
    other sources it names in ``CODE_FILES``."""
    if path.suffix != ".py":
        return ()
    return tuple(dict.fromkeys([*(f for name in imported_names(path) for f in _files_run_by_importing(name)),
                                *_code_files(path)]))


def _code_files(path: Path) -> list[Path]:
    for node in _parse(path).body:
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Tuple)
                and any(getattr(t, "id", None) == CODE_FILES for t in node.targets)):
            return [(path.parent / name).resolve() for name in ast.literal_eval(node.value)]
    return []


def _qualified(name: str) -> str:
    return name if name == PACKAGE or name.startswith(PACKAGE + ".") else f"{PACKAGE}.{name}"


def _files_run_by_importing(name: str) -> list[Path]:
    """``import a.b.c`` runs ``a/__init__``, ``a/b/__init__`` and ``a/b/c``; ``from a import x``
    where ``x`` is a lazy export of ``a`` also runs the module that defines ``x``."""
    parts = name.split(".")
    files = [f for i in range(1, len(parts) + 1) if (f := module_file(".".join(parts[:i]))) is not None]
    if len(parts) > 1 and module_file(name) is None:
        parent = module_file(".".join(parts[:-1]))
        if parent is not None and parent.name == "__init__.py":
            target = _lazy_exports(parent).get(parts[-1])
            if target is not None:
                files += _files_run_by_importing(f"{'.'.join(parts[:-1])}.{target}")
    return files


def code_version(*sources: str | Path, length: int = 12) -> str:
    """Hash of the sources of ``sources`` and of their import closure (see ``import_closure``).

    Package files are named by their place in the package, scripts by their file name, so the
    version does not depend on where the repository is checked out.
    """
    files = import_closure(*sources)
    return _hash_files(tuple((path, path.stat().st_mtime_ns, path.stat().st_size) for path in files))[:length]


@lru_cache(maxsize=None)
def _hash_files(files: tuple) -> str:
    """Hash of the files' names and contents, once per version of the set (a DAG asks for every job)."""
    digest = hashlib.sha256()
    for path, _, _ in files:
        name = module_name(path)
        digest.update((name if name is not None else path.name).encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()
