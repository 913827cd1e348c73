"""How the checker calls code it did not write: isolated, bounded in time, every outcome a finding.

Each call of the implementation gets its own copies of its inputs (NumPy copies read-only; torch
tensors, which cannot be made read-only, cloned), so that nothing it does reaches the checker's
reference or the next call; afterwards the copies are compared with the originals, and an
implementation that changed an input in place fails with a diagnosis naming the input (when a
read-only NumPy input made it raise, the call is repeated once on writable copies to find which
input it writes into). Whatever the call raises — ``SystemExit`` and a ``KeyboardInterrupt`` it
raises itself included; a real Ctrl-C still stops the check — is a failure of that call, not of
the checker. Each call is bounded by ``timeout`` seconds: by SIGALRM on the main thread (when no
one else uses the timer), otherwise by running the call in a daemon thread and waiting at most
``timeout`` for it (a call that never returns is then left running in that thread, on its own
copies). What the call returns must be a real floating-point array of shape (d,): complex,
integer, boolean and object arrays are refused by name.

What cannot be contained in one process: an implementation that calls ``os._exit``, crashes the
interpreter, or swallows the checker's time-limit exception and keeps running. ``imaml-verify
check`` therefore runs the check in a child process and reports those as failures too (see
:mod:`verify.checker.cli`).
"""
from __future__ import annotations

import contextlib
import math
import signal
import threading
import warnings
import weakref

import numpy as np

__all__ = ["DEFAULT_TIMEOUT", "call_isolated", "task_inputs", "task_from", "to_f64",
           "describe_exception", "observer"]

#: seconds one call of the implementation may take before it fails as hung (None: no limit)
DEFAULT_TIMEOUT = 60.0

#: the command line's child process sets this to follow the calls: observer(event, where), with
#: event 'call' (before a call; where: the instance) or 'return' (after it)
observer = None


class _Timeout(BaseException):
    """Raised into a call that ran past its time limit (a BaseException, so that an
    implementation's ``except Exception`` does not swallow it)."""


# -- inputs ---------------------------------------------------------------------------------------
def _is_torch(x) -> bool:
    return hasattr(x, "detach") and hasattr(x, "clone")


def _fresh(x, writable: bool):
    if _is_torch(x):
        return x.detach().clone()
    if isinstance(x, np.ndarray):
        c = np.array(x, copy=True)
        c.flags.writeable = writable
        return c
    return x


def _same(copy, original) -> bool:
    """Whether the call left ``copy`` exactly as ``original`` (bit for bit: a write of -0.0 over
    0.0 is a change too)."""
    try:
        if _is_torch(original):
            return (_is_torch(copy) and copy.shape == original.shape
                    and copy.dtype == original.dtype and bool((copy == original).all()))
        if isinstance(original, np.ndarray):
            if not (isinstance(copy, np.ndarray) and copy.shape == original.shape
                    and copy.dtype == original.dtype):
                return False
            if original.size <= 1 << 16:       # small: one byte comparison
                return copy.tobytes() == original.tobytes()
            # large: the bytes compared in place (a -0.0 written over 0.0 is a change here too)
            a, b = np.ascontiguousarray(copy), np.ascontiguousarray(original)
            return bool(np.array_equal(a.reshape(-1).view(np.uint8), b.reshape(-1).view(np.uint8)))
    except Exception:   # an input changed so much it cannot even be compared
        return False
    return True


def task_inputs(task, theta) -> dict:
    """{name: array} of everything a call of fn(task, theta) receives."""
    names = getattr(type(task), "_NAMES", None)
    if names is None:
        raise TypeError(f"task must be a QuadraticTask or LogisticTask, got {type(task).__name__}")
    out = {f"task.{n}": getattr(task, n) for n in names}
    out["theta"] = theta
    return out


def _read_only(x):
    if isinstance(x, np.ndarray) and x.flags.writeable:
        x = np.array(x, copy=True)
        x.flags.writeable = False
    return x


_templates: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _template(task) -> dict:
    """``task``'s state with every array in it read-only (copied once if it was not) and its
    caches emptied: what each call's copy of the task starts from (computed once per task)."""
    try:
        return _templates[task]
    except (KeyError, TypeError):
        pass
    state = dict(task.__dict__)
    for key, value in state.items():
        if isinstance(value, np.ndarray):
            state[key] = _read_only(value)
        elif isinstance(value, dict):      # a cache (LogisticTask's Newton solutions)
            state[key] = None
    with contextlib.suppress(TypeError):
        _templates[task] = state
    return state


def task_from(task, copies: dict):
    """A task like ``task`` around ``copies`` (its arrays exactly the copies, writable ones
    included): a shallow copy with the arrays replaced — no new checks, no eigendecomposition —
    with its own caches and read-only copies of whatever else it holds in arrays (eigenvalues,
    float64 copies of the data), so that nothing a call does reaches ``task``."""
    from theory._arrays import versions

    names = getattr(type(task), "_NAMES", None)
    if names is None:
        raise TypeError(f"task must be a QuadraticTask or LogisticTask, got {type(task).__name__}")
    new = object.__new__(type(task))
    state = dict(_template(task))
    for key, value in state.items():
        if value is None and isinstance(task.__dict__.get(key), dict):
            state[key] = {}
    for n in names:
        state[n] = copies[f"task.{n}"]
    state["_versions"] = versions(*(state[n] for n in names))
    new.__dict__.update(state)
    return new


