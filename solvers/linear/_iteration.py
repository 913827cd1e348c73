"""The one loop every linear solver of the table runs: rows (independent systems M_i x_i = b_i)
stopped by masks on the arrays' own device, the exit test read every ``check_every`` steps.

A solver is an *iteration*: an object made from the scaled start (x₀, r₀ = b − Mx₀) that knows
its residual norm per row and advances every live row by one step. This module does the rest,
once for all of them: argument checks, the exact power-of-two scaling of each right-hand side
(every iteration here is linear in (b, x₀), so each step is the same run bitwise while inner
products can no longer underflow or overflow), the stopping rule
‖r‖ ≤ max(atol, rtol·‖b‖), rows frozen when they stop, history, host reads, the judgement of
rows that stop for a reason of the iteration's own (CG's non-positive curvature, a diverging
series) and the result.

The same code runs one vector (0-d masks) and a stack of them; row i of a stack ends exactly
where the run of row i alone ends.
"""
from __future__ import annotations

import numpy as np
from array_api_compat import device

from solvers._common import (array_namespace, checked, on_host, ops, pow2_scale, quiet,
                             raise_if_not_finite, to_host)
from solvers._result import History, NonFiniteIterate, SolverResult, Status
from validation import check_array, check_steps, check_tolerances

__all__ = ["DEVICE_CHECK_EVERY", "ON_BREAKDOWN", "solve"]

#: on a device (CUDA), a tolerance-driven solve reads its exit test back every this many steps
DEVICE_CHECK_EVERY = 8
ON_BREAKDOWN = ("raise", "return")


def solve(make, matvec, rhs, *, x0=None, max_steps=None, rtol=1e-5, atol=0.0, history=False,
          on_breakdown="raise", check_every=None) -> SolverResult:
    """Run the iteration ``make(xp, o, matvec, b, x, r)`` on M x = rhs (see the module
    docstring; ``make`` is called with the scaled right-hand side b, start x and residual r).

    ``rhs`` has shape (d,) or (n, d); ``matvec`` maps arrays of that shape to the same shape
    (row i is M_i x_i), its output validated on its first call. Stops when every row's
    residual is at most max(atol, rtol·‖rhs‖) (CONVERGED), or after ``max_steps`` steps
    (MAX_STEPS; default 10·d). A row the iteration halts (its ``advance`` says so) is frozen at
    its last iterate; ``on_breakdown='raise'`` raises the iteration's own error for it, 'return'
    reports the iteration's ``halt_status`` for that row. A row halted while its residual is
    already at working precision (below eps·‖rhs‖) is converged. A NaN or Inf in a residual norm
    or in the value the iteration halted on raises :class:`NonFiniteIterate`.

    Host reads: every step on the host (NumPy, torch CPU) or with ``history``; on a device every
    ``check_every`` steps (default :data:`DEVICE_CHECK_EVERY`; a fixed-step run, rtol = atol =
    0, reads once, at the end); the result is the same as reading every step."""
    if on_breakdown not in ON_BREAKDOWN:
        raise ValueError(f"on_breakdown must be 'raise' or 'return', got {on_breakdown!r}")
    check_array(rhs, "rhs", ndim=(1, 2))
    xp = array_namespace(rhs)
    rtol, atol, max_steps = check_tolerances(rtol, atol, max_steps)
    if max_steps is None:
        max_steps = 10 * rhs.shape[-1]
    if check_every is not None:
        check_every = check_steps(check_every, "check_every")
        if check_every < 1:
            raise ValueError(f"check_every must be a positive integer, got {check_every!r}")
    if history or on_host(rhs):
        check_every = 1 if history or check_every is None else check_every
    elif check_every is None:
        # fixed steps: an interval past the last step, so the exit test is read once, at the
        # end (never 1, nor max_steps = 1, which would read at step 0 as well)
        check_every = max_steps + 2 if rtol == atol == 0.0 else DEVICE_CHECK_EVERY
    matvec = checked(matvec, rhs, "matvec")
    if x0 is not None:
        check_array(x0, "x0", like=rhs, shape=rhs.shape)
    o = ops(xp)
    s = pow2_scale(xp, rhs)
    s = xp.ones_like(rhs[..., 0]) if s is None else s    # a library without frexp: unscaled
    rows = s[..., None]
    b = rhs / rows
    evals = 0
    if x0 is None:
        x, r = xp.zeros_like(b), b
    else:
        x = x0 / rows
        r = b - matvec(x)
        evals += 1
    rhs_norm = o.norm(b)
    tol = o.maximum(rtol * rhs_norm, atol / s)
    # below this residual a row is solved to working precision: a halt there is convergence
    floor = float(xp.finfo(rhs.dtype).eps) * rhs_norm
    it = make(xp, o, matvec, b, x, r)
    with quiet(xp):
        out = _loop(xp, o, it, tol, floor, s, max_steps=max_steps, check_every=check_every,
                    rec=History() if history else None, on_breakdown=on_breakdown, evals=evals)
    if x0 is not None and out.steps == 0:
        out.x = x0          # no step taken: the start itself, not its scaled round trip
    return out


