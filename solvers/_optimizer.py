"""The loop shared by first-order optimizers: stopping rule, history, final residual."""
from __future__ import annotations

import math

import numpy as np
from array_api_compat import device, is_array_api_obj, is_torch_array

from solvers._common import (array_namespace, checked, host_norm, ops, quiet, raise_if_not_finite,
                             to_host)
from solvers._result import History, SolverResult, Status
from validation import check_array, check_tolerances

MAX_STEPS_WITHOUT_LIMIT = 100_000


class GradientOracle:
    """Wraps a gradient callback: validates its first output (shape, library, dtype, device)
    before anything uses it, and counts evaluations."""

    def __init__(self, grad, like, name="grad"):
        self.grad, self.name, self.count = checked(grad, like, name), name, 0

    def __call__(self, x):
        self.count += 1
        return self.grad(x)


def prepare(grad, x0, rtol, atol, max_steps):
    check_array(x0, "x0", ndim=(1, 2))
    rtol, atol, max_steps = check_tolerances(rtol, atol, max_steps)
    return (array_namespace(x0), GradientOracle(grad, x0), rtol, atol,
            MAX_STEPS_WITHOUT_LIMIT if max_steps is None else max_steps)


def step_parameter(value, name, x0, *, low, high=None):
    """A step size or momentum: a number, or one per row of a batched ``x0`` (shape (n,)).
    Numbers are returned as floats; per-row values (validated on the host) as an (n, 1) array
    of x0's library, dtype and device, so that row i of an update uses value i exactly as a
    single run with that number would."""
    rule = f"finite and > {low:g}" if high is None else f"in [{low:g}, {high:g})"
    if not is_array_api_obj(value) or getattr(value, "ndim", 0) == 0:
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be a real number, got {type(value).__name__}") from None
        ok = math.isfinite(v) and (v > low if high is None else low <= v < high)
        if not ok:
            raise ValueError(f"{name} must be {rule}, got {value!r}")
        return v
    host = np.asarray(value.detach().cpu().numpy() if is_torch_array(value) else value,
                      dtype=np.float64)
    if x0.ndim != 2 or host.shape != (x0.shape[0],):
        raise ValueError(f"{name} must be a number or have shape ({x0.shape[0] if x0.ndim == 2 else 'n'},)"
                         f" (one per row of a batched x0), got shape {host.shape}")
    ok = np.isfinite(host) & ((host > low) if high is None else (host >= low) & (host < high))
    if not ok.all():
        raise ValueError(f"{name} must be {rule} for every row, got {host[~ok][0]!r}")
    xp = array_namespace(x0)
    return xp.asarray(host, dtype=x0.dtype, device=device(x0))[:, None]


def finish(xp, oracle, x, steps, status, rec, last_grad_norm=None):
    """Build the result. Unless the final point's gradient norm is known, one more gradient is
    evaluated for ``residual_norm`` (counted in evaluations, not in steps). The returned point
    is scanned for NaN/Inf once (the norms read every step catch the rest)."""
    o = ops(xp)
    if last_grad_norm is None:
        g = o.plain(oracle(x))
        last_grad_norm = float(np.max(host_norm(xp, g)))
        raise_if_not_finite(last_grad_norm, f"the output of {oracle.name}", steps + 1)
        if rec is not None:
            rec.record(x, last_grad_norm)
    if not to_host(o.all(o.isfinite(o.plain(x)))):
        raise_if_not_finite(float("nan"), "the iterate", steps)
    return SolverResult(x=x, steps=steps, residual_norm=last_grad_norm, status=status,
                        evaluations={"grad": oracle.count}, history=rec)


def first_order_loop(grad, x0, *, step_size, momentum, max_steps, rtol, atol, history):
    """x₀ = y₀; x_{k+1} = y_k − s∇f(y_k); y_{k+1} = x_{k+1} + q(x_{k+1} − x_k).
    Stops at y_k when ‖∇f(y_k)‖ ≤ max(atol, rtol‖∇f(y₀)‖), returning y_k. The history holds
    (x_k, ‖∇f(y_k)‖) for each step, then the returned point with its own gradient norm.
    ``step_size`` and ``momentum`` are numbers or one per row (see :func:`step_parameter`).

    A batch x0 of shape (n, d) is n independent problems: each row stops by the same rule
    with its own tolerance and is frozen from then on, so row i ends exactly where the run of
    row i alone ends; ``row_steps`` and ``row_status`` give each row's outcome, ``steps`` the
    most evaluations, ``residual_norm`` the largest final gradient norm (a float). One loop
    for both: a vector is one row (its masks never freeze part of it), on its own shape, so
    that autograd through the loop records exactly the arithmetic of the iteration.

    The gradient norm read each step (one host read) is also the finiteness test: a NaN or
    Inf in ∇f, or an iterate that overflowed, shows there."""
    xp, oracle, rtol, atol, max_steps = prepare(grad, x0, rtol, atol, max_steps)
    s = step_parameter(step_size, "step_size", x0, low=0.0)
    momentum = step_parameter(momentum, "momentum", x0, low=0.0, high=1.0)
    accelerated = not (isinstance(momentum, float) and momentum == 0.0)
    with quiet(xp):      # an overflowing norm is recomputed scaled (host_norm), not warned of
        result = _loop(xp, ops(xp), oracle, x0, s, momentum, accelerated, max_steps, rtol,
                       atol, History() if history else None)
    if x0.ndim == 1:
        result.row_steps, result.row_status = None, None
    return result


