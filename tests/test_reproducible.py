"""The committed quick report regenerates byte for byte (`make check-report`).

`imaml-verify run --quick` is run afresh, as the command line runs it (its numerical kernels
pinned, verify._numerics), after importing the modules with the most literal constants
(verify.gpu, verify.fewshot, verify.checker.peers, hypothesis): every file it writes must equal
the committed reports/quick/ file, bytes and all. So a seed means the same instances whatever was
imported first, the run holds no date, timing, path or machine detail, and what the report says
is what anyone regenerates. Negative controls: the comparison itself fails on one changed byte,
and an unpinned process (native kernels) is told apart from a pinned one.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COMMITTED = REPO / "reports" / "quick"
PRELOAD = ("verify.gpu", "verify.fewshot", "verify.checker.peers", "hypothesis")


def _files(folder: Path) -> dict:
    """{relative path: bytes} of a report set, without run.json (dates, timings, machine)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "run.json"}


def _differences(a: dict, b: dict) -> list:
    return sorted({k for k in set(a) | set(b) if a.get(k) != b.get(k)})


@pytest.fixture(scope="module")
def regenerated():
    """The quick report written afresh into a sibling of reports/quick (the same depth, so the
    same relative links), by a pinned process that imported PRELOAD first."""
    from verify._numerics import pinned_environment

    if not COMMITTED.is_dir():
        pytest.fail("reports/quick/ is not committed (make report-quick writes it)")
    out = Path(tempfile.mkdtemp(prefix=".check-quick-", dir=REPO / "reports"))
    env = {**os.environ, **pinned_environment()}
    code = ("import sys\n"
            + "".join(f"import {m}\n" for m in PRELOAD)
            + "from verify.cli import main\nsys.exit(main())\n")
    try:
        proc = subprocess.run([sys.executable, "-c", code, "run", "--quick", "--no-progress",
                               "--out", str(out)], cwd=REPO, env=env, capture_output=True,
                              text=True)
        yield proc, _files(out)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def test_the_quick_report_regenerates_byte_for_byte(regenerated):
    proc, files = regenerated
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    committed = _files(COMMITTED)
    assert {"REPORT.md", "results.json", "results.schema.json"} <= set(committed)
    assert any(k.startswith("figures/") for k in committed)
    diff = _differences(files, committed)
    assert not diff, (f"regenerated files differ from the committed reports/quick/: {diff}; "
                      f"run `make report-quick` and commit the result if the change is intended")


def test_the_comparison_sees_one_changed_byte(regenerated):
    """Negative control of the comparison: one flipped byte, one missing file are differences."""
    _, files = regenerated
    changed = dict(files)
    key = "results.json"
    changed[key] = changed[key][:-2] + bytes([changed[key][-2] ^ 1]) + changed[key][-1:]
    assert _differences(changed, files) == [key]
    fewer = {k: v for k, v in files.items() if k != "REPORT.md"}
    assert _differences(fewer, files) == ["REPORT.md"]


def test_the_run_records_pinned_kernels_and_no_machine_detail(regenerated):
    import json

    _, files = regenerated
    doc = json.loads(files["results.json"])
    assert doc["environment"]["numerics"] == "pinned"
    assert "platform" not in doc["environment"] and "machine" not in doc
    assert "--out" not in doc["command"] and "--no-progress" not in doc["command"]
    text = files["REPORT.md"].decode("utf-8")
    assert "CPUs" not in text and "numerical kernels pinned" in text


def test_an_unpinned_process_says_so():
    """What a process was started with decides its kernels: a plain interpreter is 'native', one
    started with the pinned environment is 'pinned' (where this processor has AVX2)."""
    from verify._numerics import MARK, pinned_environment

    code = "from verify._numerics import state; print(state())"
    plain = {k: v for k, v in os.environ.items() if k != MARK}
    native = subprocess.run([sys.executable, "-c", code], env=plain, capture_output=True,
                            text=True, check=True).stdout.strip()
    pinned = subprocess.run([sys.executable, "-c", code], env={**plain, **pinned_environment()},
                            capture_output=True, text=True, check=True).stdout.strip()
    assert native == "native" and pinned == pinned_environment()[MARK]


def test_the_mark_alone_does_not_make_a_process_pinned():
    """state() reads what the libraries read: the mark set by hand without the variables is
    'native', so a report cannot claim pinned kernels it did not have."""
    from verify._numerics import MARK, THREADS, pinned_environment

    code = "from verify._numerics import state; print(state())"
    plain = {k: v for k, v in os.environ.items() if k not in pinned_environment()}
    for extra, expected in (({MARK: "pinned"}, "native"), ({MARK: "pinned", **THREADS}, "threads")):
        got = subprocess.run([sys.executable, "-c", code], env={**plain, **extra},
                             capture_output=True, text=True, check=True).stdout.strip()
        assert got == expected, (extra, got)


def test_the_recorded_command_leaves_out_where_and_how():
    """--out, --json, --no-progress, --jobs and --dask do not change what a run finds: they are
    not recorded, so a report written elsewhere or on N processes is the same file."""
    from verify.cli import recorded_command

    assert recorded_command(["run", "--quick", "--out", "x", "--jobs", "2", "--no-progress",
                             "--json", "--dask=tcp://h:1", "--seed", "3"]) == [
        "imaml-verify", "run", "--quick", "--seed", "3"]
