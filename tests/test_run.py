"""A run is a function (verify.run), validated before any work; usage errors exit 2 and touch
nothing; the report is written as one set, so an interrupt, a full disk or a crash in the middle
of the swap leaves the previous report whole."""
from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path

import pytest

import verify
from verify import compare
from verify.cli import main
from verify.registry import CLAIMS, Claim
from verify.report import recover, validate, write_report_set
from verify.report import writer as writer_module


def _check(measured, bound=1.0, relation="<="):
    return compare("planted", "§0", "measured <= 1", measured, bound, relation=relation,
                   instance={"seed": 0})


@pytest.fixture
def planted(monkeypatch):
    def add(name, fn):
        monkeypatch.setitem(CLAIMS, name, Claim(name, f"planted {name}", "§0", "a planted claim",
                                                fn, None))
    return add


def _snapshot(folder: Path) -> dict:
    """{relative path: sha256} of every file below ``folder`` (hidden ones included)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def previous_report(planted, tmp_path):
    """An output folder holding a good report of one passing claim, and a few-shot folder
    the report must never touch."""
    planted("planted-fine", lambda ctx: [_check(0.5), _check(0.25)])
    out = tmp_path / "report"
    assert main(["claim", "planted-fine", "--out", str(out), "--no-progress"]) == 0
    (out / "fewshot").mkdir()
    (out / "fewshot" / "notes.txt").write_text("not part of the report")
    return out


# -- the function --------------------------------------------------------------------------------
def test_run_is_a_function_that_returns_the_document_and_writes_nothing(planted, tmp_path,
                                                                        monkeypatch):
    planted("planted-fine", lambda ctx: [_check(0.5), _check(2.0, relation=">")])
    monkeypatch.chdir(tmp_path)
    doc = verify.run(["planted-fine"], seed=3)
    validate(doc)
    assert doc["settings"]["seed"] == 3 and doc["settings"]["claims"] == ["planted-fine"]
    assert doc["claims"][0]["status"] == "PASS" and doc["figures"] == {}
    assert doc["iteration_counts"] is None          # a selection, not the complete run
    assert list(tmp_path.iterdir()) == []           # no out: nothing written


def test_compact_document_keeps_failures_and_worst_full_keeps_all(planted):
    planted("planted-mixed", lambda ctx: [_check(0.5), _check(0.9), _check(2.0), _check(0.1)])
    doc = verify.run(["planted-mixed"])
    rec = doc["claims"][0]
    assert rec["instances"] == 4 and rec["checks_omitted"] == 3
    assert [c["measured"] for c in rec["checks"]] == [2.0]        # the failing one
    assert rec["worst"]["measured"] == 2.0
    full = verify.run(["planted-mixed"], full_results=True)
    assert [c["measured"] for c in full["claims"][0]["checks"]] == [0.5, 0.9, 2.0, 0.1]
    validate(doc)
    validate(full)


def test_a_figure_drawn_from_claims_runs_every_claim_from_the_command_line():
    from verify.cli import build_parser, request_from_args

    req = request_from_args(build_parser().parse_args(["figure", "6"]))
    assert req["claims"] is None and req["figures"] == ["6"]
    req = request_from_args(build_parser().parse_args(["figure", "1"]))
    assert req["claims"] == [] and req["figures"] == ["1"]


# -- usage errors: exit 2, nothing run, nothing written ----------------------------------------
@pytest.mark.parametrize("extra, words", [
    (["--device", "bogus"], "--device"),
    (["--device", "cuda:99"], "cuda"),
    (["--seed", "-1"], "--seed"),
    (["--dtype", "float16"], "--dtype"),
    (["--array", "jax"], "--array"),
])
def test_usage_errors_exit_2_and_keep_the_previous_report(previous_report, extra, words, capsys,
                                                          monkeypatch):
    before = _snapshot(previous_report)
    import verify.runner as runner

    monkeypatch.setattr(runner, "run_claim", lambda *a: pytest.fail("a claim ran"))
    status = main(["run", "--quick", "--out", str(previous_report), "--no-progress", *extra])
    assert status == 2
    assert words in capsys.readouterr().err
    assert _snapshot(previous_report) == before


@pytest.mark.parametrize("where", ["file", "under-a-file", "dev-null"])
def test_an_unwritable_out_is_refused_before_any_work(where, tmp_path, capsys, monkeypatch):
    import verify.runner as runner

    monkeypatch.setattr(runner, "run_claim", lambda *a: pytest.fail("a claim ran"))
    a_file = tmp_path / "a-file"
    a_file.write_text("keep me")
    out = {"file": a_file, "under-a-file": a_file / "sub", "dev-null": Path("/dev/null")}[where]
    assert main(["run", "--quick", "--out", str(out), "--no-progress"]) == 2
    assert "--out" in capsys.readouterr().err
    assert a_file.read_text() == "keep me"


def test_an_unknown_claim_keeps_the_previous_report(previous_report, capsys):
    before = _snapshot(previous_report)
    assert main(["claim", "no-such-claim", "--out", str(previous_report)]) == 2
    assert "no-such-claim" in capsys.readouterr().err
    assert _snapshot(previous_report) == before


# -- the report is written as one set ----------------------------------------------------------
def _new_files():
    return {"REPORT.md": b"# new report\n", "results.json": b"{}\n",
            "results.schema.json": b"{}\n", "figures/fig1-cg-error.png": b"new png"}


def test_a_full_disk_while_writing_keeps_the_previous_report(previous_report, monkeypatch):
    before = _snapshot(previous_report)
    real = open
    calls = []

    def full_disk(path, mode="r", *args, **kwargs):
        if "x" in mode:
            calls.append(path)
            if len(calls) == 2:
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, mode, *args, **kwargs)

    monkeypatch.setattr(writer_module, "open", full_disk, raising=False)
    with pytest.raises(OSError, match="No space"):
        write_report_set(previous_report, _new_files())
    assert _snapshot(previous_report) == before          # no staging folder left either


@pytest.fixture
def journal(monkeypatch):
    """The fallback where the folder swap is not available (renames with a journal)."""
    monkeypatch.setattr(writer_module, "_swap_possible", lambda out: False)


@pytest.mark.parametrize("at", [1, 2, 3, 4, 5, 6])
def test_an_interrupt_inside_the_swap_keeps_the_previous_report(previous_report, monkeypatch, at,
                                                                journal):
    """The fallback's renames: (SIGINT is held back there, so this simulates an exception raised
    by the file system at the at-th rename) — the previous set comes back whole."""
    before = _snapshot(previous_report)
    real = os.replace
    count = [0]

    def failing(src, dst):
        count[0] += 1
        if count[0] == at:
            raise KeyboardInterrupt
        return real(src, dst)

    monkeypatch.setattr(writer_module.os, "replace", failing)
    with pytest.raises(KeyboardInterrupt):
        write_report_set(previous_report, _new_files())
    monkeypatch.setattr(writer_module.os, "replace", real)
    assert _snapshot(previous_report) == before


@pytest.mark.parametrize("at", [2, 4, 6])
def test_a_crash_inside_the_swap_is_undone_by_the_next_write(previous_report, monkeypatch, at,
                                                             journal):
    """The fallback, its process killed mid-swap, runs no handler: the journal stays, and
    recover() (called by the next write) restores the previous set exactly (the folder swap
    needs no recovery: tests/test_faults.py kills it at every step)."""
    before = _snapshot(previous_report)
    real_replace, real_recover = os.replace, writer_module.recover
    count = [0]

    def dying(src, dst):
        count[0] += 1
        if count[0] == at:
            raise SystemExit("killed")
        return real_replace(src, dst)

    monkeypatch.setattr(writer_module.os, "replace", dying)
    monkeypatch.setattr(writer_module, "recover", lambda out: False)   # a kill runs no handler
    with pytest.raises(SystemExit):
        write_report_set(previous_report, _new_files())
    monkeypatch.setattr(writer_module.os, "replace", real_replace)
    assert (previous_report / writer_module.JOURNAL).is_file()
    assert real_recover(previous_report) is True
    after = {k: v for k, v in _snapshot(previous_report).items() if not k.startswith(".")}
    assert after == before


def test_a_new_report_replaces_the_previous_one_as_a_whole(previous_report):
    (previous_report / "figures").mkdir(exist_ok=True)
    (previous_report / "figures" / "stale.png").write_bytes(b"old")
    write_report_set(previous_report, _new_files())
    snap = _snapshot(previous_report)
    assert set(snap) == {"REPORT.md", "results.json", "results.schema.json",
                         "figures/fig1-cg-error.png", "fewshot/notes.txt"}
    assert (previous_report / "REPORT.md").read_bytes() == b"# new report\n"
    assert recover(previous_report) is False


def test_files_outside_the_report_set_are_refused(planted, tmp_path):
    from verify.report import render_report_set

    planted("planted-fine", lambda ctx: [_check(0.5)])
    doc = verify.run(["planted-fine"])
    with pytest.raises(ValueError, match="outside the report set"):
        render_report_set(doc, {"elsewhere/x.png": b""})
    with pytest.raises(ValueError, match="outside the report set"):
        write_report_set(tmp_path / "out", {"elsewhere/x.png": b""})
    assert list(tmp_path.iterdir()) == []               # refused before touching anything


# -- run from a source tree that was never installed -------------------------------------------
def test_version_falls_back_to_the_source_tree(monkeypatch, planted):
    from importlib import metadata

    from verify.report import results, tool_version

    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(results.metadata, "version", missing)
    text = (Path(results.__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert f'version = "{tool_version()}"' in text
    assert results.environment()["packages"]["imaml-verify"] == tool_version()
    planted("planted-fine", lambda ctx: [_check(0.5)])
    doc = verify.run(["planted-fine"])
    assert doc["tool"]["version"] == tool_version()
    json.dumps(doc)


def test_regenerating_a_report_changes_nothing_but_run_json(tmp_path):
    """Dates and timings live in run.json: the same run twice gives byte-identical results.json,
    REPORT.md and figures (so a committed report changes only when the findings do)."""
    argv = ["run", "--quick", "--claim", "lemma1", "--claim", "cg-bound", "--figure", "1",
            "--no-progress"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    a = _snapshot(tmp_path)
    assert main([*argv, "--out", str(tmp_path)]) == 0
    b = _snapshot(tmp_path)
    assert set(a) == set(b) and "run.json" in a and "figures/fig1-cg-error.png" in a
    assert {k for k in a if a[k] != b[k]} == {"run.json"}
    timing = json.loads((tmp_path / "run.json").read_text())
    assert set(timing["claims_s"]) == {"lemma1", "cg-bound"} and timing["elapsed_s"]["total"] > 0


def test_sigint_is_held_back_during_the_swap(python_ctrl_c):
    import signal

    seen = []
    with pytest.raises(KeyboardInterrupt):
        with writer_module._signals_held():
            os.kill(os.getpid(), signal.SIGINT)
            seen.append("after the kill, still inside")
    assert seen == ["after the kill, still inside"]


# -- the same document whatever the parallelism ------------------------------------------------
# certificate and lemma3 build the same grid instances (their units are run together, the
# instance built once); lemma1's grid units and its far unit; two claims that are one unit
PARALLEL_ARGS = dict(claims=["lemma1", "certificate", "lemma3", "cg-finite-termination",
                             "reptile-counterexample"],
                     figures=["1"], quick=True, full_results=True)


def _without_timings(doc):
    from verify.report import split_timing

    return split_timing(doc)[0]


@pytest.fixture(scope="module")
def serial_run():
    return verify.run(**PARALLEL_ARGS)


@pytest.fixture(scope="module")
def serial_doc(serial_run):
    return _without_timings(serial_run)


class _RecordingBar:
    """Stands in for the progress bar: what a parallel run reports as its units finish."""

    def __init__(self, total):
        self.total, self.n, self.labels, self.closed = total, 0, [], False

    def set_postfix_str(self, label):
        self.labels.append(label)

    def update(self):
        self.n += 1

    def close(self):
        self.closed = True


@pytest.fixture
def recorded_bars(monkeypatch):
    import verify.runner as runner

    bars = []
    monkeypatch.setattr(runner, "_progress_bar",
                        lambda total, progress: bars.append(_RecordingBar(total)) or bars[-1])
    return bars


def _plans():
    from verify.registry import RunContext

    ctx = RunContext(quick=True)
    return {name: CLAIMS[name].plan(ctx) for name in PARALLEL_ARGS["claims"]}


def _shared_units():
    """Units of the selected claims that build an instance another selected claim's unit builds."""
    seen = {}
    for plan in _plans().values():
        for u in plan:
            if u.shares is not None:
                seen[u.shares] = seen.get(u.shares, 0) + 1
    return sum(n - 1 for n in seen.values())


