"""Write a run's report as one set: REPORT.md, results.json, results.schema.json, run.json and
figures/. results.json and REPORT.md hold no dates or timings (run.json has them), so a
regenerated report differs from the previous one only where the findings differ.

Everything is rendered to bytes first (:func:`render_report_set`). :func:`write_report_set` then
writes the new files into a staging folder inside the output folder (a full disk fails here and
leaves the previous report untouched), and swaps the set in: with SIGINT/SIGTERM held back, it
records a journal, moves the previous set aside, moves the new one in, and removes the journal
and the previous set. The swap is a handful of renames on one file system. If the process dies
inside it anyway (SIGKILL, power loss), the next write (or :func:`recover`) puts the previous set
back from the journal. Other files in the output folder (e.g. ``gpu/``, ``fewshot/``) are never
touched.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
from contextlib import contextmanager
from pathlib import Path

from verify.report._atomic import atomic_write_text
from verify.report.markdown import render_report
from verify.report.results import SCHEMA_PATH, dumps, split_timing

__all__ = ["REPORT_SET", "render_report_set", "write_report_set", "recover"]

#: the entries of the output folder that belong to one report (figures/ as a whole)
REPORT_SET = ("figures", "results.schema.json", "run.json", "results.json", "REPORT.md")
JOURNAL = ".imaml-verify-swap.json"


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


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


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


def write_report_set(out_dir, files: dict[str, bytes]) -> list[Path]:
    """Write ``files`` ({path relative to out_dir: bytes}, every path inside :data:`REPORT_SET`)
    into ``out_dir`` as one set, replacing the previous report as a whole (see the module
    docstring). Returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    recover(out)
    staging = Path(tempfile.mkdtemp(prefix=".imaml-verify-new-", dir=out))
    previous = Path(tempfile.mkdtemp(prefix=".imaml-verify-old-", dir=out))
    try:
        for rel, data in sorted(files.items()):
            path = staging / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
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
            for name in present:                          # the new set in
                os.replace(staging / name, out / name)
            (out / JOURNAL).unlink()
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
    return [out / rel for rel in sorted(files)]
