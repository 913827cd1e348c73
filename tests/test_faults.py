"""Fault injection: the checker and the run hold against careless and hostile input.

Every probe of issue 17 is here, each asserting one of three outcomes: the input is flagged with
a clear diagnosis, refused with exit status 2 and one line, or survived with the previous
evidence whole. The hostile implementations never return, exit, corrupt their inputs or return
the wrong kind of array; the report writes are killed (SIGKILL, in a child process) at every
named step, paused mid-swap while another run starts, and hit by a full disk (an injected
ENOSPC). No verdict depends on wall-clock time: a hung call here never returns at all, and the
time limits only decide how long the test waits for that.
"""
from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

from _checker_catalogue import textbook_solve
from theory import LogisticTask, QuadraticTask
from verify.checker import Instance, build, check_cg, check_meta_gradient
from verify.checker import _calling
from verify.checker.core import CheckerArgumentError, _call
from verify.cli import main
from verify.registry import CLAIMS, Claim
from verify.report import writer as writer_module
from verify.report.writer import OutBusyError, ReportWriteError, write_report_set

REPO = Path(__file__).resolve().parents[1]
SMALL = Instance(family="planted", dim=5, kappa=30.0, lam=0.37, floor=0.5, seed=3)
FAST = dict(corners=False, max_examples=3)          # a few instances: enough for a verdict


def _solve(task, theta):
    return textbook_solve(task, theta)


# -- the checker isolates what it calls -----------------------------------------------------------
def corrupts_A(task, theta):                          # the "C = task.A; C += λI; ..."
    C = task.A
    C += task.lam * np.eye(task.dim)
    phi = np.linalg.solve(C, task.lam * theta - task.b)
    return task.lam * np.linalg.solve(C, task.A_query @ phi + task.b_query)


def scales_A(task, theta):                            # task.A *= 2, then the right answer
    task.A *= 2
    return _solve(task, theta)


def steps_theta(task, theta):                         # θ changed in place, the right answer
    theta *= 2.0
    return _solve(task, theta / 2.0)


@pytest.mark.parametrize("fn, name", [(corrupts_A, "task.A"), (scales_A, "task.A"),
                                      (steps_theta, "theta")])
def test_an_implementation_that_changes_its_input_fails_saying_so(fn, name):
    report = check_meta_gradient(fn, **FAST)
    assert not report.passed
    text = str(report.diagnosis)
    assert f"changed its input {name} in place" in text, report
    assert "CG on the paper's defaults" not in text and "b in place of b_query" not in text


def test_each_call_gets_its_own_copies_and_the_checker_keeps_its_own():
    torch = pytest.importorskip("torch")
    task, theta = build(SMALL, backend="torch")
    before = {k: v.clone() for k, v in _calling.task_inputs(task, theta).items()}
    seen = []

    def corrupting(t, th):                            # torch has no read-only tensors
        seen.append((t, th))
        t.A.mul_(2.0)
        th.add_(1.0)
        return torch.zeros(t.dim, dtype=t.A.dtype)

    g, error = _call(corrupting, task, theta)
    assert g is None and "changed its inputs task.A and theta in place" in error
    after = _calling.task_inputs(task, theta)
    assert all(torch.equal(before[k], after[k]) for k in before)   # the checker's copy is intact
    _call(corrupting, task, theta)
    assert seen[0][0] is not seen[1][0] and seen[0][0].A is not seen[1][0].A


def test_torch_mutation_is_found_by_comparing_after_the_call():
    pytest.importorskip("torch")

    def torch_corrupts(task, theta):
        C = task.A
        C.add_(task.lam * __import__("torch").eye(task.dim, dtype=C.dtype))
        phi = __import__("torch").linalg.solve(C, task.lam * theta - task.b)
        return task.lam * __import__("torch").linalg.solve(C, task.A_query @ phi + task.b_query)

    report = check_meta_gradient(torch_corrupts, backend="torch", families=("planted",), **FAST)
    assert not report.passed and "changed its input task.A in place" in str(report.diagnosis)


def test_negative_control_without_the_comparison_the_torch_corruption_passes(monkeypatch):
    """A mutant of the checker that never sees a changed input lets the corrupting
    implementation pass: the test above is what kills it."""
    pytest.importorskip("torch")
    monkeypatch.setattr(_calling, "_same", lambda copy, original: True)
    torch = __import__("torch")

    def torch_corrupts(task, theta):
        C = task.A
        C.add_(task.lam * torch.eye(task.dim, dtype=C.dtype))
        phi = torch.linalg.solve(C, task.lam * theta - task.b)
        return task.lam * torch.linalg.solve(C, task.A_query @ phi + task.b_query)

    assert check_meta_gradient(torch_corrupts, backend="torch", families=("planted",),
                               **FAST).passed


@pytest.mark.parametrize("make, words", [
    (lambda g: g + 1e6j, "complex array (dtype complex128)"),
    (lambda g: np.round(g).astype(np.int64), "integer array (dtype int64)"),
    (lambda g: g.astype(object), "object array"),
    (lambda g: g > 0, "boolean array"),
    (lambda g: list(g), "returned list, not an array"),
])
def test_outputs_that_are_not_real_arrays_are_refused_by_name(make, words):
    report = check_meta_gradient(lambda task, theta: make(_solve(task, theta)), **FAST)
    assert not report.passed and words in str(report.diagnosis), report


