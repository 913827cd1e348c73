"""Pinned tests of the checker's isolated calls (verify/checker/_calling.py), written from the
survivors of `tools/mutate.py verify/checker`: the bitwise input comparison, the copies a call
gets, the one-line messages, the output's dtype diagnosis, when SIGALRM may serve as the time
limit, and what each way of calling returns."""
from __future__ import annotations

import signal
import threading

import numpy as np
import pytest

from verify.checker import _calling as C


# -- inputs ---------------------------------------------------------------------------------------
def test_same_is_bitwise_and_checks_type_shape_dtype():
    a = np.array([0.0, 1.0, 2.0])
    assert C._same(a.copy(), a)
    b = a.copy()
    b[0] = -0.0                                     # == compares equal, the bytes do not
    assert not C._same(b, a)
    assert C._same(a.reshape(3, 1), a) is False
    assert C._same(a.astype(np.float32), a) is False
    assert C._same([0.0, 1.0, 2.0], a) is False     # no longer an array
    big = np.arange((1 << 16) + 1, dtype=np.float64)    # above the byte-comparison size
    assert C._same(big.copy(), big)
    changed = big.copy()
    changed[-1] += 1
    assert C._same(changed, big) is False
    zero = np.zeros((1 << 16) + 1)
    signed = zero.copy()
    signed[-1] = -0.0                               # bit for bit at every size
    assert C._same(signed, zero) is False and C._same(zero.copy(), zero) is True
    strided = np.zeros((2, (1 << 16) + 1))[:, ::2]
    assert C._same(strided.copy(), strided) is True
    small = np.arange(1 << 16, dtype=np.float64)    # at the limit: still the byte comparison
    z = small.copy()
    z[0] = -0.0
    assert not C._same(z, small)
    assert C._same("anything", 3)                   # not an array: nothing to compare


def test_same_on_torch_and_on_inputs_that_cannot_be_compared():
    torch = pytest.importorskip("torch")
    t = torch.arange(3, dtype=torch.float64)
    assert C._same(t.clone(), t)
    assert not C._same(t.clone().float(), t)
    assert not C._same(t.clone().reshape(3, 1), t)
    assert not C._same(np.arange(3.0), t)
    u = t.clone()
    u[1] = 7.0
    assert not C._same(u, t)

    class Broken(np.ndarray):
        def tobytes(self, *a, **k):
            raise RuntimeError("cannot")
    x = np.arange(3.0)
    assert C._same(x.copy().view(Broken), x) is False      # cannot be compared: changed


def test_fresh_copies_and_read_only():
    a = np.arange(3.0)
    ro = C._fresh(a, writable=False)
    rw = C._fresh(a, writable=True)
    assert ro is not a and not ro.flags.writeable and np.array_equal(ro, a)
    assert rw is not a and rw.flags.writeable and not np.shares_memory(rw, a)
    assert C._fresh(3.5, writable=False) == 3.5
    r = C._read_only(a)
    assert r is not a and not r.flags.writeable and a.flags.writeable
    assert C._read_only(r) is r                     # read-only already: not copied again


def test_task_inputs_and_task_from():
    from verify.checker import build
    from verify.checker.instances import Instance

    task, theta = build(Instance(family="planted", dim=3, lam=1.0, seed=4))
    inputs = C.task_inputs(task, theta)
    assert set(inputs) == {f"task.{n}" for n in type(task)._NAMES} | {"theta"}
    with pytest.raises(TypeError, match="task must be a QuadraticTask or LogisticTask, got int"):
        C.task_inputs(3, theta)
    with pytest.raises(TypeError, match="got str"):
        C.task_from("x", {})
    copies = {k: C._fresh(v, writable=True) for k, v in inputs.items()}
    new = C.task_from(task, copies)
    assert type(new) is type(task) and new is not task
    for n in type(task)._NAMES:
        assert getattr(new, n) is copies[f"task.{n}"]
    copies["task.A"][0, 0] += 1.0                   # a write into the copy stays there
    assert task.A[0, 0] != new.A[0, 0]


# -- outputs --------------------------------------------------------------------------------------
@pytest.mark.parametrize("value, message", [
    (np.array([1 + 2j]), "returned a complex array (dtype complex128): a meta-gradient is a real "
                         "floating-point array (its imaginary part would be dropped)"),
    (np.array([1, 2]), "returned an integer array (dtype int64): a meta-gradient is a real "
                       "floating-point array"),
    (np.array([True]), "returned a boolean array (dtype bool)"),
    (np.array(["a"]), "returned a string array"),
    ([1.0, 2.0], "returned list, not an array"),
    (None, "returned NoneType, not an array"),
])
def test_to_f64_names_what_is_wrong(value, message):
    with pytest.raises(TypeError) as err:
        C.to_f64(value)
    assert str(err.value).startswith(message)


