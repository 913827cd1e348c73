"""Atomic file writes, and the locks that keep writers of one folder from mixing their files.

:func:`atomic_write_bytes` writes a file to a temporary file in the same directory, flushed to
disk and moved over the target with :func:`os.replace` (atomic on POSIX and Windows): a reader,
or a run killed meanwhile, sees the old file or the new one, never half of one. The temporary
file's name carries the writer's process id (``.NAME.PID.XXXX.tmp``); one left by a process
that no longer exists (a killed run) is removed by the next write into that directory.

:func:`folder_lock` serialises writers of a folder that may be swapped as a whole (see
:mod:`verify.report.writer`): a shared flock on the folder's parent and an exclusive one on the
folder itself, each re-checked after it is granted (the folder may have been swapped for a new
one meanwhile). On a system without ``fcntl`` the locks are no-ops.
"""
from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover  (Windows)
    fcntl = None

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_json", "remove_stale_temporaries", "folder_lock",
           "pid_alive"]

_TMP = re.compile(r"^\..+\.(\d+)\.[^.]+\.tmp$")


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (signal 0 delivers nothing: it only asks)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:    # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def remove_stale_temporaries(folder) -> list[Path]:
    """Remove the temporary files ``.NAME.PID.XXXX.tmp`` in ``folder`` whose writer (PID) no
    longer runs: the leftovers of a killed atomic write. Returns what was removed."""
    removed = []
    try:
        with os.scandir(folder) as it:
            entries = list(it)
    except OSError:
        return removed
    for entry in entries:
        m = _TMP.match(entry.name)
        if m and int(m.group(1)) != os.getpid() and not pid_alive(int(m.group(1))):
            try:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
            except OSError:
                pass
    return removed


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (creating parent directories)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp",
                               dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp creates 0600; a report is for readers: the usual 0666 less the umask
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, doc) -> Path:
    """Write ``doc`` as indented JSON to ``path`` atomically (values JSON cannot hold are
    written as their ``str``): a reader, or a run killed meanwhile, sees the old file or the new
    one, never half of one."""
    import json

    return atomic_write_text(path, json.dumps(doc, indent=2, default=str))


# -- locks ------------------------------------------------------------------------------------------
def _same_file(fd, path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


@contextlib.contextmanager
def _dir_flock(path: Path, how):
    """flock(how) on the directory ``path``, held while it is still the directory at ``path``
    (taken again on the new one if it was swapped while this process waited)."""
    if fcntl is None:
        yield
        return
    while True:
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(fd, how)
        except BaseException:
            os.close(fd)
            raise
        if _same_file(fd, path):
            break
        os.close(fd)            # swapped meanwhile: lock the folder that is there now
    try:
        yield
    finally:
        os.close(fd)            # closing the last descriptor releases the lock


@contextlib.contextmanager
def folder_lock(folder):
    """Hold while writing into (or swapping) ``folder``: a shared lock on its parent (so that
    the parent is not swapped meanwhile) and an exclusive lock on the folder (one writer at a
    time). Creates the folder if needed. Blocks while another writer holds it."""
    folder = Path(os.path.realpath(folder))
    folder.parent.mkdir(parents=True, exist_ok=True)
    parent = contextlib.nullcontext() if folder.parent == folder else \
        _dir_flock(folder.parent, fcntl.LOCK_SH if fcntl else None)
    with parent:
        folder.mkdir(exist_ok=True)   # inside the parent's lock: not into a parent being swapped
        with _dir_flock(folder, fcntl.LOCK_EX if fcntl else None):
            yield folder