def _assert_every_unit_reported(bars):
    """One bar; moved once per work item (each claim's units, those that build the same
    instance together) and figure, each named as it finished, then closed."""
    (bar,) = bars
    plans = _plans()
    units = sum(map(len, plans.values()))
    assert _shared_units() > 0 and units > 2 * len(plans)   # the grids are split and shared
    assert bar.total == bar.n == units - _shared_units() + len(PARALLEL_ARGS["figures"])
    assert len(bar.labels) == bar.n
    labels = [u.label or name for name, plan in plans.items() for u in plan]
    assert set(bar.labels) <= set(labels) | {f"fig{f}" for f in PARALLEL_ARGS["figures"]}
    assert {f"fig{f}" for f in PARALLEL_ARGS["figures"]} <= set(bar.labels)
    assert {"lemma1 far instances", "cg-finite-termination"} <= set(bar.labels)
    assert bar.closed


def _assert_execution(doc, executor, retried=0):
    plans = _plans()
    ex = doc["execution"]
    assert ex["executor"] == executor and ex["workers"] == 2
    assert ex["units"] == sum(map(len, plans.values()))
    assert ex["work_items"] == ex["units"] - _shared_units() + len(PARALLEL_ARGS["figures"])
    if executor == "dask":
        assert ex["retried"] == retried == len(ex["retried_items"])


