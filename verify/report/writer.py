"""Write a run's report as one set: REPORT.md, results.json, results.schema.json, run.json and
figures/. results.json and REPORT.md hold no dates or timings (run.json has them), so a
regenerated report differs from the previous one only where the findings differ.

What is guaranteed: at every instant ``--out`` holds one whole report set, the previous one or
the new one — whatever stops the run (an exception, Ctrl-C, SIGTERM, SIGKILL, power loss after
the data reached the disk) and whatever else happens (a full disk, another run into the same
folder). How:

1. Everything is rendered to bytes first (:func:`render_report_set`).
2. :func:`write_report_set` holds the folder's locks (:func:`verify.report._atomic.folder_lock`;
   a run also holds :func:`out_lock` from before its first claim, so that a second run into the
   same ``--out`` is refused at once, with one line, instead of losing its work at the end).
3. It writes the new set into a staging folder next to ``--out`` (``.NAME.imaml-verify-new-*``,
   in the same parent, so on the same file system), links everything else that is in ``--out``
   into it (other commands' folders such as ``fewshot/``, ``peers/``, ``bench-peers/``, ``gpu/``:
   hard links, so nothing is copied and those files stay the same files), and flushes it to disk.
   A full disk fails here: the staging folder is removed and the previous report is untouched
   (:class:`ReportWriteError`, one line naming the path and saying what was kept).
4. It swaps the staging folder and ``--out`` in one system call (Linux ``renameat2`` with
   ``RENAME_EXCHANGE``, macOS ``renamex_np`` with ``RENAME_SWAP``): the folder at the path
   ``--out`` is the previous set up to that instant and the new one from it, and stays a real
   directory (the committed files stay regular files at the same paths).
5. It removes the previous set (now in the staging folder's place). A run killed before that
   leaves ``.NAME.imaml-verify-new-*`` folders, which the next write into ``--out`` removes
   (and .gitignore ignores).

A ``--out`` that is a symbolic link is published where it points (the link is kept).

Where the swap is not possible — another platform, a file system without it, ``--out`` a mount
point or the current directory (or above it), its parent not writable — the set is swapped in
by renames inside ``--out`` with a journal (the previous design): atomic against exceptions and
SIGINT/SIGTERM (held back during the renames), and after a kill mid-swap the next write (or
:func:`recover`) puts the previous set back from the journal.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import re
import shutil
import signal
import stat
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from verify.report._atomic import atomic_write_text, folder_lock, remove_stale_temporaries
from verify.report.markdown import render_report
from verify.report.results import SCHEMA_PATH, dumps, split_timing

try:
    import fcntl
except ImportError:  # pragma: no cover  (Windows)
    fcntl = None

__all__ = ["REPORT_SET", "render_report_set", "write_report_set", "recover", "out_lock",
           "ReportWriteError", "OutBusyError", "published"]

#: the entries of the output folder that belong to one report (figures/ as a whole)
REPORT_SET = ("figures", "results.schema.json", "run.json", "results.json", "REPORT.md")
JOURNAL = ".imaml-verify-swap.json"
#: names of this module's own temporary entries (staging folders, the journal, lock files)
_OURS = re.compile(r"^\.(?:.*\.)?imaml-verify(?:-new-.*|-old-.*|-swap\.json|\.lock)$")


class ReportWriteError(OSError):
    """The report could not be written (a full disk, a permission, ...); the message, one line,
    names the path and says what was kept (the previous report is always kept whole)."""


class OutBusyError(RuntimeError):
    """Another run is writing into the same output folder (one line: which process)."""


def _step(name: str) -> None:
    """A named point of the write (tests kill the process here: tests/test_faults.py)."""


_published: dict = {}


def published(out_dir) -> int:
    """How many report sets this process has published into ``out_dir``."""
    return _published.get(str(Path(os.path.realpath(out_dir))), 0)


def _count_published(out: Path) -> None:
    _published[str(out)] = _published.get(str(out), 0) + 1


def render_report_set(doc: dict, figure_files: dict[str, bytes], *,
                      fewshot_markdown: str | None = None,
                      third_party_markdown: str | None = None,
                      docs_base: str = "../docs") -> dict[str, bytes]:
    """{relative path: bytes} of the whole report: the figures, results.json, its schema, run.json
    (dates and timings) and REPORT.md (rendered from results.json's content alone)."""
    stable, timing = split_timing(doc)
    files = dict(figure_files)
    files["results.json"] = dumps(stable).encode("utf-8")
    files["run.json"] = dumps(timing).encode("utf-8")
    files["results.schema.json"] = SCHEMA_PATH.read_bytes()
    files["REPORT.md"] = render_report(stable, fewshot_markdown=fewshot_markdown,
                                       third_party_markdown=third_party_markdown,
                                       docs_base=docs_base).encode("utf-8")
    unknown = sorted({rel.split("/", 1)[0] for rel in files} - set(REPORT_SET))
    if unknown:
        raise ValueError(f"files outside the report set: {unknown}")
    return files


@contextmanager
def _signals_held():
    """SIGINT and SIGTERM that arrive inside the block are acted on when it ends (their Python
    handlers are swapped for a recorder meanwhile: that works whichever thread the kernel
    delivers the signal to). Outside the main thread, where handlers cannot be set, a no-op."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    held = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda signum, frame: caught.append(signum))
                for sig in held}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for signum in caught[:1]:           # act on the first one, as it would have been
            handler = previous[signum]
            if callable(handler):
                handler(signum, None)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(signum)


def _fsync_path(path, directory=False) -> None:
    fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    try:
        os.fsync(fd)
    except OSError as exc:   # some file systems cannot fsync a directory
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            _fsync_path(path)
        elif path.is_dir() and not path.is_symlink():
            _fsync_path(path, directory=True)
    _fsync_path(root, directory=True)


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


# -- the whole-run lock ---------------------------------------------------------------------------
_held: dict = {}


def _lock_file(out: Path) -> Path:
    """Where the lock of ``out`` lives: next to it (``.NAME.imaml-verify.lock`` in its parent, a
    folder that is not swapped), or inside it when the parent cannot be written."""
    parent = out.parent
    if parent != out and os.access(parent, os.W_OK | os.X_OK):
        return parent / f".{out.name}.imaml-verify.lock"
    return out / ".imaml-verify.lock"


@contextmanager
def out_lock(out_dir):
    """Hold ``out_dir`` for one run: a second run into it (another process) is refused with
    :class:`OutBusyError` instead of waiting (the lock is taken before any work, so the refused
    run has lost nothing). Re-entrant within a process; released when the process ends, however
    it ends (an flock). The lock file is removed on release (a killed run leaves it, unlocked:
    the next run takes it over); after taking the lock, the file must still be the one at its
    path, else it was removed meanwhile and the lock is taken again on the new one."""
    out = Path(os.path.realpath(out_dir))
    key = str(out)
    if key in _held or fcntl is None:
        yield out
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    path = _lock_file(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "?"
            except OSError:
                holder = "?"
            os.close(fd)
            raise OutBusyError(f"{out_dir} is being written by another imaml-verify run "
                               f"(process {holder}); wait for it to finish, or give another "
                               f"output folder") from None
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except OSError:
            same = False
        if same:
            break
        os.close(fd)                  # removed by its last holder meanwhile: take the new one
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:
        pass
    _held[key] = fd
    try:
        yield out
    finally:
        _held.pop(key, None)
        with contextlib.suppress(OSError):
            path.unlink()             # while still holding it (see the docstring)
        os.close(fd)


# -- the swap -------------------------------------------------------------------------------------
_AT_FDCWD = -100
_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.EXDEV, errno.EPERM, errno.ENOTSUP,
                getattr(errno, "EOPNOTSUPP", errno.ENOTSUP)}


def _exchange(a: Path, b: Path) -> bool:
    """Swap the directories ``a`` and ``b`` in one system call. False when this platform or file
    system cannot (nothing was changed then); OSError for any other failure."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return False
    if sys.platform.startswith("linux"):
        fn = getattr(libc, "renameat2", None)
        if fn is None:
            return False
        fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), 2)   # RENAME_EXCHANGE
    elif sys.platform == "darwin":
        fn = getattr(libc, "renamex_np", None)
        if fn is None:
            return False
        fn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint]
        rc = fn(os.fsencode(a), os.fsencode(b), 2)                          # RENAME_SWAP
    else:
        return False
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in _UNSUPPORTED:
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


