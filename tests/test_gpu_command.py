"""`imaml-verify gpu`: one reduced dry run of the whole command on the CPU (every stage, the
claims stage on one claim), its files and figures; the budget logic (shares, timeouts, skips,
the "running" marker a killed run leaves, reruns of one stage) on stand-in stages; the
bandwidth measurement and its negative control; on CUDA, the bandwidth stage's instrument."""
from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import time

import pytest
import torch

from verify.fewshot.gpu_check import TRAIN_METHODS
from verify.fewshot.integration import flat_for_imaml_linear_for_maml
from verify.fewshot.report import render_markdown
from verify.gpu import STAGES, run_gpu
from verify.gpu import bandwidth
from verify.gpu.command import (
    MAX_TEST_SECONDS,
    _junit_figures,
    _run_process,
    allot,
    seconds_since_process_start,
)
from verify.report._atomic import atomic_write_json as write_json

CUDA = torch.cuda.is_available()


# ---------------------------------------------------------------- the dry run, end to end
@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    from verify.cli import main

    out = tmp_path_factory.mktemp("gpu-dry")
    buf = io.StringIO()
    t0 = time.monotonic()
    with contextlib.redirect_stdout(buf):
        rc = main(["gpu", "--dry-run", "--out", str(out), "--claim", "memory"])
    seconds = time.monotonic() - t0
    return rc, out, json.loads((out / "summary.json").read_text()), buf.getvalue(), seconds


def test_dry_run_passes_every_stage_and_says_it_is_a_dry_run(dry_run):
    rc, out, summary, printed, seconds = dry_run
    assert rc == 0, printed
    assert summary["status"] == "pass" and summary["dry_run"] is True
    assert list(summary["stages"]) == list(STAGES)
    for name, stage in summary["stages"].items():
        assert stage["status"] == "pass", (name, stage)
        # a dry run has no time budget: it does the same work however busy the machine is
        assert stage["seconds"] > 0 and stage["timeout_s"] is None
    assert summary["device"].startswith("cpu") and summary["torch"] == torch.__version__
    assert summary["budget_s"] is None   # (its wall time is not asserted)
    for rel in ("REPORT.md", "summary.json", "claims-float64/REPORT.md",
                "claims-float32/results.json", "fewshot_gpu.json", "fewshot.md",
                "fewshot_memory.png", "bandwidth.json", "tests/junit.xml", "logs/tests.log"):
        assert (out / rel).is_file(), rel
    report = (out / "REPORT.md").read_text()
    assert "CPU dry run at tiny sizes" in report and "## Few-shot integration" in report
    assert "## Batched CG bandwidth" in report and "Not judged" in report
    assert not list(out.glob(".*.tmp")) and not list(out.glob("**/.*.tmp"))


def test_dry_run_stage_figures(dry_run):
    _, _, summary, _, _ = dry_run
    st = summary["stages"]
    assert st["tests"]["passed"] == 0 and st["tests"]["skipped"] > 0   # no CUDA here
    for dtype in ("float64", "float32"):
        run = st["claims"]["runs"][dtype]
        assert run["claims_run"] == 1 and run["claims_failed"] == []
        assert run["memory"] and all(r["passed"] for r in run["memory"])
    assert st["fewshot"]["verdicts"] and all(st["fewshot"]["verdicts"].values())
    assert set(st["fewshot"]["accuracy"]) == {"no_meta_learning", *TRAIN_METHODS}
    assert st["bandwidth"]["judged"] is False and len(st["bandwidth"]["batched"]) == 2