def test_negative_control_without_the_dtype_check_a_complex_answer_passes(monkeypatch):
    monkeypatch.setattr(_calling, "_KINDS", {})
    real = _calling.to_f64

    def lenient(out):
        out = np.asarray(getattr(out, "gradient", out))
        with np.errstate(all="ignore"), __import__("warnings").catch_warnings():
            __import__("warnings").simplefilter("ignore")
            return np.real(out).astype(np.float64)

    monkeypatch.setattr(_calling, "to_f64", lenient)
    assert check_meta_gradient(lambda t, th: _solve(t, th) + 1e6j, **FAST).passed
    monkeypatch.setattr(_calling, "to_f64", real)
    assert not check_meta_gradient(lambda t, th: _solve(t, th) + 1e6j, **FAST).passed


def test_sys_exit_and_its_own_keyboard_interrupt_fail_the_call_not_the_checker():
    def exits(task, theta):
        sys.exit(3)

    def interrupts(task, theta):
        raise KeyboardInterrupt

    report = check_meta_gradient(exits, **FAST)
    assert not report.passed and "called sys.exit(3)" in str(report.diagnosis)
    report = check_meta_gradient(interrupts, **FAST)
    assert not report.passed and "KeyboardInterrupt itself" in str(report.diagnosis)


def test_a_real_ctrl_c_still_stops_the_check(python_ctrl_c):
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals reach the main thread only")

    def pressed(task, theta):
        os.kill(os.getpid(), signal.SIGINT)           # the user's Ctrl-C, during the call
        return _solve(task, theta)

    with pytest.raises(KeyboardInterrupt):
        check_meta_gradient(pressed, **FAST)


def _never_returns(calls):
    def hangs(task, theta):
        calls.append(1)
        threading.Event().wait()                      # forever (no timeout)
    return hangs


def test_a_call_that_never_returns_fails_and_the_check_stops_calling_it():
    calls = []
    report = check_meta_gradient(_never_returns(calls), timeout=0.2, corners=True, max_examples=20)
    assert not report.passed and "did not return within 0.2 s" in str(report.diagnosis)
    assert len(calls) == 1 and report.settings["not_evaluated"] > 0
    assert "stopped calling the implementation" in str(report)


def test_the_time_limit_holds_off_the_main_thread_too():
    calls, out = [], {}
    worker = threading.Thread(target=lambda: out.setdefault(
        "report", check_meta_gradient(_never_returns(calls), timeout=0.2, **FAST)))
    worker.start()
    worker.join()
    assert not out["report"].passed and "did not return within" in str(out["report"].diagnosis)
    assert len(calls) == 1


def test_check_cg_is_isolated_and_bounded_too():
    def writes_rhs(matvec, rhs, m):                   # r = rhs; r -= ...: corrupts the caller's
        r = rhs
        r -= 0.5 * matvec(rhs)
        return rhs - r

    report = check_cg(writes_rhs, (1, 2), max_examples=2)
    assert not report.passed and "changed its input rhs in place" in str(report.diagnosis)
    calls = []

    def hangs(matvec, rhs, m):
        calls.append(1)
        threading.Event().wait()

    report = check_cg(hangs, (1,), max_examples=5, timeout=0.2)
    assert not report.passed and len(calls) == 1


@pytest.mark.parametrize("kwargs, words", [
    (dict(fn=42), "fn must be callable"),
    (dict(fn=lambda task: 0), "fn must be callable as fn(task, theta)"),
    (dict(fn=textbook_solve, inner_steps=5, cg_steps=2), "inner_steps=K, cg_steps=M"),
    (dict(corners=False, max_examples=0), "evaluates no instance"),
    (dict(seed=2**70), "seed must be an integer from 0 to 2**32 - 1"),
    (dict(seed=-1), "seed"), (dict(seed=1.5), "seed must be an integer"),
    (dict(max_examples=-1), "max_examples"), (dict(max_examples=True), "max_examples"),
    (dict(families="planted"), "got the string 'planted'"),
    (dict(families=["planted", "spherical"]), "families"),
    (dict(timeout=0), "timeout"), (dict(timeout="60"), "timeout"),
    (dict(max_dim=0), "max_dim"), (dict(max_kappa=0.5), "max_kappa"),
    (dict(backend="jax"), "backend"), (dict(dtype="float16"), "dtype"),
    (dict(corners="yes"), "corners"),
])
def test_every_option_is_checked_before_any_work(kwargs, words, monkeypatch):
    import verify.checker.core as core

    monkeypatch.setattr(core, "build", lambda *a, **k: pytest.fail("an instance was built"))
    kwargs = dict(kwargs)
    fn = kwargs.pop("fn", textbook_solve)
    with pytest.raises(CheckerArgumentError, match=None) as info:
        check_meta_gradient(fn, **kwargs)
    assert words in str(info.value)
    assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize("steps", ["123", [1.5], [0], [], [True]])