def _loop(xp, o, it, tol, floor, s, *, max_steps, check_every, rec, on_breakdown, evals):
    rows = s[..., None]
    rn = o.plain(it.residual_norm())
    zero = xp.zeros_like(rn)
    halted = zero != zero                      # rows the iteration stopped (frozen)
    classified = halted                        # halted rows already judged on the host
    halt_value = zero                          # the value each halted row stopped on
    row_steps = xp.zeros(rn.shape, dtype=xp.int64, device=device(rn))
    benign = np.zeros(rn.shape, dtype=bool)    # host: halted at the rounding floor (converged)
    broken = np.zeros(rn.shape, dtype=bool)    # host: halted (on_breakdown='return')
    step, next_check = 0, 0 if check_every == 1 else check_every
    vector = rn.ndim == 0

    def judge(final):
        """One host read: any row still live, any freshly halted, any non-finite residual;
        at the end also every row's steps and convergence and the iterate's finiteness."""
        nonlocal classified
        live = ~(conv | halted)
        fresh = halted & ~classified
        # (one vector: the masks are 0-d, their any/all the masks themselves)
        arrays = ([live, fresh, ~o.isfinite(rn)] if vector else
                  [o.any(live), o.any(fresh), ~o.all(o.isfinite(rn))])
        if final:
            arrays += [row_steps, conv, o.all(o.isfinite(o.plain(it.x * rows))), rn * s]
        values = to_host(*arrays)
        if values[1] or values[2]:
            _classify(it, fresh, halt_value, rn, floor, row_steps, benign, broken, on_breakdown)
            classified = halted
        return values

    while True:
        conv = rn <= tol
        if rec is not None:
            rec.record(it.x * rows, to_host(rn * s) if rn.ndim == 0 else rn * s)
        if step == max_steps:
            values = judge(final=True)
            break
        if step == next_check:
            next_check += check_every
            if not judge(final=False)[0]:
                values = judge(final=True)
                break
        live = ~(conv | halted)
        go, value = it.advance(live)
        evals += it.matvecs_per_step
        bad = live ^ go
        halted = halted | bad
        halt_value = o.where(bad, o.plain(value), halt_value)
        rn = o.plain(it.residual_norm())
        row_steps = row_steps + go
        step += 1
    steps_h, conv_h, x_finite, rn_h = values[3:]
    steps_h = np.asarray(steps_h).astype(np.int64)
    done = np.asarray(conv_h, dtype=bool) | benign
    steps = int(steps_h.max()) if steps_h.size else 0
    if not x_finite:
        raise NonFiniteIterate(f"{it.name_iterate} became NaN or Inf at step {steps}")
    if rec is not None:      # one entry per step some row took, and the start (a last loop
        del rec.iterates[steps + 1:], rec.residual_norms[steps + 1:]   # may have halted all)
    status = (it.halt_status if broken.any() else
              Status.CONVERGED if done.all() else Status.MAX_STEPS)
    batched = steps_h.ndim == 1
    row_status = tuple(it.halt_status if b else Status.CONVERGED if c else Status.MAX_STEPS
                       for b, c in zip(broken, done)) if batched else None
    return SolverResult(x=it.x * rows, steps=steps, residual_norm=rn * s if batched else rn_h,
                        status=status, evaluations={"matvec": evals}, history=rec,
                        row_steps=steps_h if batched else None, row_status=row_status)


def _classify(it, fresh, halt_value, rn, floor, row_steps, benign, broken, on_breakdown):
    """Judge freshly halted rows on the host (one read; only when some row stopped): a
    non-finite residual or halting value raises, a halt at the rounding floor is convergence,
    any other halt is the iteration's breakdown (raised, or recorded for 'return')."""
    fresh, value, res, fl, steps = (np.atleast_1d(v) for v in
                                    to_host(fresh, halt_value, rn, floor, row_steps))
    fresh = fresh.astype(bool)
    # (a row halted on a non-finite value first: its residual may be NaN only through the
    # masked update, 0·NaN)
    bad_value = fresh & ~np.isfinite(value)
    if bad_value.any():
        i = int(np.flatnonzero(bad_value)[0])
        raise_if_not_finite(float(value[i]), it.name_value, int(steps[i]))
    bad_res = ~np.isfinite(res)
    if bad_res.any():
        i = int(np.flatnonzero(bad_res)[0])
        raise_if_not_finite(float(res[i]), it.name_residual, int(steps[i]))
    at_floor = fresh & (res <= fl)
    new_broken = fresh & ~at_floor
    benign |= at_floor.reshape(benign.shape)
    if new_broken.any():
        i = int(np.flatnonzero(new_broken)[0])
        if on_breakdown == "raise":
            raise it.breakdown(int(steps[i]), float(value[i]))
        broken |= new_broken.reshape(broken.shape)