def test_dry_run_fewshot_document(dry_run):
    _, out, _, _, _ = dry_run
    doc = json.loads((out / "fewshot_gpu.json").read_text())
    assert doc["dry_run"] and doc["device"].startswith("cpu") and doc["complete"]
    assert set(doc) >= {"cg_modes", "cg_convergence", "memory", "hvp_time", "training",
                        "seconds", "verdicts"}
    assert doc["training"]["methods"]["imaml_gd:fixed"]["cg_mode"] == "fixed"
    assert flat_for_imaml_linear_for_maml(doc["memory"])["imaml_gd"]["flat"]
    md = (out / "fewshot.md").read_text()
    assert md == render_markdown(doc, figure_path="fewshot_memory.png")
    assert "![memory" not in render_markdown(doc)  # the report links the GPU run's figure only
    assert "not Omniglot" in md and "99.16 ± 0.35" in md and "CPU dry run" in md
    assert "CG's three behaviours and MINRES" in md and "the paper's code" in md
    assert "iMAML-GD ≥ MAML" in md and "MINRES on I + H/λ" in md
    assert doc["training"]["methods"]["imaml_gd:minres"]["cg_mode"] == "minres"
    assert "not run" not in md  # every row of Table 2 has our number
    # rendered as a GPU run would be: the allocator column, and the report links the figure
    gpu_doc = json.loads(json.dumps(doc))
    gpu_doc.update(device="NVIDIA H100 80GB HBM3", dry_run=False, memory_figure="gpu/m.png")
    for rows in gpu_doc["memory"]["methods"].values():
        for row in rows.values():
            row["cuda_peak_bytes"] = row["saved_bytes"] + 4096
    gpu_doc["memory"]["cuda_growth"] = {m: 1.0 for m in gpu_doc["memory"]["methods"]}
    gpu_md = render_markdown(gpu_doc)
    assert "GPU run" in gpu_md and "allocator peak after warm-up" in gpu_md
    assert "](gpu/m.png)" in gpu_md


def test_without_cuda_the_command_refuses_a_real_run(tmp_path, capsys):
    if CUDA:
        pytest.skip("a CUDA device is present")
    from verify.cli import main

    assert main(["gpu", "--out", str(tmp_path)]) == 2
    assert "--dry-run" in capsys.readouterr().err
    assert not (tmp_path / "summary.json").exists()


# ---------------------------------------------------------------- budget logic
class _Clock:
    """A monotonic clock that moves only when a stand-in stage says so: the budget logic is
    tested without depending on how fast this machine is."""

    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def _fake(status="pass", **figures):
    def runner(st, seconds):
        return {"status": status, **figures}
    return runner


FAKES = {name: _fake(figure=name) for name in STAGES}


def test_allot_shares_what_is_left_in_proportion():
    shares = {"a": 1.0, "b": 3.0}
    assert allot("a", 100.0, ["a", "b"], shares=shares) == 25.0
    assert allot("b", 90.0, ["b"], shares=shares) == 90.0
    assert allot("a", -5.0, ["a", "b"], shares=shares) == 0.0


def test_every_stage_written_the_moment_it_ends_and_running_marker(tmp_path):
    seen = {}

    def peek(st, seconds):   # what a reader (or a kill) sees while this stage runs
        seen.update(json.loads((tmp_path / "summary.json").read_text()))
        return {"status": "pass"}

    s = run_gpu(tmp_path, budget=60, dry_run=True, runners={**FAKES, "fewshot": peek},
                started_s_ago=0.0, echo=lambda *_: None, clock=_Clock())
    assert seen["stages"]["fewshot"]["status"] == "running"
    assert seen["stages"]["tests"]["status"] == "pass"           # finished ones are kept
    assert "bandwidth" not in seen["stages"] and seen["status"] == "running"
    assert s["status"] == "pass" and (tmp_path / "REPORT.md").is_file()
    assert s["stages"]["claims"]["figure"] == "claims"


def test_a_killed_run_keeps_finished_stages_and_shows_where_it_died(tmp_path):
    def killed(st, seconds):
        raise KeyboardInterrupt   # stands for SIGINT/SIGKILL from outside mid-stage

    with pytest.raises(KeyboardInterrupt):
        run_gpu(tmp_path, budget=60, dry_run=True, runners={**FAKES, "claims": killed},
                started_s_ago=0.0, echo=lambda *_: None, clock=_Clock())
    doc = json.loads((tmp_path / "summary.json").read_text())
    assert doc["stages"]["tests"]["status"] == "pass"
    assert doc["stages"]["claims"]["status"] == "running"
    assert "fewshot" not in doc["stages"]


def test_budget_spent_stages_are_skipped_with_a_reason(tmp_path):
    s = run_gpu(tmp_path, budget=8.0, dry_run=True, runners=FAKES, started_s_ago=4.0,
                echo=lambda *_: None, clock=_Clock())
    assert {e["status"] for e in s["stages"].values()} == {"skipped"}
    assert "under its minimum" in s["stages"]["tests"]["reason"]
    assert s["status"] == "fail"


