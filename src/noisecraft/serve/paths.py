"""The only way the server turns a name from a request into a path: under a root, after resolving symlinks.

Anything else (an absolute path, `..`, a NUL byte, a symlink that leads out of the tree, a name the OS refuses)
gives None, which the routes answer with 404: a client learns nothing about what lies outside the tree.
"""
from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

RUN_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def resolve_under(root: Path, rel: str, *, must_exist: bool = True) -> Path | None:
    """`root / rel` with symlinks resolved, or None unless it lies inside `root` (itself resolved)."""
    if not isinstance(rel, str) or "\x00" in rel or "\\" in rel or len(rel) > 1024:
        return None
    parts = PurePosixPath(rel).parts
    if rel.startswith("/") or any(p in ("..", "~") for p in parts):
        return None
    try:
        base = root.resolve(strict=True)
        path = (base / PurePosixPath(*parts)).resolve(strict=must_exist) if parts else base
    except (OSError, RuntimeError, ValueError):  # missing, a symlink loop, a name too long
        return None
    return path if path == base or base in path.parents else None


def valid_run_name(name: str) -> bool:
    """A new run's directory name: one level, letters, digits and ._- (no hidden names)."""
    return 0 < len(name) <= 64 and set(name) <= RUN_NAME_CHARS and not name.startswith(".")


def is_run_dir(path: Path) -> bool:
    """A run, or a run the server started that has not written its status yet (train.log: its output)."""
    from noisecraft.rundir import RunDir

    run = RunDir(path)
    return run.holds_run() or run.status_path.is_file() or run.train_log.is_file()


def find_runs(root: Path, max_depth: int = 3) -> list[str]:
    """Names (paths relative to `root`, with /) of the run directories under `root`, sorted. A run's own
    sub-folders are not searched, nor are hidden folders or symlinks that lead out of the tree."""
    base = root.resolve()
    found: list[str] = []

    def walk(d: Path, depth: int) -> None:
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError:
            return
        for e in entries:
            if e.name.startswith(".") or not e.is_dir():
                continue
            p = Path(e.path)
            rel = p.relative_to(base).as_posix()
            if e.is_symlink() and resolve_under(base, rel) is None:
                continue
            if is_run_dir(p):
                found.append(rel)
            elif depth < max_depth:
                walk(p, depth + 1)

    walk(base, 1)
    return found