# -- outputs --------------------------------------------------------------------------------------
_KINDS = {"c": "a complex", "i": "an integer", "u": "an unsigned integer", "b": "a boolean",
          "O": "an object", "U": "a string", "S": "a bytes", "V": "a structured", "M": "a datetime",
          "m": "a timedelta"}


def to_f64(out) -> np.ndarray:
    """The implementation's output as a float64 NumPy array (an object carrying ``.gradient``
    is read through it). Raises TypeError with what is wrong: not an array, or an array whose
    dtype is not real floating point (complex: the imaginary part would be dropped; integer,
    boolean, object)."""
    try:
        out = getattr(out, "gradient", out)   # a result object carrying .gradient (solvers')
        if _is_torch(out):
            name = str(out.dtype).replace("torch.", "")
            if not out.is_floating_point() or out.is_complex():
                kind = "a complex" if out.is_complex() else (
                    "a boolean" if name == "bool" else "an integer")
                raise TypeError(f"returned {kind} tensor (dtype {name}): a meta-gradient is a "
                                f"real floating-point array")
            if name == "bfloat16":
                out = out.float()
            out = out.detach().cpu().numpy()
        elif hasattr(out, "__array__") and not isinstance(out, np.ndarray):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = np.asarray(out)
    except TypeError:
        raise
    except Exception as exc:   # a .gradient property or __array__ that raises
        raise TypeError(f"returned an object that cannot be read as an array "
                        f"({type(exc).__name__}: {_one_line(exc)})") from None
    if not isinstance(out, np.ndarray):
        raise TypeError(f"returned {type(out).__name__}, not an array")
    kind = out.dtype.kind
    if kind != "f":
        what = _KINDS.get(kind, "a non-floating-point")
        extra = " (its imaginary part would be dropped)" if kind == "c" else ""
        raise TypeError(f"returned {what} array (dtype {out.dtype}): a meta-gradient is a real "
                        f"floating-point array{extra}")
    return out.astype(np.float64)


def _one_line(exc, limit=300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def describe_exception(exc: BaseException) -> str:
    """What a call that raised did, in one line."""
    if isinstance(exc, SystemExit):
        return f"called sys.exit({exc.code!r}) (SystemExit): an implementation must return"
    if isinstance(exc, KeyboardInterrupt):
        return "raised KeyboardInterrupt itself (no Ctrl-C was pressed)"
    return f"raised {type(exc).__name__}: {_one_line(exc)}"


def _read_only_error(exc) -> bool:
    return isinstance(exc, ValueError) and "read-only" in str(exc)


# -- invoking with a time limit -------------------------------------------------------------------
class _Sigint:
    """Records a real SIGINT (Ctrl-C) on the main thread, and passes it on to the handler that
    was there, so that a KeyboardInterrupt the implementation raises itself can be told from
    one the user asked for."""

    def __init__(self):
        self.real = False
        self.previous = None
        self.installed = False

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.getsignal(signal.SIGINT)
            if self.previous is not None:   # None: a handler not set from Python; leave it
                signal.signal(signal.SIGINT, self._handler)
                self.installed = True
        return self

    def _handler(self, signum, frame):
        self.real = True
        prev = self.previous
        if callable(prev):
            prev(signum, frame)
        elif prev != signal.SIG_IGN:
            raise KeyboardInterrupt

    def __exit__(self, *exc):
        if self.installed:
            signal.signal(signal.SIGINT, self.previous)
        return False


class _Alarm:
    """SIGALRM as the time limit of calls on the main thread (when nobody else's handler or
    timer is there): the handler raises :class:`_Timeout` into the implementation (and what it
    calls), never into the checker's own frames, so a late alarm after the call returned is
    ignored; after the first alarm it fires every 0.25 s while the call goes on (an alarm that
    lands in one of the checker's frames, e.g. check_cg's matvec, is ignored)."""

    def __init__(self):
        self.active = False
        self.previous = None

    @staticmethod
    def free() -> bool:
        if threading.current_thread() is not threading.main_thread() or \
                not hasattr(signal, "setitimer"):
            return False
        handler = signal.getsignal(signal.SIGALRM)
        return handler in (signal.SIG_DFL, signal.SIG_IGN) and \
            signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)

    def _handler(self, signum, frame):
        if self.active and frame is not None and frame.f_code.co_filename != __file__:
            raise _Timeout

    def __enter__(self):
        self.previous = signal.signal(signal.SIGALRM, self._handler)
        return self

    def __exit__(self, *exc):
        self.active = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self.previous)
        return False

    def run(self, thunk, timeout):
        self.active = True
        try:
            signal.setitimer(signal.ITIMER_REAL, timeout, 0.25)
            try:
                return "returned", thunk()
            except _Timeout:
                return "timeout", None
            except BaseException as exc:  # noqa: B902  every outcome of the call is a finding
                return "raised", exc
        finally:      # (an alarm that lands here, in the checker's own frame, is ignored)
            self.active = False
            signal.setitimer(signal.ITIMER_REAL, 0)


