"""One `imaml-verify run --quick` per test session, shared by test_cli.py and test_figures.py
(it is most of their time)."""
from __future__ import annotations

import functools
import json
import tempfile
from pathlib import Path


@functools.lru_cache(maxsize=1)
def quick_run():
    """(exit status, output folder, results document, captured stdout) of one quick run."""
    import contextlib
    import io

    from verify.cli import main

    out = Path(tempfile.mkdtemp(prefix="imaml-verify-quick-"))
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        status = main(["run", "--quick", "--seed", "0", "--out", str(out), "--no-progress"])
    doc = json.loads((out / "results.json").read_text(encoding="utf-8"))
    return status, out, doc, buf.getvalue()