_can_swap: dict = {}


def _swap_possible(out: Path) -> bool:
    """Whether ``out`` can be published by swapping it with a sibling folder (module docstring:
    not a mount point, not holding the current directory, a writable parent on the same file
    system where the swap works — tried once per file system on two empty folders)."""
    parent = out.parent
    if parent == out or os.path.ismount(out) or not os.access(parent, os.W_OK | os.X_OK):
        return False
    try:
        cwd = Path(os.getcwd()).resolve()
        if cwd == out.resolve() or out.resolve() in cwd.parents:
            return False
        dev = os.stat(out).st_dev
        if os.stat(parent).st_dev != dev:
            return False
    except OSError:
        return False
    if dev not in _can_swap:
        a = Path(tempfile.mkdtemp(prefix=f".{out.name}.imaml-verify-new-probe-", dir=parent))
        b = Path(tempfile.mkdtemp(prefix=f".{out.name}.imaml-verify-new-probe-", dir=parent))
        try:
            _can_swap[dev] = _exchange(a, b)
        except OSError:
            _can_swap[dev] = False
        finally:
            _remove(a)
            _remove(b)
    return _can_swap[dev]


def _clean(out: Path) -> None:
    """Remove what killed writes of ``out`` left: staging folders next to it, the previous
    design's folders inside it (after :func:`recover`), stale temporary files in it. Called with
    the folder's locks held, so none of it belongs to a live writer."""
    prefix = f".{out.name}.imaml-verify-"
    for folder, match in ((out.parent, lambda n: n.startswith(prefix) and
                           n[len(prefix):].startswith(("new-", "old-"))),
                          (out, lambda n: n.startswith((".imaml-verify-new-", ".imaml-verify-old-")))):
        try:
            with os.scandir(folder) as it:
                names = [e.name for e in it]
        except OSError:
            continue
        for name in names:
            if match(name):
                _remove(folder / name)
    remove_stale_temporaries(out)