def _run_in_thread(thunk, timeout):
    box: dict = {}

    def target():
        try:
            box["out"] = ("returned", thunk())
        except BaseException as exc:  # noqa: B902
            box["out"] = ("raised", exc)
    worker = threading.Thread(target=target, name="imaml-verify-call", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():   # left running on its own copies; the check goes on without it
        return "timeout", None
    return box["out"]


def _run_plain(thunk):
    try:
        return "returned", thunk()
    except BaseException as exc:  # noqa: B902
        return "raised", exc


class _Guard:
    """The signal handlers of a whole check, installed once (see :func:`guarded`)."""

    def __init__(self):
        self.sigint = _Sigint()
        self.alarm = _Alarm() if _Alarm.free() else None

    def __enter__(self):
        self.sigint.__enter__()
        if self.alarm is not None:
            self.alarm.__enter__()
        return self

    def __exit__(self, *exc):
        if self.alarm is not None:
            self.alarm.__exit__(*exc)
        self.sigint.__exit__(*exc)
        return False


_guard = None


@contextlib.contextmanager
def guarded():
    """Install the SIGINT recorder and the SIGALRM time limit once for a whole check (on the
    main thread; a no-op elsewhere, or when already inside one), instead of once per call."""
    global _guard
    if _guard is not None or threading.current_thread() is not threading.main_thread():
        yield
        return
    with _Guard() as g:
        _guard = g
        try:
            yield
        finally:
            _guard = None


def _invoke(thunk, timeout):
    """('returned', value) | ('raised', exception) | ('timeout', None). A real Ctrl-C is raised."""
    main = threading.current_thread() is threading.main_thread()
    g = _guard if main else None
    with contextlib.ExitStack() as stack:
        if g is None:
            g = stack.enter_context(_Guard()) if main else None
        if g is not None:
            g.sigint.real = False
        stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore")   # the implementation's warnings are its own business
        if timeout is None:
            status, value = _run_plain(thunk)
        elif g is not None and g.alarm is not None:
            status, value = g.alarm.run(thunk, timeout)
        else:
            status, value = _run_in_thread(thunk, timeout)
    if status == "raised" and isinstance(value, KeyboardInterrupt) and g is not None \
            and g.sigint.real:
        raise value
    return status, value


# -- one isolated call ----------------------------------------------------------------------------
def _mutation(names, note="") -> str:
    listed = " and ".join(names)
    return (f"changed its input{'s' if len(names) > 1 else ''} {listed} in place{note}: copy an "
            f"input before writing into it (C = task.A + λI, not C = task.A; C += λI)")


def call_isolated(fn_of, originals: dict, *, dim: int, timeout=DEFAULT_TIMEOUT, where=None):
    """Call ``fn_of(copies)`` — copies: {name: fresh copy of originals[name]} — once, isolated
    and bounded (module docstring). Returns (float64 output of shape (dim,), None) or
    (None, what went wrong, in one line: it raised, it timed out, it changed an input in place,
    or its output is not a finite real array of shape (dim,))."""
    copies = {k: _fresh(v, writable=False) for k, v in originals.items()}
    if observer is not None:
        observer("call", where)
    try:
        status, value = _invoke(lambda: fn_of(copies), timeout)
    finally:
        if observer is not None:
            observer("return", where)
    changed = [k for k in originals if not _same(copies[k], originals[k])]
    if status == "timeout":
        return None, (f"did not return within {timeout:g} s (timeout={timeout:g}; a call that "
                      f"never returns fails, and the check stops calling it)")
    if changed:
        return None, _mutation(changed)
    if status == "raised":
        exc = value
        if _read_only_error(exc) and any(isinstance(v, np.ndarray) for v in originals.values()):
            # which input does it write into? the same call once more, on writable copies
            again = {k: _fresh(v, writable=True) for k, v in originals.items()}
            status2, _ = _invoke(lambda: fn_of(again), timeout)
            changed = [k for k in originals if not _same(again[k], originals[k])]
            if changed:
                return None, _mutation(changed, f" (on read-only copies it "
                                                f"{describe_exception(exc)})")
            return None, (f"{describe_exception(exc)} — it writes into an input in place (the "
                          f"checker's inputs are read-only: copy an input before writing into it)")
        return None, describe_exception(exc)
    try:
        g = to_f64(value)
    except TypeError as exc:
        return None, str(exc)
    if g.shape != (dim,):
        return None, f"returned shape {tuple(g.shape)}, expected ({dim},)"
    if not np.all(np.isfinite(g)):
        return None, "returned NaN or Inf"
    return g, None


def check_timeout(timeout):
    """None (no limit) or a finite number of seconds > 0."""
    from validation import real_number

    if timeout is None:
        return None
    t = real_number(timeout, "timeout")
    if not math.isfinite(t) or t <= 0:
        raise ValueError(f"timeout must be a number of seconds > 0 (or None for no limit), "
                         f"got {timeout!r}")
    return t