class as_rows:
    """One vector as a batch of one row, and back: ``x0`` of shape (1, d), callbacks that take
    and return rows (the caller's functions still see vectors), and the result as a one-vector
    result (x of shape (d,), no per-row fields). A batch passes through unchanged."""

    def __init__(self, x0):
        self.vector, self.given = x0.ndim == 1, x0
        self.x0 = x0[None] if self.vector else x0

    def oracle(self, fn):
        """fn on rows: for a vector, fn(x[0])[None] (with fn's own attributes, e.g. a count)."""
        if not self.vector:
            return fn
        return _RowCallback(fn)

    def wrap(self, fn):
        """A callback of arrays (hvp(x, v)) on rows."""
        if not self.vector:
            return fn
        return lambda *args: fn(*(a[0] for a in args))[None]

    def scalar(self, fn):
        """A callback returning one value per row (an objective) on rows."""
        if not self.vector:
            return fn
        return lambda x: fn(x[0])

    def result(self, result):
        if not self.vector:
            return result
        # no step taken: the start itself (the caller's object)
        result.x = self.given if result.x is self.x0 else result.x[0]
        if result.history is not None:
            result.history.iterates = [x[0] for x in result.history.iterates]
        result.row_steps, result.row_status = None, None
        return result


class _RowCallback:
    """A vector callback seen as a callback on one row (its other attributes: the callback's)."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, x):
        return self.fn(x[0])[None]

    def __getattr__(self, name):
        return getattr(self.fn, name)


class _Rows:
    """Which rows have stopped, and when: the stopping rule's bookkeeping on the host (one
    NumPy array per quantity for n rows)."""

    def __init__(self, n, max_steps, rtol, atol):
        self.rtol, self.atol, self.tol = rtol, atol, None
        self.done = np.zeros(n, dtype=bool)
        self.steps = np.full(n, max_steps)
        self.stop = np.zeros(n)
        self.n_done = 0

    def observe(self, gn, k, name):
        """Read step k's gradient norms (NaN/Inf raise); True when every row has stopped."""
        gn = np.atleast_1d(gn)
        raise_if_not_finite(float(gn[~self.done].max()), name, k + 1)
        if self.tol is None:
            self.tol = np.maximum(self.atol, self.rtol * gn)
        newly = ~self.done & (gn <= self.tol)
        if newly.any():
            self.done |= newly
            self.steps[newly] = k + 1
            self.stop[newly] = gn[newly]
            self.n_done = int(self.done.sum())
        self.largest = float(gn.max())
        return self.n_done == self.done.size


class _OneRow:
    """The same bookkeeping for one vector, in Python floats (no array per step: the loop's
    cost per step is then the iteration's own)."""

    def __init__(self, max_steps, rtol, atol):
        self.rtol, self.atol, self.tol = rtol, atol, None
        self.steps, self.stop, self.n_done = max_steps, 0.0, 0

    def observe(self, gn, k, name):
        gn = float(gn)
        raise_if_not_finite(gn, name, k + 1)
        if self.tol is None:
            self.tol = max(self.atol, self.rtol * gn)
        if gn <= self.tol:
            self.steps, self.stop, self.n_done = k + 1, gn, 1
        self.largest = gn
        return self.n_done == 1

    @property
    def done(self):
        return np.array([self.n_done == 1])


def _loop(xp, o, oracle, x0, s, momentum, accelerated, max_steps, rtol, atol, rec):
    """The iteration on independent rows (a vector: one row), converged rows frozen."""
    n = x0.shape[0] if x0.ndim == 2 else 1
    book = _Rows(n, max_steps, rtol, atol) if x0.ndim == 2 else _OneRow(max_steps, rtol, atol)
    name = f"the output of {oracle.name}"
    x = y = x0
    all_done = False
    for k in range(max_steps):
        g = oracle(y)
        if book.observe(host_norm(xp, g), k, name):
            all_done = True
            break
        if rec is not None:
            rec.record(x, book.largest)
        x_new = y - s * g
        y_new = x_new + momentum * (x_new - x) if accelerated else x_new
        if book.n_done:      # (some rows of a batch) a converged row keeps its y and its x
            frozen = xp.asarray(book.done, device=device(x0))[:, None]
            x, y = o.where(frozen, x, x_new), o.where(frozen, y, y_new)
        else:
            x, y = x_new, y_new
    out = y if all_done else (o.where(xp.asarray(book.done, device=device(x0))[:, None], y, x)
                              if book.n_done else x)
    last = None
    if all_done:
        last = float(np.max(book.stop))
        if rec is not None:
            rec.record(out, last)
    result = finish(xp, oracle, out, int(np.max(book.steps)),
                    Status.CONVERGED if all_done else Status.MAX_STEPS, rec, last)
    result.row_steps = np.atleast_1d(np.asarray(book.steps))
    result.row_status = tuple(Status.CONVERGED if d else Status.MAX_STEPS for d in book.done)
    return result