def _write_files(root: Path, files: dict) -> None:
    for rel, data in sorted(files.items()):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "xb") as fh:
            fh.write(data)
        _step(f"wrote {rel}")


def _carry(src: Path, dst: Path, top: bool = True) -> None:
    """Everything in ``src`` but the report set and this module's temporaries, into ``dst``:
    folders recreated, files hard-linked (copied where a link is refused), links recreated."""
    with os.scandir(src) as it:
        entries = list(it)
    for entry in entries:
        if top and (entry.name in REPORT_SET or _OURS.match(entry.name)
                    and not entry.name.endswith(".lock")):
            continue
        target = dst / entry.name
        if entry.is_symlink():
            os.symlink(os.readlink(entry.path), target)
        elif entry.is_dir():
            os.mkdir(target)
            _carry(Path(entry.path), target, top=False)
            shutil.copystat(entry.path, target)
        else:
            try:
                os.link(entry.path, target)
            except OSError as exc:
                if exc.errno not in _UNSUPPORTED | {errno.EACCES, errno.EMLINK}:
                    raise
                shutil.copy2(entry.path, target)


def _publish_by_swap(out: Path, files: dict) -> bool:
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.imaml-verify-new-", dir=out.parent))
    swapped = False
    try:
        _step("staging")
        _write_files(stage, files)
        _carry(out, stage)
        _step("carried")
        os.chmod(stage, stat.S_IMODE(os.stat(out).st_mode))
        _fsync_tree(stage)
        _step("synced")
        with _signals_held():
            swapped = _exchange(stage, out)
            if swapped:
                _count_published(out)
                _step("swapped")
    finally:
        if not swapped:
            _remove(stage)
    if not swapped:   # refused after all (the probe said it would work): the fallback
        return False
    with contextlib.suppress(OSError):
        _fsync_path(out.parent, directory=True)
    _remove(stage)                          # the previous set
    _step("removed")
    return True