def test_startup_counts_against_the_budget(tmp_path):
    got = {}

    def record(name):
        def runner(st, seconds):
            got[name] = seconds
            return {"status": "pass"}
        return runner

    runners = {n: record(n) for n in STAGES}
    run_gpu(tmp_path / "a", budget=100, dry_run=True, runners=runners, started_s_ago=0.0,
            echo=lambda *_: None, clock=_Clock())
    fresh = dict(got)
    run_gpu(tmp_path / "b", budget=100, dry_run=True, runners=runners, started_s_ago=40.0,
            echo=lambda *_: None, clock=_Clock())
    from verify.gpu.command import RESERVE_S, SHARES

    assert fresh["tests"] == pytest.approx(SHARES["tests"] * (100 - RESERVE_S))
    assert got["tests"] == pytest.approx(SHARES["tests"] * (100 - 40 - RESERVE_S))
    assert max(got.values()) <= 100 - 40 - RESERVE_S   # no stage may outlive the budget


def test_a_stage_that_crashes_fails_and_the_run_goes_on(tmp_path):
    def crash(st, seconds):
        raise RuntimeError("boom")

    s = run_gpu(tmp_path, budget=60, dry_run=True, runners={**FAKES, "tests": crash},
                started_s_ago=0.0, echo=lambda *_: None, clock=_Clock())
    assert s["stages"]["tests"]["status"] == "fail" and "boom" in s["stages"]["tests"]["reason"]
    assert s["stages"]["bandwidth"]["status"] == "pass" and s["status"] == "fail"


def test_rerun_of_one_stage_keeps_the_others(tmp_path):
    run_gpu(tmp_path, budget=60, dry_run=True, runners={**FAKES, "bandwidth": _fake("fail")},
            started_s_ago=0.0, echo=lambda *_: None, clock=_Clock())
    s = run_gpu(tmp_path, budget=60, dry_run=True, stages=["bandwidth"],
                runners={**FAKES, "bandwidth": _fake("pass", figure="again")},
                started_s_ago=0.0, echo=lambda *_: None, clock=_Clock())
    assert list(s["stages"]) == list(STAGES) and s["status"] == "pass"
    assert s["stages"]["bandwidth"]["figure"] == "again"
    assert s["stages"]["tests"]["figure"] == "tests"
    with pytest.raises(ValueError, match="stage"):
        run_gpu(tmp_path, stages=["nope"], dry_run=True, runners=FAKES)


def test_subprocess_timeout_kills_the_whole_process_group(tmp_path):
    """A timed-out stage is killed with its whole process group: the grandchild it started is
    gone afterwards (checked by its pid, not by how long anything took)."""
    pid_file = tmp_path / "grandchild.pid"
    child = tmp_path / "child.py"
    child.write_text(f"import subprocess, sys, time\n"
                     f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
                     f"open({str(pid_file)!r}, 'w').write(str(p.pid))\ntime.sleep(600)\n")
    rc, secs = _run_process([sys.executable, child], timeout=0.5, log=tmp_path / "x.log")
    assert rc is None
    if pid_file.is_file():   # (a very busy machine may time the child out before it got there)
        pid = int(pid_file.read_text())
        for _ in range(600):   # reaped by init once its group is killed
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
            time.sleep(0.1)
        else:
            raise AssertionError(f"the grandchild {pid} outlived its killed group")
    rc, _ = _run_process([sys.executable, "-c", "raise SystemExit(3)"], timeout=None,
                         log=tmp_path / "y.log")
    assert rc == 3 and "raise SystemExit(3)" in (tmp_path / "y.log").read_text()


def test_a_slow_stage_leaves_less_for_the_next_and_none_outlives_the_budget(tmp_path):
    """On the stand-in clock: a stage that uses 50 seconds shrinks what the others get."""
    clock, got = _Clock(), {}

    def runner(name, used):
        def run(st, seconds):
            got[name] = seconds
            clock.t += used
            return {"status": "pass"}
        return run

    from verify.gpu.command import RESERVE_S

    runners = {n: runner(n, 50.0 if n == "tests" else 0.0) for n in STAGES}
    run_gpu(tmp_path, budget=200, dry_run=True, runners=runners, started_s_ago=0.0,
            echo=lambda *_: None, clock=clock)
    left = 200 - RESERVE_S - 50
    assert got["claims"] == pytest.approx(allot("claims", left, list(STAGES)[1:]))
    # (unused seconds pass on to the stages after: each gets its share of what is left)
    assert got["bandwidth"] == pytest.approx(left) and max(got.values()) <= 200 - RESERVE_S


