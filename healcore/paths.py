"""Confining paths chosen in the dashboard to the folders the operator allowed.

The dashboard may be reached by people who have no shell on the machine, so a store, model or dataset
folder typed into it must lie under an allowed root: the folder streamlit was started in, $HEALCORE_DATA,
$HEALCORE_RUNS, and any folder listed in $HEALCORE_ALLOWED_ROOTS (os.pathsep-separated). The command line
is not confined: its user already has the shell.
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import ConfigError


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


def check_spec_paths(spec: dict, roots: list[Path] | None = None) -> None:
    """Every model or dataset in a grid spec that is a path must be confined."""
    for key, what in (("models", "model folder"), ("datasets", "dataset folder")):
        values = spec.get(key) or []
        for value in values if isinstance(values, list) else [values]:
            if looks_like_path(str(value)):
                confine(str(value), what, roots)