def test_check_cg_steps_are_checked_before_any_work(steps):
    with pytest.raises(CheckerArgumentError, match="steps"):
        check_cg(lambda mv, rhs, m: rhs, steps)


def test_a_check_that_evaluates_nothing_does_not_pass(monkeypatch):
    import verify.checker.core as core

    monkeypatch.setattr(core, "corner_instances", lambda **kw: [])
    report = check_meta_gradient(textbook_solve, max_examples=0)
    assert report.instances == 0 and not report.passed
    assert "nothing was checked" in str(report.diagnosis)


def test_a_quadratic_only_function_on_logistic_tasks_is_told_why():
    pytest.importorskip("torch")
    report = check_meta_gradient(textbook_solve, backend="torch", families=("logistic",),
                                 max_examples=1)
    assert not report.passed
    text = str(report.diagnosis)
    assert "LogisticTask" in text and "--family planted --family paper" in text
    default = check_meta_gradient(textbook_solve, families=None, **FAST)
    assert "task families: planted, paper (the default with backend='numpy')" in str(default)


# -- the command line: exit codes that mean one thing ---------------------------------------------
HOSTILE = textwrap.dedent("""
    import os, sys, time
    import numpy as np
    from _checker_catalogue import textbook_solve as good
    def os_exit(task, theta):
        os._exit(7)
    def stubborn(task, theta):          # swallows the checker's time limit
        while True:
            try:
                time.sleep(100)
            except BaseException:
                pass
    def sleeps(task, theta):
        time.sleep(1e6)
    def fomaml(task, theta):
        C = task.A + task.lam * np.eye(task.dim)
        return task.A_query @ np.linalg.solve(C, task.lam * theta - task.b) + task.b_query
""")
MODULES = {"hostile_impl": HOSTILE, "syntax_error_mod": "def f(:\n",
           "raises_at_import": "raise RuntimeError('boom at import')\n",
           "exits_at_import": "import sys\nsys.exit(5)\n",
           "os_exit_at_import": "import os\nos._exit(4)\n",
           "missing_dep": "import no_such_dependency_xyz\n"}


