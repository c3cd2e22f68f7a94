"""One writer per run folder: a lock file that a second process on the same folder is refused by.

Two processes given one `--out` would both write its checkpoint, best prompt and log, each
overwriting the other. `hold(folder)` creates `folder/.lock` atomically (O_CREAT | O_EXCL)
holding the owner's pid, host and start time, and removes it on exit, however the block ends.
A lock whose owner is gone (same host, pid no longer running) is stale and taken over, so a
killed run resumes without a manual clean-up; a lock from another host is never guessed
about. A folder that `hold` created and that is empty again on exit is removed, so a run
refused by a later check leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from softprompt.errors import ConfigError

NAME = ".lock"
FRESH_S = 10  # an unreadable lock younger than this is being written, not left by a killed run


def contents(folder: Path) -> list[Path]:
    """What `folder` holds besides its lock (an emptiness check ignores the lock)."""
    return [p for p in Path(folder).iterdir() if p.name != NAME] if Path(folder).is_dir() else []


@contextlib.contextmanager
def hold(folder: Path) -> Iterator[Path]:
    """Hold `folder`'s lock for the block; raises ConfigError when another live process holds it."""
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / NAME
    _acquire(path)
    try:
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        if created:
            with contextlib.suppress(OSError):  # not empty: the run wrote something, keep it
                folder.rmdir()


def _acquire(path: Path) -> None:
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    for _ in range(2):  # a stale lock is removed once, then taken like a free one
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _owner(path)
            if owner is None and _age(path) < FRESH_S:  # unreadable: being written by a process taking it now
                raise _busy(path, "another softprompt process (starting just now)") from None
            if owner is not None and not _stale(owner):
                pid, host, since = owner["pid"], owner["host"], owner.get("started", "?")
                raise _busy(path, f"another softprompt process (pid {pid} on {host}, since {since})") from None
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        return
    raise _busy(path, "another softprompt process (it took the lock while a stale one was removed)")


def _busy(path: Path, who: str) -> ConfigError:
    return ConfigError(
        f"{path.parent}: {who} is writing this folder; wait for it, use another --out, or delete {path} "
        "if that process is gone"
    )


def _owner(path: Path) -> dict | None:
    """The lock's owner, or None when the file is unreadable (half written by a killed process)."""
    try:
        owner = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) and isinstance(owner.get("pid"), int) and "host" in owner else None


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return math.inf


def _stale(owner: dict) -> bool:
    """Whether the owner is known to be gone: same host and its pid runs no more."""
    if owner["host"] != socket.gethostname():
        return False
    try:
        os.kill(owner["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False