def test_a_serial_run_says_so(serial_run):
    assert serial_run["execution"] == {"executor": "serial"}


def test_local_processes_give_the_same_document(serial_doc, recorded_bars):
    doc = verify.run(**PARALLEL_ARGS, jobs=2, progress=True)
    assert _without_timings(doc) == serial_doc
    _assert_every_unit_reported(recorded_bars)
    _assert_execution(doc, "processes")


def test_a_dask_cluster_gives_the_same_document(serial_doc, recorded_bars):
    distributed = pytest.importorskip("distributed", reason="the optional 'dask' extra is missing")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        doc = verify.run(**PARALLEL_ARGS, dask=cluster.scheduler_address, progress=True)
    assert _without_timings(doc) == serial_doc
    _assert_every_unit_reported(recorded_bars)
    _assert_execution(doc, "dask")


def test_a_worker_killed_mid_item_is_retried_and_the_document_is_the_same(serial_doc, tmp_path):
    """The first work item a worker starts kills that worker (SIGKILL, once: a flag file)
    after its start was logged; the scheduler starts the item again on a worker (the nanny
    restarts the dead one), the document is the serial one, and it says one item was retried."""
    distributed = pytest.importorskip("distributed", reason="the optional 'dask' extra is missing")
    flag = str(tmp_path / "killed")

    class KillOnce(distributed.WorkerPlugin):
        def setup(self, worker):
            import os
            import signal
            import time

            import verify.runner as runner

            original = runner._run_item_here

            def dying(*args, **kwargs):
                try:
                    fd = os.open(flag, os.O_CREAT | os.O_EXCL)
                except FileExistsError:
                    return original(*args, **kwargs)
                os.close(fd)
                time.sleep(1.0)     # mid-item: its start has reached the scheduler
                os.kill(os.getpid(), signal.SIGKILL)

            runner._run_item_here = dying

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            client.register_plugin(KillOnce())
            doc = verify.run(**PARALLEL_ARGS, dask=client)
    assert os.path.exists(flag)                      # a worker did die mid-item
    assert _without_timings(doc) == serial_doc
    assert doc["execution"]["retried"] == 1 and len(doc["execution"]["retried_items"]) == 1