@pytest.fixture
def modules(tmp_path, monkeypatch):
    for name, text in MODULES.items():
        (tmp_path / f"{name}.py").write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("module, words, where", [
    ("syntax_error_mod", "SyntaxError: invalid syntax", "child"),
    ("os_exit_at_import", "importing it ended the process (exit status 4", "child"),
    ("raises_at_import", "RuntimeError: boom at import", "here"),
    ("exits_at_import", "importing it called sys.exit(5)", "here"),
    ("missing_dep", "ModuleNotFoundError: No module named 'no_such_dependency_xyz'", "here"),
    ("no_such_module_at_all", "No module named 'no_such_module_at_all'", "here"),
])
def test_a_module_that_cannot_be_imported_is_a_usage_error_in_one_line(modules, module, words,
                                                                      where, capsys):
    """In the child process (the default) and here (--in-process, the same load())."""
    extra = ["--in-process"] if where == "here" else []
    assert main(["check", f"{module}:f", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err and f"cannot import '{module}'" in err


@pytest.mark.parametrize("argv, words", [
    (["--seed", str(2**70)], "seed must be an integer from 0 to 2**32 - 1"),
    (["--budget", "3"], "--budget"), (["--cg", "1,x"], "--cg"),
    (["--max-examples", "0", "--family", "planted", "--budget", "2,2", "--cg", "1"], "exclude"),
])
def test_bad_options_exit_2_with_one_line(modules, argv, words, capsys):
    assert main(["check", "hostile_impl:good", "--in-process", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err


def test_the_child_process_answers_for_an_implementation_that_ends_it(modules, capsys):
    assert main(["check", "hostile_impl:os_exit", "--max-examples", "1"]) == 1
    out = capsys.readouterr().out
    assert "ended the checker's process (exit status 7" in out and "Instance(" in out
    assert "reproduce: from verify.checker import Instance, build" in out


def test_a_call_that_swallows_the_time_limit_is_ended_by_the_parent(modules, capsys):
    assert main(["check", "hostile_impl:stubborn", "--timeout", "0.3", "--max-examples", "1"]) == 1
    out = capsys.readouterr().out
    assert "did not stop at the checker's time limit" in out and "Instance(" in out


def test_a_hung_call_fails_from_the_shell(modules, capsys):
    assert main(["check", "hostile_impl:sleeps", "--timeout", "0.3", "--max-examples", "1"]) == 1
    assert "did not return within 0.3 s" in capsys.readouterr().out


def test_the_shell_report_points_to_json_not_to_a_python_attribute(modules, capsys):
    assert main(["check", "hostile_impl:fomaml", "--in-process", "--max-examples", "1"]) == 1
    out = capsys.readouterr().out
    assert ".failures" not in out and "more (run with --json" in out
    assert main(["check", "hostile_impl:fomaml", "--max-examples", "1", "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)       # the child's stdout, passed on whole
    assert doc["passed"] is False and doc["failures"]


# -- tasks cannot go stale ------------------------------------------------------------------------
def _psd(d=5, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    Q = np.linalg.qr(rng.standard_normal((d, d)))[0]
    return scale * ((Q * np.arange(1.0, d + 1)) @ Q.T)


def test_task_arrays_are_read_only_copies_so_constants_describe_the_data():
    A = _psd()
    t = QuadraticTask(A, np.ones(5), _psd(seed=1), np.zeros(5), 1.0)
    beta = t.constants(np.zeros(5)).beta
    with pytest.raises(ValueError, match="read-only"):
        t.A *= 100
    A *= 100                                         # the caller's own array: not the task's
    assert t.constants(np.zeros(5)).beta == beta == t.curvature_bounds()[0]
    assert math.isclose(beta, 5.0 + 1.0)


def test_a_torch_task_changed_in_place_refuses_its_stale_constants():
    torch = pytest.importorskip("torch")
    t = QuadraticTask(*(torch.tensor(a) for a in (_psd(), np.ones(5), _psd(seed=1),
                                                  np.zeros(5))), 1.0)
    t.constants(torch.zeros(5, dtype=torch.float64))
    t.A.mul_(100)
    for call in (lambda: t.constants(torch.zeros(5, dtype=torch.float64)), t.curvature_bounds):
        with pytest.raises(ValueError, match="task.A was changed in place"):
            call()
    X = torch.ones(4, 3, dtype=torch.float64)
    y = torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=torch.float64)
    lt = LogisticTask(X, y, X.clone(), y.clone(), 0.5)
    lt.X.add_(1.0)
    with pytest.raises(ValueError, match="task.X was changed in place"):
        lt.curvature_bounds()


def test_task_attributes_cannot_be_rebound_nor_its_arrays_made_writable_again():
    """Rebinding (``t.A = 100 * t.A``, ``t.lam = '1'``) and flipping the flag back
    (``t.A.flags.writeable = True``) left constants() describing other data; now they raise."""
    t = QuadraticTask(_psd(), np.ones(5), _psd(seed=1), np.zeros(5), 1.0)
    beta = t.constants(np.zeros(5)).beta
    for name, value in (("A", 100 * t.A), ("lam", "1"), ("lam", 2.0), ("b", np.zeros(5))):
        with pytest.raises(AttributeError, match=f"QuadraticTask.{name} cannot be changed"):
            setattr(t, name, value)
    with pytest.raises(AttributeError, match="cannot be deleted"):
        del t.A
    with pytest.raises(ValueError):
        t.A.flags.writeable = True
    assert t.constants(np.zeros(5)).beta == beta and t.lam == 1.0
    lt = LogisticTask(np.ones((4, 3)), np.array([1.0, -1, 1, -1]), np.ones((2, 3)),
                      np.array([1.0, -1]), 0.5)
    with pytest.raises(AttributeError, match="LogisticTask.X cannot be changed"):
        lt.X = np.zeros((4, 3))
    stack = QuadraticTask.stack([t, t])
    with pytest.raises(AttributeError):
        stack[1].lam = 3.0


def test_a_torch_task_keeps_its_own_clone_of_the_callers_tensors():
    """The README says tasks keep copies: a torch task does not share memory with the caller, so
    changing the caller's tensor changes neither its answers nor its constants."""
    torch = pytest.importorskip("torch")
    A = torch.tensor(_psd())
    t = QuadraticTask(A, torch.ones(5, dtype=torch.float64), torch.tensor(_psd(seed=1)),
                      torch.zeros(5, dtype=torch.float64), 1.0)
    theta = torch.zeros(5, dtype=torch.float64)
    g, beta = t.meta_gradient(theta).clone(), t.constants(theta).beta
    assert t.A.data_ptr() != A.data_ptr()
    A.mul_(100)
    assert torch.equal(t.meta_gradient(theta), g) and t.constants(theta).beta == beta


@pytest.mark.parametrize("scale", [1e200, 1e-200])
def test_symmetric_checks_scale_before_they_compare(scale):
    A = _psd(scale=scale)
    t = QuadraticTask(A, np.zeros(5), A.copy(), np.zeros(5), 1.0)
    np.testing.assert_allclose(t._eig_A, scale * np.arange(1.0, 6.0), rtol=1e-12)
    bad = A.copy()
    bad[0, 1] += 1e-3 * scale
    with pytest.raises(ValueError, match="must be symmetric") as info:
        QuadraticTask(bad, np.zeros(5), A.copy(), np.zeros(5), 1.0)
    assert "inf" not in str(info.value) and "nan" not in str(info.value)


@pytest.mark.parametrize("lam", ["1", True, np.bool_(True), 1 + 0j, None, [1.0]])
def test_numeric_arguments_of_the_wrong_type_are_refused(lam):
    with pytest.raises(TypeError, match="lam must be a real number"):
        QuadraticTask(_psd(), np.zeros(5), _psd(), np.zeros(5), lam)
    with pytest.raises(TypeError, match="lam must be a real number"):
        LogisticTask(np.ones((2, 2)), np.ones(2), np.ones((2, 2)), np.ones(2), lam)
    with pytest.raises(TypeError, match="psd_rtol"):
        QuadraticTask(_psd(), np.zeros(5), _psd(), np.zeros(5), 1.0, psd_rtol="1e-3")


def test_the_seed_bound_is_what_every_backend_accepts():
    torch = pytest.importorskip("torch")
    from validation import MAX_SEED, check_seed

    assert check_seed(MAX_SEED) == MAX_SEED
    np.random.seed(MAX_SEED)
    np.random.default_rng(MAX_SEED + 100)
    torch.Generator().manual_seed(MAX_SEED + 100)  # the suite adds small offsets
    with pytest.raises(ValueError):
        np.random.seed(MAX_SEED + 1)                 # the bound is tight for NumPy's legacy seeding
    with pytest.raises(ValueError):
        check_seed(MAX_SEED + 1)
    with pytest.raises((RuntimeError, ValueError)):
        torch.manual_seed(2**70)                     # what the run died of


# -- the run: options validated before any work ----------------------------------------------------
def _check(measured):
    from verify import compare

    return compare("planted", "§0", "measured <= 1", measured, 1.0, instance={"seed": 0})


@pytest.fixture
def planted(monkeypatch):
    def add(name, fn):
        monkeypatch.setitem(CLAIMS, name, Claim(name, f"planted {name}", "§0", "a planted claim",
                                                fn, None))
    return add


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def previous(planted, tmp_path):
    """A folder with a whole report of one passing claim and another command's folder."""
    planted("planted-fine", lambda ctx: [_check(0.5)])
    out = tmp_path / "reports"
    assert main(["claim", "planted-fine", "--out", str(out), "--no-progress"]) == 0
    (out / "fewshot").mkdir()
    (out / "fewshot" / "results.json").write_text('{"complete": true}')
    return out


@pytest.mark.parametrize("extra, words", [
    (["--seed", str(2**70)], "--seed must be an integer from 0 to 2**32 - 1"),
    (["--seed", str(2**32)], "--seed"),
    (["--dask", "nonsense"], "--dask nonsense: not a scheduler address"),
    (["--dask", ""], "--dask needs a scheduler address"),
    (["--dask", "http://x:1"], "unknown protocol 'http'"),
])
def test_run_options_are_refused_with_exit_2_and_one_line(previous, extra, words, capsys,
                                                          monkeypatch):
    import verify.runner as runner

    before = _snapshot(previous)
    monkeypatch.setattr(runner, "run_claim", lambda *a: pytest.fail("a claim ran"))
    assert main(["run", "--out", str(previous), "--no-progress", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err
    assert _snapshot(previous) == before


def test_an_unreachable_scheduler_is_a_usage_error(previous, capsys, monkeypatch):
    pytest.importorskip("distributed")
    import verify.runner as runner

    before = _snapshot(previous)
    monkeypatch.setattr(runner._Dask, "CONNECT_TIMEOUT_S", 0.5)
    monkeypatch.setattr(runner, "run_claim", lambda *a: pytest.fail("a claim ran"))
    assert main(["run", "--out", str(previous), "--no-progress", "--dask",
                 "tcp://127.0.0.1:1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot reach the scheduler" in err
    assert _snapshot(previous) == before


@pytest.mark.parametrize("args, kwargs, words", [
    (([],), {}, "nothing to run"),
    (("planted-fine",), {}, "got the string 'planted-fine'"),
    ((None, "1"), {}, "figures must be a list"),
    (([1],), {}, "claims must be a list of claim names"),
    ((["planted-fine"],), dict(out=123), "--out must be a folder path"),
    ((["planted-fine"],), dict(quick="yes"), "quick must be True or False"),
    ((["planted-fine"],), dict(seed=2**70), "--seed"),
])
def test_verify_run_refuses_what_it_cannot_run(args, kwargs, words, monkeypatch, planted):
    import verify
    import verify.runner as runner

    planted("planted-fine", lambda ctx: [_check(0.5)])
    monkeypatch.setattr(runner, "run_claim", lambda *a: pytest.fail("a claim ran"))
    with pytest.raises(runner.UsageError, match=None) as info:
        verify.run(*args, **kwargs)
    assert words in str(info.value)


def test_claim_and_figure_commands_write_to_different_places():
    from verify.cli import build_parser, request_from_args

    outs = {cmd: request_from_args(build_parser().parse_args(argv))["out"]
            for cmd, argv in (("claim", ["claim", "planted-fine"]), ("figure", ["figure", "7"]),
                              ("run", ["run", "--claim", "planted-fine"]), ("full", ["run"]))}
    assert len(set(outs.values())) == 4 and outs["full"] == "reports"
    from verify.report.markdown import render_report

    doc = json.loads((REPO / "reports" / "results.json").read_text())
    doc = dict(doc, summary={"passed": True, "claims": 0, "failed_claims": [], "checks": 0,
                             "failed_checks": 0}, claims=[])
    assert "All 0 claims hold" not in render_report(doc)
    assert "No claim was run" in render_report(doc)


# -- the report set: atomic against SIGKILL, locked, disk full -------------------------------------
def _files(tag: str) -> dict:
    return {"REPORT.md": f"# {tag}\n".encode(), "results.json": f'{{"tag": "{tag}"}}\n'.encode(),
            "results.schema.json": b"{}\n", "run.json": tag.encode(),
            "figures/fig1-cg-error.png": f"png {tag}".encode(),
            "figures/fig5-memory.png": f"png5 {tag}".encode()}


def _expected(tag: str, foreign: dict) -> dict:
    return {**{k: hashlib.sha256(v).hexdigest() for k, v in _files(tag).items()}, **foreign}


@pytest.fixture
def report_dir(tmp_path):
    """reports/ with a whole 'old' set, another command's folder, and the parent it lives in."""
    out = tmp_path / "reports"
    write_report_set(out, _files("old"))
    (out / "fewshot").mkdir()
    (out / "fewshot" / "results.json").write_text('{"complete": true}')
    (out / "peers").mkdir()
    (out / "peers" / "peers.md").write_text("third-party")
    return out


def _foreign(out: Path) -> dict:
    return {k: v for k, v in _snapshot(out).items() if k.split("/")[0] in ("fewshot", "peers")}


class _Writer:
    """write_report_set(out, _files(tag)) in a forked child (no start-up: the kill tests are
    cheap) that SIGKILLs itself — or stops itself with SIGSTOP (``pause``) — at ``step``; with
    ``mode='journal'`` the child uses the fallback swap. Exit status 0 written, 3 refused
    (OutBusyError, its message on ``.message()``)."""

    def __init__(self, out, tag, step, mode="swap", pause=False):
        import warnings

        read_fd, write_fd = os.pipe()
        with warnings.catch_warnings():        # fork in a process with threads (Python >= 3.12)
            warnings.simplefilter("ignore", DeprecationWarning)
            # once the peers tests have imported JAX (the `peers` extra installed), its at-fork
            # hook warns on every fork; the child runs only the report writer (file system calls,
            # no JAX, no thread pool) and ends with os._exit
            warnings.filterwarnings("ignore", r"os\.fork\(\) was called", RuntimeWarning)
            pid = os.fork()
        if pid == 0:                           # the child: never returns into pytest
            code = 4
            try:
                os.close(read_fd)
                if mode == "journal":
                    writer_module._swap_possible = lambda out: False

                def at(name):
                    if name == step:
                        os.kill(os.getpid(), signal.SIGSTOP if pause else signal.SIGKILL)
                writer_module._step = at
                try:
                    write_report_set(out, _files(tag))
                    code = 0
                except OutBusyError as exc:
                    os.write(write_fd, str(exc).encode())
                    code = 3
            except BaseException as exc:  # noqa: B902
                os.write(write_fd, repr(exc).encode())
            finally:
                os._exit(code)
        os.close(write_fd)
        self.pid, self.fd, self.status = pid, read_fd, None

    def wait_stopped(self):
        """Until the child has stopped itself at its step (waitpid: no clock involved)."""
        _, status = os.waitpid(self.pid, os.WUNTRACED)
        if not os.WIFSTOPPED(status):
            self.status = status
            raise AssertionError(f"the writer ended instead of pausing: {self.message()}")

    def resume(self):
        os.kill(self.pid, signal.SIGCONT)

    def kill(self):
        with __import__("contextlib").suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)

    def wait(self) -> int:
        """The exit status (negative: the signal that ended it)."""
        if self.status is None:
            _, self.status = os.waitpid(self.pid, 0)
        return os.waitstatus_to_exitcode(self.status)

    def message(self) -> str:
        chunks = []
        while chunk := os.read(self.fd, 4096):
            chunks.append(chunk)
        os.close(self.fd)
        return b"".join(chunks).decode()


SPAWNED = textwrap.dedent("""
    import sys
    import verify.report.writer as w
    try:
        w.write_report_set(sys.argv[1], {"REPORT.md": b"# other"})
    except w.OutBusyError as exc:
        print(exc)
        sys.exit(3)
""")


SWAP_STEPS = ["staging", "wrote REPORT.md", "wrote figures/fig1-cg-error.png", "wrote run.json",
              "carried", "synced", "swapped", "removed"]


@pytest.mark.parametrize("step", SWAP_STEPS)
def test_a_write_killed_at_any_step_leaves_one_whole_set(report_dir, step):
    foreign = _foreign(report_dir)
    old, new = _expected("old", foreign), _expected("new", foreign)
    writer = _Writer(report_dir, "new", step)
    assert writer.wait() == -signal.SIGKILL, writer.message()
    writer.message()
    seen = _snapshot(report_dir)
    assert seen == (new if step in ("swapped", "removed") else old)
    # the next run cleans what the killed one left, and writes its own whole set
    write_report_set(report_dir, _files("next"))
    assert _snapshot(report_dir) == _expected("next", foreign)
    leftovers = [p.name for p in report_dir.parent.iterdir() if "imaml-verify-new" in p.name]
    assert leftovers == []


@pytest.mark.parametrize("step", SWAP_STEPS[:-2])
def test_an_exception_at_any_step_before_the_swap_leaves_the_previous_set(report_dir, step,
                                                                          monkeypatch):
    foreign = _foreign(report_dir)

    def at(name):
        if name == step:
            raise KeyboardInterrupt
    monkeypatch.setattr(writer_module, "_step", at)
    with pytest.raises(KeyboardInterrupt):
        write_report_set(report_dir, _files("new"))
    assert _snapshot(report_dir) == _expected("old", foreign)
    assert [p for p in report_dir.parent.iterdir() if "imaml-verify-new" in p.name] == []


def test_negative_control_the_fallback_swap_is_mixed_when_killed_mid_rename(report_dir):
    """The previous design (renames inside --out with a journal), killed between its renames:
    the folder holds no whole set until the next write recovers it — what the swap above
    avoids, and what the whole-set assertion detects."""
    foreign = _foreign(report_dir)
    old = _expected("old", foreign)
    writer = _Writer(report_dir, "new", "journal: moved in results.json", mode="journal")
    assert writer.wait() == -signal.SIGKILL, writer.message()
    writer.message()
    seen = {k: v for k, v in _snapshot(report_dir).items() if not k.startswith(".")}
    assert seen != old and seen != _expected("new", foreign)
    write_report_set(report_dir, _files("next"))      # recovered, then replaced
    assert _snapshot(report_dir) == _expected("next", foreign)


def test_leftovers_of_killed_runs_are_ignored_by_git():
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    paths = [".reports.imaml-verify-new-abc123/REPORT.md", ".reports.imaml-verify.lock",
             "reports/.imaml-verify-old-x/results.json", "reports/.imaml-verify-swap.json",
             "reports/fewshot/.results.json.1234.abc.tmp", "reports/claim/REPORT.md",
             "reports/figure/REPORT.md", "reports/fewshot/results.partial.json"]
    res = subprocess.run(["git", "check-ignore", "--no-index", *paths], cwd=REPO,
                         capture_output=True, text=True)
    assert sorted(res.stdout.split()) == sorted(paths)
    tracked = subprocess.run(["git", "check-ignore", "--no-index", "reports/figures/fig1-cg-error.png",
                              "reports/fewshot/results.json"], cwd=REPO, capture_output=True,
                             text=True)
    assert tracked.stdout.strip() == ""


def test_a_stale_temporary_file_is_removed_by_the_next_write(tmp_path):
    from verify.report._atomic import atomic_write_text

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".results.json.{dead.pid}.abcd.tmp"
    stale.write_text("half")
    mine = tmp_path / f".results.json.{os.getpid()}.efgh.tmp"
    mine.write_text("mine")
    atomic_write_text(tmp_path / "results.json", "{}")
    assert not stale.exists() and mine.exists()


def test_a_run_paused_mid_swap_makes_another_run_wait_or_be_refused(report_dir):
    """One writer stopped (SIGSTOP) between its staging and its swap; another run into the same
    folder is refused with one line and loses nothing; the first one, continued, completes; the
    folder holds its whole set."""
    foreign = _foreign(report_dir)
    paused = _Writer(report_dir, "first", "carried", pause=True)
    try:
        paused.wait_stopped()
        assert _snapshot(report_dir) == _expected("old", foreign)
        second = _Writer(report_dir, "second", "never")
        assert second.wait() == 3
        text = second.message()
        assert "is being written by another imaml-verify run" in text
        assert len(text.strip().splitlines()) == 1
        assert _snapshot(report_dir) == _expected("old", foreign)
    finally:
        paused.resume()
    assert paused.wait() == 0, paused.message()
    paused.message()
    assert _snapshot(report_dir) == _expected("first", foreign)


def test_a_nested_run_during_a_swap_of_its_parent_loses_nothing(report_dir):
    """A run into reports/claim while reports/ itself is being swapped: it waits for the swap,
    then writes into the new reports/ (the parent's swap carries its folder over)."""
    paused = _Writer(report_dir, "outer", "carried", pause=True)
    try:
        paused.wait_stopped()
        nested = _Writer(report_dir / "claim", "inner", "never")
    finally:
        paused.resume()
    assert paused.wait() == 0, paused.message()
    assert nested.wait() == 0, nested.message()
    paused.message()
    nested.message()
    assert (report_dir / "REPORT.md").read_text() == "# outer\n"
    assert (report_dir / "claim" / "REPORT.md").read_text() == "# inner\n"


def test_out_lock_refuses_a_second_holder_in_another_process(tmp_path):
    out = tmp_path / "reports"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), *sys.path]))
    with writer_module.out_lock(out):
        proc = subprocess.run([sys.executable, "-c", SPAWNED, str(out)], env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 3 and str(os.getpid()) in proc.stdout, proc.stderr
    assert not (out / "REPORT.md").exists()


@pytest.mark.parametrize("where", ["open", "link"])
def test_a_full_disk_keeps_the_previous_report_and_says_so_in_one_line(report_dir, monkeypatch,
                                                                       where):
    before = _snapshot(report_dir)
    enospc = OSError(errno.ENOSPC, "No space left on device")
    if where == "open":
        real_open = open

        def full(path, mode="r", *a, **k):
            if "x" in mode and str(path).endswith(".png"):
                enospc.filename = str(path)
                raise enospc
            return real_open(path, mode, *a, **k)
        monkeypatch.setattr(writer_module, "open", full, raising=False)
    else:
        def full(src, dst, *a, **k):
            enospc.filename = str(dst)
            raise enospc
        monkeypatch.setattr(writer_module.os, "link", full)
    with pytest.raises(ReportWriteError) as info:
        write_report_set(report_dir, _files("new"))
    text = str(info.value)
    assert len(text.splitlines()) == 1 and "No space left on device" in text
    assert str(report_dir) in text and "previous report" in text and "kept" in text
    assert _snapshot(report_dir) == before
    assert [p for p in report_dir.parent.iterdir() if "imaml-verify-new" in p.name] == []


def test_a_full_disk_from_the_command_line_is_one_line(previous, monkeypatch, capsys):
    before = _snapshot(previous)
    real_open = open

    def full(path, mode="r", *a, **k):
        if "x" in mode:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_open(path, mode, *a, **k)
    monkeypatch.setattr(writer_module, "open", full, raising=False)
    assert main(["claim", "planted-fine", "--out", str(previous), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "No space left on device" in err and "kept" in err
    assert _snapshot(previous) == before


def test_a_run_into_a_held_folder_is_refused_before_any_work(previous, capsys, monkeypatch):
    import verify.runner as runner

    before = _snapshot(previous)
    holder = _Writer(previous, "x", "staging", pause=True)
    try:
        holder.wait_stopped()
        monkeypatch.setattr(runner, "run_claim", lambda *a: pytest.fail("a claim ran"))
        assert main(["claim", "planted-fine", "--out", str(previous), "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "being written by another imaml-verify run" in err
    finally:
        holder.kill()
        holder.wait()
        holder.message()
    assert _snapshot(previous) == before


# -- few-shot: a complete result is never replaced by a partial one -------------------------------
def test_a_partial_fewshot_run_never_replaces_a_complete_result(tmp_path, capsys):
    import time

    from verify.fewshot.gpu_check import main as gpu_check_main

    complete = {"complete": True, "parts_done": ["cg_modes"], "marker": "committed"}
    (tmp_path / "results.json").write_text(json.dumps(complete))
    (tmp_path / "fewshot.md").write_text("the complete run's section")
    assert gpu_check_main(["--out", str(tmp_path), "--dry-run", "--name", "results.json",
                           "--deadline", str(time.time() - 1)]) == 1
    assert json.loads((tmp_path / "results.json").read_text())["marker"] == "committed"
    assert (tmp_path / "fewshot.md").read_text() == "the complete run's section"
    partial = json.loads((tmp_path / "results.partial.json").read_text())
    assert partial["complete"] is False
    assert "kept the complete result" in capsys.readouterr().out


def test_an_interrupted_fewshot_command_says_so_in_one_line(monkeypatch, capsys):
    """Ctrl-C in a few-shot command: exit 130 and one line, not a traceback."""
    from verify.fewshot import cli as fewshot_cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(fewshot_cli, "_check", interrupted)
    assert main(["fewshot", "check", "--dry-run"]) == 130
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "interrupted" in err and "Traceback" not in err


def test_a_malformed_option_is_one_line_too(capsys):
    """argparse's own type errors (``--seed 1e3``, ``--timeout 0``) are one line, exit 2."""
    for argv in (["run", "--seed", "1e3"], ["check", "m:f", "--timeout", "0"],
                 ["check", "m:f", "--timeout", "abc"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "error:" in err[0], err


def test_a_quick_run_does_not_replace_the_full_report():
    """`imaml-verify run --quick` without --out writes reports/quick/, not reports/."""
    from verify.cli import build_parser, request_from_args

    for argv, out in ((["run", "--quick"], "reports/quick"), (["run"], "reports"),
                      (["run", "--scale"], "reports/scale"), (["claim", "lemma1"], "reports/claim")):
        assert request_from_args(build_parser().parse_args(argv))["out"] == out


def test_fewshot_seeds_are_checked(capsys):
    assert main(["fewshot", "check", "--dry-run", "--seed", str(2**70)]) == 2
    assert "--seed" in capsys.readouterr().err


def test_the_lock_leaves_nothing_behind_and_a_killed_holders_lock_is_taken_over(tmp_path):
    out = tmp_path / "reports"
    stale = tmp_path / ".reports.imaml-verify.lock"
    stale.write_text("999999999\n")                 # left by a killed run: nobody holds it
    write_report_set(out, _files("new"))
    assert (out / "REPORT.md").read_text() == "# new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reports"]


def test_an_out_that_is_a_link_is_written_where_it_points(tmp_path):
    real = tmp_path / "real-reports"
    write_report_set(real, _files("old"))
    link = tmp_path / "reports"
    link.symlink_to(real)
    write_report_set(link, _files("new"))
    assert link.is_symlink() and (real / "REPORT.md").read_text() == "# new\n"