def test_to_f64_reads_results_arrays_and_tensors():
    torch = pytest.importorskip("torch")

    class Result:
        gradient = np.array([1.0, 2.0], dtype=np.float32)
    out = C.to_f64(Result())
    assert out.dtype == np.float64 and out.tolist() == [1.0, 2.0]
    assert C.to_f64(torch.tensor([1.5], dtype=torch.bfloat16)).tolist() == [1.5]
    for t, kind in ((torch.tensor([1]), "an integer"), (torch.tensor([True]), "a boolean"),
                    (torch.tensor([1j]), "a complex")):
        with pytest.raises(TypeError, match=f"returned {kind} tensor"):
            C.to_f64(t)

    class Raises:
        def __array__(self, *a, **k):
            raise ValueError("no\n  array   here")
    with pytest.raises(TypeError, match=r"cannot be read as an array \(ValueError: no array here\)"):
        C.to_f64(Raises())


def test_one_line_collapses_and_cuts_at_the_limit():
    assert C._one_line(ValueError("a\n  b\tc")) == "a b c"
    text = "x" * 300
    assert C._one_line(ValueError(text)) == text                  # exactly the limit: whole
    cut = C._one_line(ValueError("y" * 301))
    assert len(cut) == 300 and cut == "y" * 299 + "…"
    assert C._one_line(ValueError("abcdef"), limit=4) == "abc…"


def test_describe_exception():
    assert C.describe_exception(SystemExit(3)) == ("called sys.exit(3) (SystemExit): an "
                                                   "implementation must return")
    assert C.describe_exception(KeyboardInterrupt()) == ("raised KeyboardInterrupt itself (no "
                                                         "Ctrl-C was pressed)")
    assert C.describe_exception(ValueError("bad\nthing")) == "raised ValueError: bad thing"
    assert C._read_only_error(ValueError("assignment destination is read-only"))
    assert not C._read_only_error(TypeError("read-only"))
    assert not C._read_only_error(ValueError("other"))


def test_mutation_message_singular_and_plural():
    assert C._mutation(["task.A"]).startswith("changed its input task.A in place: copy an input")
    assert C._mutation(["task.A", "theta"], " (x)").startswith(
        "changed its inputs task.A and theta in place (x): copy")


# -- invoking -------------------------------------------------------------------------------------
def test_the_alarm_is_free_only_on_the_main_thread_with_no_handler_or_timer():
    assert threading.current_thread() is threading.main_thread()
    assert C._Alarm.free()
    seen = {}
    worker = threading.Thread(target=lambda: seen.setdefault("free", C._Alarm.free()))
    worker.start()
    worker.join()
    assert seen["free"] is False
    previous = signal.signal(signal.SIGALRM, lambda *a: None)
    try:
        assert not C._Alarm.free()                  # someone else's SIGALRM handler
    finally:
        signal.signal(signal.SIGALRM, previous)
    signal.setitimer(signal.ITIMER_REAL, 100.0)
    try:
        assert not C._Alarm.free()                  # someone else's timer running
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    assert C._Alarm.free()


def test_the_ways_of_calling_report_each_outcome():
    assert C._run_plain(lambda: 4) == ("returned", 4)
    status, exc = C._run_plain(lambda: 1 / 0)
    assert status == "raised" and isinstance(exc, ZeroDivisionError)
    assert C._run_in_thread(lambda: 5, 10.0) == ("returned", 5)
    status, exc = C._run_in_thread(lambda: [][1], 10.0)
    assert status == "raised" and isinstance(exc, IndexError)
    gate = threading.Event()
    try:
        assert C._run_in_thread(gate.wait, 0.05) == ("timeout", None)
    finally:
        gate.set()
    with C._Alarm() as alarm:
        assert alarm.run(lambda: 6, 10.0) == ("returned", 6)
        assert not alarm.active and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
        active, (left, every) = alarm.run(lambda: (alarm.active, signal.getitimer(
            signal.ITIMER_REAL)), 1000.0)[1]
        assert active is True and 0 < left <= 1000.0 and every == 0.25   # then every 0.25 s
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
        status, exc = alarm.run(lambda: {}["k"], 10.0)
        assert status == "raised" and isinstance(exc, KeyError)
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert C._invoke(lambda: 7, None) == ("returned", 7)
    assert C._invoke(lambda: 8, 10.0) == ("returned", 8)


def test_check_timeout():
    assert C.check_timeout(None) is None and C.check_timeout(2) == 2.0
    for bad in (0, -1, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="timeout must be a number of seconds > 0"):
            C.check_timeout(bad)


