"""Confining paths chosen in the dashboard to the folders the operator allowed.

The dashboard may be reached by people who have no shell on the machine, so a store, model or dataset
folder typed into it must lie under an allowed root: the folder streamlit was started in, $HEALCORE_DATA,
$HEALCORE_RUNS, and any folder listed in $HEALCORE_ALLOWED_ROOTS (os.pathsep-separated). The command line
is not confined: its user already has the shell.
"""
from __future__ import annotations

import os
from pathlib import Path

from healcore.core.errors import ConfigError


def allowed_roots() -> list[Path]:
    roots = [Path.cwd()]
    for var in ("HEALCORE_DATA", "HEALCORE_RUNS"):
        if os.environ.get(var, "").strip():
            roots.append(Path(os.environ[var]).expanduser())
    for part in os.environ.get("HEALCORE_ALLOWED_ROOTS", "").split(os.pathsep):
        if part.strip():
            roots.append(Path(part.strip()).expanduser())
    return [r.resolve() for r in roots]


def looks_like_path(text: str) -> bool:
    text = str(text).strip()
    return text.startswith((".", "/", "~")) or (os.sep in text and Path(text).expanduser().exists())


def confine(path: str | Path, what: str, roots: list[Path] | None = None) -> Path:
    """The resolved path, if it lies under an allowed root (symlinks followed); else a one-line error."""
    roots = allowed_roots() if roots is None else roots
    resolved = Path(path).expanduser().resolve()
    if any(resolved == r or resolved.is_relative_to(r) for r in roots):
        return resolved
    raise ConfigError(f"{what} {path} is outside the allowed folders ({', '.join(map(str, roots))}); "
                      f"add its parent to HEALCORE_ALLOWED_ROOTS when starting the dashboard")


HUB_PREFIX = "hub:"  # --dataset hub:<id>[:<config>]: any dataset datasets.load_dataset loads


def is_hub(name: str) -> bool:
    return str(name).startswith(HUB_PREFIX)


def hub_parts(name: str) -> tuple[str, str | None]:
    """hub:<id>[:<config>] -> (id, config); the id may be a local repository folder."""
    rest = str(name)[len(HUB_PREFIX):].strip()
    repo, _, config = rest.partition(":")
    if not repo:
        raise ConfigError(f"dataset={short(str(name))} names no hub dataset; write hub:<id> or hub:<id>:<config>, "
                          f"e.g. hub:tweet_eval:sentiment")
    return repo, (config or None)


def check_spec_paths(spec: dict, roots: list[Path] | None = None) -> None:
    """Every model or dataset in a grid spec that is a path must be confined."""
    for key, what in (("models", "model folder"), ("datasets", "dataset folder")):
        values = spec.get(key) or []
        for value in values if isinstance(values, list) else [values]:
            text = str(value)
            if key == "datasets" and is_hub(text):  # hub:<folder> is a folder too (a local repository)
                text = hub_parts(text)[0]
            if looks_like_path(text):
                confine(text, what, roots)


# ------------------------------------------------------------------------------------------ outputs
_FILE_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,120}"


def file_name(name: str, what: str) -> str:
    """`name` as a plain file name (no folder, no '..'): a name given for an output never writes elsewhere."""
    import re

    text = str(name)
    if not re.fullmatch(_FILE_NAME, text) or ".." in text:
        raise ConfigError(f"{what} {short(text)!r} must be a file name (letters, digits, '.', '_', '-'; no folders "
                          f"and no '..'); put the folder in --out")
    return text


def output_dir(path: str | Path, what: str = "--out") -> Path:
    """A folder to write into, checked before any work: not an existing file, and within the system's path limits."""
    p = Path(path).expanduser()
    fits(p, what)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{what} {short(str(p))} is a file; give a folder (it is created when missing)")
    _under_folders(p, what)
    return p


def output_file(path: str | Path, what: str = "--out") -> Path:
    """A file to write, checked before any work: not a folder, not under a file, within the system's path limits."""
    p = Path(path).expanduser()
    fits(p, what)
    if p.is_dir():
        raise ConfigError(f"{what} {short(str(p))} is a folder; give a file name")
    _under_folders(p, what)
    return p


def _under_folders(p: Path, what: str) -> None:
    """The nearest existing parent of p must be a folder (a file there makes every write fail)."""
    parent = next((q for q in p.absolute().parents if os.path.exists(q)), None)
    if parent is not None and not parent.is_dir():
        raise ConfigError(f"{what} {short(str(p))}: {short(str(parent))} is a file, not a folder; choose another path")


def fits(path: Path, what: str) -> None:
    """A path the system can create: within PATH_MAX as a whole and NAME_MAX per part."""
    absolute = str(Path(path).expanduser().absolute())
    limit, part_limit = _limits(absolute)
    if len(absolute.encode()) >= limit or any(len(part.encode()) > part_limit for part in Path(absolute).parts):
        raise ConfigError(f"{what} {short(absolute)} is longer than this system allows ({limit} bytes a path, "
                          f"{part_limit} a name); choose a shorter path")


def _limits(path: str) -> tuple[int, int]:
    folder = Path(path)
    while not os.path.exists(folder) and folder != folder.parent:  # (os.path: False for a name too long)
        folder = folder.parent
    try:
        return os.pathconf(folder, "PC_PATH_MAX"), os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 4096, 255


def short(text: str, limit: int = 80) -> str:
    """A value cut to a short prefix for an error message (a pasted paragraph or a YAML bomb stays one line)."""
    text = str(text).replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"