@pytest.mark.parametrize("kwargs, words", [(dict(jobs=0), "--jobs"),
                                           (dict(jobs=2, dask="tcp://x:1"), "not both")])
def test_bad_parallel_options_are_usage_errors(kwargs, words):
    with pytest.raises(verify.UsageError, match=words):
        verify.run([], **kwargs)


def test_scale_widens_the_grids_and_is_recorded(planted):
    from verify.checks._common import SCALE_REPEATS, grid
    from verify.registry import RunContext

    base, wide = grid(RunContext()), grid(RunContext(scale=True))
    assert len(wide) > SCALE_REPEATS * len(base) / 2
    assert max(d for d, *_ in wide) == 2000 and max(k for _, k, *_ in wide) == 1e6
    assert set(base) <= set(wide)
    with pytest.raises(verify.UsageError, match="nothing to run"):
        verify.run([], scale=True)
    planted("planted-fine", lambda ctx: [_check(0.5)])
    doc = verify.run(["planted-fine"], scale=True)
    assert doc["settings"]["scale"] is True
    with pytest.raises(verify.UsageError, match="--scale"):
        verify.run(["lemma1"], quick=True, scale=True)


def test_third_party_results_join_the_report(planted, tmp_path):
    """When `make check-peers` has left peers/peers.json, REPORT.md has its section."""
    planted("planted-fine", lambda ctx: [_check(0.5)])
    (tmp_path / "peers").mkdir()
    row = {"implementation": "torchopt solve_normal_cg", "mode": "converged", "verdict": "FAIL",
           "measured": 0.6, "allowed": 1e-12, "relative_error": 0.65,
           "issue_instance_relative_error": 0.654, "diagnosis": "CG on the normal equations"}
    (tmp_path / "peers" / "peers.json").write_text(json.dumps({"rows": [row]}))
    assert main(["claim", "planted-fine", "--out", str(tmp_path), "--no-progress"]) == 0
    report = (tmp_path / "REPORT.md").read_text()
    assert "## Third-party implementations" in report and "normal equations" in report
    doc = json.loads((tmp_path / "results.json").read_text())
    validate(doc)
    assert doc["third_party"]["rows"][0]["verdict"] == "FAIL"


def test_an_interrupt_swallowed_by_a_finalizer_still_stops_the_run(planted, tmp_path):
    """Ctrl-C that lands in a finalizer is printed as 'ignored' by Python and the run would go
    on; the command records it and stops at the next claim, writing nothing."""
    import gc
    import signal

    from verify import _interrupt

    class Swallows:
        def __del__(self):
            _interrupt._on_sigint(signal.SIGINT, None)     # raises inside a finalizer

    def claim_that_swallows(ctx):
        Swallows()
        gc.collect()
        return [_check(0.5)]

    planted("planted-swallow", claim_that_swallows)
    planted("planted-after", lambda ctx: pytest.fail("the run went on after the interrupt"))
    previous = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        with _interrupt.recorded():
            verify.run(["planted-swallow", "planted-after"], out=tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert signal.getsignal(signal.SIGINT) is previous and not _interrupt.pending()