def _publish_by_journal(out: Path, files: dict) -> None:
    """The fallback (module docstring): staging and the previous set inside ``out``, swapped in
    by renames with a journal."""
    staging = Path(tempfile.mkdtemp(prefix=".imaml-verify-new-", dir=out))
    previous = Path(tempfile.mkdtemp(prefix=".imaml-verify-old-", dir=out))
    try:
        _write_files(staging, files)
        for path in [staging, *staging.rglob("*")]:   # readable: 0666/0777 less the umask
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)
        _fsync_tree(staging)
        present = [name for name in REPORT_SET if (staging / name).exists()]
        with _signals_held():
            old = [name for name in REPORT_SET if _exists(out / name)]
            atomic_write_text(out / JOURNAL, json.dumps(
                {"previous": previous.name, "staging": staging.name, "old": old}))
            for name in old:                              # the previous set aside, whole
                os.replace(out / name, previous / name)
                _step(f"journal: moved aside {name}")
            for name in present:                          # the new set in
                os.replace(staging / name, out / name)
                _step(f"journal: moved in {name}")
            (out / JOURNAL).unlink()
            _count_published(out)
    except BaseException:
        try:
            recover(out)
        finally:   # the previous set is only let go once it is back in place
            if not (out / JOURNAL).exists():
                shutil.rmtree(staging, ignore_errors=True)
                shutil.rmtree(previous, ignore_errors=True)
        raise
    shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(previous, ignore_errors=True)


def recover(out_dir) -> bool:
    """Put back the previous report if a swap into ``out_dir`` was interrupted (the journal is
    still there). Returns True when something was restored."""
    out = Path(out_dir)
    journal = out / JOURNAL
    if not journal.is_file():
        return False
    record = json.loads(journal.read_text(encoding="utf-8"))
    previous = out / record["previous"]
    with _signals_held():
        for name in REPORT_SET:
            saved, target = previous / name, out / name
            if name in record["old"] and not _exists(saved):
                continue                      # never moved aside: still the previous one
            if _exists(target):               # a new entry moved in (or the old one, moved back)
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                else:
                    target.unlink()
            if _exists(saved):
                os.replace(saved, target)
        journal.unlink()
    shutil.rmtree(previous, ignore_errors=True)
    shutil.rmtree(out / record.get("staging", "\0missing"), ignore_errors=True)
    return True


def _kept(out: Path) -> str:
    if any(_exists(out / name) for name in REPORT_SET):
        return f"the previous report in {out} is kept, unchanged"
    return f"nothing was written to {out}"


def write_report_set(out_dir, files: dict[str, bytes]) -> list[Path]:
    """Write ``files`` ({path relative to out_dir: bytes}, every path inside :data:`REPORT_SET`)
    into ``out_dir`` as one set, replacing the previous report as a whole (see the module
    docstring). Returns the paths written. Raises :class:`OutBusyError` when another process
    holds ``out_dir``, :class:`ReportWriteError` (one line; the previous report kept) when the
    set cannot be written."""
    out = Path(os.path.realpath(out_dir))
    unknown = sorted({rel.split("/", 1)[0] for rel in files} - set(REPORT_SET))
    if unknown:
        raise ValueError(f"files outside the report set: {unknown}")
    try:
        with out_lock(out), folder_lock(out):
            recover(out)
            _clean(out)
            try:
                if not (_swap_possible(out) and _publish_by_swap(out, files)):
                    _publish_by_journal(out, files)
            except OSError as exc:
                raise _write_error(out, exc) from exc
    except ReportWriteError:
        raise
    except OSError as exc:   # the folder or its lock could not even be made
        raise _write_error(out, exc) from exc
    return [out / rel for rel in sorted(files)]


def _write_error(out: Path, exc: OSError) -> ReportWriteError:
    err = ReportWriteError(f"cannot write the report into {out}: {exc.strerror or exc} "
                           f"({exc.filename or out}); {_kept(out)}")
    err.errno = exc.errno
    return err
