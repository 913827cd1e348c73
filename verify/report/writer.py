"""Write a run's output folder: figures, results.json (+ its schema), REPORT.md.

Everything is computed before anything is written, and every file is written atomically
(:mod:`verify.report._atomic`); REPORT.md is written last, so a folder whose REPORT.md is new
also has the results.json and figures of the same run."""
from __future__ import annotations

from pathlib import Path

from verify.report._atomic import atomic_write_bytes, atomic_write_text
from verify.report.markdown import render_report
from verify.report.results import SCHEMA_PATH, dumps

__all__ = ["write_outputs"]


def write_outputs(out_dir, doc: dict, files: dict[str, bytes], *,
                  fewshot_markdown: str | None = None) -> list[Path]:
    """Write ``files`` (relative path -> bytes, the figures), results.json, results.schema.json
    and REPORT.md into ``out_dir``. Returns the paths written, REPORT.md last."""
    out = Path(out_dir)
    written = [atomic_write_bytes(out / rel, data) for rel, data in sorted(files.items())]
    written.append(atomic_write_text(out / "results.json", dumps(doc)))
    written.append(atomic_write_bytes(out / "results.schema.json", SCHEMA_PATH.read_bytes()))
    written.append(atomic_write_text(out / "REPORT.md",
                                     render_report(doc, fewshot_markdown=fewshot_markdown)))
    return written