def test_the_search_arguments_at_their_lower_ends():
    from verify.checker.core import CheckerArgumentError, _check_search

    got = _check_search(0, 0, 1, 10.0, True, None)     # the smallest dimension, no drawn instance
    assert got == (0, 0, 1, 10.0, True, None)
    with pytest.raises(CheckerArgumentError, match="max_dim must be an integer >= 1, got 0"):
        _check_search(0, 0, 0, 10.0, True, None)
    with pytest.raises(CheckerArgumentError, match="max_examples must be an integer >= 0, got -1"):
        _check_search(0, -1, 1, 10.0, True, None)
    with pytest.raises(CheckerArgumentError, match="max_dim must be an integer >= 1, got True"):
        _check_search(0, 0, True, 10.0, True, None)
    with pytest.raises(CheckerArgumentError, match="evaluates no instance"):
        _check_search(0, 0, 1, 10.0, False, None)
    with pytest.raises(CheckerArgumentError, match="corners must be True or False"):
        _check_search(0, 1, 1, 10.0, 1, None)


def test_task_from_gives_each_call_its_own_caches():
    from verify.tasks import logistic_task

    task, _ = logistic_task(20, 3, 0.05, seed=6, scale=2.0)
    task.certified_solution(np.array([0.3, -0.7, 1.1]))          # fills its Newton cache
    caches = [k for k, v in task.__dict__.items() if isinstance(v, dict) and v]
    nones = [k for k, v in task.__dict__.items() if v is None]
    assert caches
    copies = {k: C._fresh(v, writable=True) for k, v in C.task_inputs(task, np.zeros(3)).items()}
    new = C.task_from(task, copies)
    for k in caches:
        assert new.__dict__[k] == {} and new.__dict__[k] is not task.__dict__[k]
    for k in nones:
        assert new.__dict__[k] is None
    from verify.tasks import planted_spectrum_task

    q, _ = planted_spectrum_task(4, 10.0, 1.0, seed=1)
    assert q.n_tasks is None                       # a single task: None that is not a cache
    copies = {k: C._fresh(v, writable=True) for k, v in C.task_inputs(q, np.zeros(4)).items()}
    assert C.task_from(q, copies).n_tasks is None


def test_the_sigint_recorder_passes_a_real_ctrl_c_on_as_the_previous_handler_would():
    seen = []
    rec = C._Sigint()
    rec.previous = lambda signum, frame: seen.append(signum)
    rec._handler(signal.SIGINT, None)
    assert rec.real and seen == [signal.SIGINT]
    rec = C._Sigint()
    rec.previous = signal.SIG_IGN                  # ignored before: still ignored, but recorded
    rec._handler(signal.SIGINT, None)
    assert rec.real
    rec = C._Sigint()
    rec.previous = signal.SIG_DFL
    with pytest.raises(KeyboardInterrupt):
        rec._handler(signal.SIGINT, None)
    assert rec.real


def test_is_torch_needs_both_detach_and_clone():
    class CloneOnly:
        def clone(self):
            return self

    class DetachOnly:
        def detach(self):
            return self
    assert not C._is_torch(CloneOnly()) and not C._is_torch(DetachOnly())
    assert not C._is_torch(np.zeros(2))
    torch = pytest.importorskip("torch")
    assert C._is_torch(torch.zeros(2))


def test_the_guards_enter_as_themselves():
    with C._Sigint() as s:
        assert isinstance(s, C._Sigint)
    with C._Alarm() as a:
        assert isinstance(a, C._Alarm)


def test_the_alarm_raises_only_into_an_active_call_outside_the_checker():
    import sys

    alarm = C._Alarm()
    here = sys._getframe()                          # a frame of this test file: the call's
    alarm._handler(signal.SIGALRM, here)            # not active: nothing
    alarm.active = True
    alarm._handler(signal.SIGALRM, None)            # no frame: nothing
    with pytest.raises(C._Timeout):
        alarm._handler(signal.SIGALRM, here)
    fake = type("F", (), {"f_code": type("Code", (), {"co_filename": C.__file__})()})()
    alarm._handler(signal.SIGALRM, fake)            # inside the checker's own frames: ignored


def test_one_guard_for_a_whole_check_on_the_main_thread_only():
    assert C._guard is None
    with C.guarded():
        outer = C._guard
        assert isinstance(outer, C._Guard)
        assert signal.getsignal(signal.SIGINT) == outer.sigint._handler
        with C.guarded():                           # nested: the outer guard stays
            assert C._guard is outer
        # a call inside uses the installed guard: no handler of its own
        assert C._invoke(lambda: signal.getsignal(signal.SIGINT), None) == (
            "returned", outer.sigint._handler)
    assert C._guard is None
    # outside a check, a call on the main thread installs a guard for itself
    status, handler = C._invoke(lambda: signal.getsignal(signal.SIGINT), None)
    assert status == "returned" and getattr(handler, "__self__", None).__class__ is C._Sigint
    seen = {}

    def worker():
        with C.guarded():
            seen["guard"] = C._guard
        seen["call"] = C._invoke(lambda: 9, None)
    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen == {"guard": None, "call": ("returned", 9)}