def test_write_json_is_atomic_and_readable(tmp_path):
    path = tmp_path / "d" / "s.json"
    write_json(path, {"a": 1})
    write_json(path, {"a": 2, "t": time})   # not JSON-able values are written as strings
    assert json.loads(path.read_text())["a"] == 2
    assert os.stat(path).st_mode & 0o644 == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["s.json"]


def test_process_age_is_measured():
    assert 0.0 < seconds_since_process_start() < 24 * 3600


def test_junit_figures_find_slow_and_failed_tests(tmp_path):
    xml = tmp_path / "j.xml"
    xml.write_text(
        '<testsuites><testsuite>'
        '<testcase classname="t" name="fast" time="0.5"/>'
        f'<testcase classname="t" name="slow" time="{MAX_TEST_SECONDS + 1}"/>'
        '<testcase classname="t" name="bad" time="1"><failure message="x"/></testcase>'
        '<testcase classname="t" name="skip" time="0"><skipped message="no CUDA"/></testcase>'
        '</testsuite></testsuites>')
    f = _junit_figures(xml)
    assert (f["passed"], f["failed"], f["skipped"], f["tests"]) == (2, 1, 1, 4)
    assert f["over_limit"] == ["t::slow"] and f["failures"] == ["t::bad"]
    assert f["slowest"][0]["test"] == "t::slow"


def test_tests_stage_fails_a_gpu_test_over_the_limit(tmp_path, monkeypatch):
    from verify.gpu import command

    def fake_pytest(argv, *, timeout, log, env=None):
        junit = argv[argv.index("--junitxml") + 1]
        junit.parent.mkdir(parents=True, exist_ok=True)
        junit.write_text(f'<testsuite><testcase classname="t" name="slow" '
                         f'time="{MAX_TEST_SECONDS + 5}"/></testsuite>')
        return 0, 1.0

    monkeypatch.setattr(command, "_run_process", fake_pytest)
    st = command._Stage(tmp_path, False, sys.executable, None)
    entry = command._stage_tests(st, 100)
    assert entry["status"] == "fail" and "t::slow" in entry["reason"]
    # and a run in which no gpu test ran is no pass on a GPU
    monkeypatch.setattr(command, "_run_process", lambda argv, **kw: (
        argv[argv.index("--junitxml") + 1].write_text(
            '<testsuite><testcase classname="t" name="s" time="0"><skipped/></testcase>'
            '</testsuite>'), (0, 1.0))[1])
    entry = command._stage_tests(st, 100)
    assert entry["status"] == "fail" and "no gpu test ran" in entry["reason"]


# ---------------------------------------------------------------- bandwidth
def test_spd_batch_spectrum():
    M = bandwidth.spd_batch(5, 12, "float64", "cpu")
    eig = torch.linalg.eigvalsh(M)
    assert M.shape == (5, 12, 12) and torch.allclose(M, M.transpose(1, 2))
    assert float(eig.min()) > 0.1 - 1e-12 and float(eig.max()) < 1.9 + 1e-12


def test_bandwidth_measures_and_agrees_on_cpu():
    doc = bandwidth.measure(size="dry", device="cpu")
    assert doc["agree"] and doc["judged"] is False and doc["passed"] is None
    for r in doc["batched"]:
        assert r["steps"]["solver"] == r["steps"]["plain"] == 30
        for k in ("fraction_of_plain", "fraction_of_copy", "plain_fraction_of_copy"):
            assert r[k] > 0 and r[k] == r[k]
    assert doc["small"]["step_time_ratio"] > 0


def test_bandwidth_agreement_fails_on_a_planted_defect(monkeypatch):
    """Negative control: a loop that computes something else is caught by the agreement check."""
    from verify.fewshot import cg_modes

    real = cg_modes.plain_cg

    def wrong(matvec, b, steps, **kw):
        return real(lambda x: 1.01 * matvec(x), b, steps, **kw)

    monkeypatch.setattr(cg_modes, "plain_cg", wrong)
    r = bandwidth.measure_batched(8, 16, "float64", "cpu", steps=30, repeats=1)
    assert not r["agree"] and r["relative_difference"] > r["allowed_difference"]


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="no CUDA device on this machine")
def test_bandwidth_instrument_on_cuda():
    doc = bandwidth.measure(size="dry", device="cuda")
    assert doc["agree"] and doc["judged"] is True and doc["passed"] in (True, False)
    assert all(r["bytes_per_second"]["copy"] > 0 for r in doc["batched"])
