"""Matrix-free conjugate gradient, batched over a leading task dimension (docs/mathematics.md §4)."""
from __future__ import annotations

import numpy as np
from array_api_compat import device

from solvers._common import (array_namespace, checked, on_host, ops, pow2_scale, quiet,
                             raise_if_not_finite, to_host)
from solvers._result import History, NonFiniteIterate, SolverBreakdown, SolverResult, Status
from validation import check_array, check_steps, check_tolerances

__all__ = ["cg", "DEVICE_CHECK_EVERY"]

#: on a device (CUDA), a tolerance-driven CG reads its exit test back every this many steps
DEVICE_CHECK_EVERY = 8


def cg(matvec, rhs, *, x0=None, max_steps=None, rtol=1e-5, atol=0.0, history=False,
       on_breakdown="raise", check_every=None) -> SolverResult:
    """Solve M x = rhs for a symmetric positive definite M given as ``matvec``.

    ``rhs`` has shape (d,) or (n_tasks, d); ``matvec`` maps arrays of that shape to the same
    shape (row i is M_i x_i); its output is validated (shape, library, dtype, device) on its
    first call. Stops when every row's residual ‖rhs − M x‖ is at most max(atol, rtol·‖rhs‖)
    (status CONVERGED) or after ``max_steps`` steps (MAX_STEPS; default 10·d as in SciPy). With
    rtol = atol = 0 it takes exactly ``max_steps`` steps unless a residual becomes exactly zero.

    Rows are independent: a row that has converged, or that meets non-positive curvature
    pᵀMp ≤ 0 (its M_i not positive definite), is frozen while the others go on; each row ends
    where it would end alone. Breakdown raises :class:`SolverBreakdown`, or with
    ``on_breakdown='return'`` freezes that row at its last iterate (row status BREAKDOWN; the
    run's status is BREAKDOWN if any row broke down). A row whose residual is already below
    eps·‖rhs‖ (solved to working precision) when its curvature vanishes — p underflowing after
    many steps with rtol = atol = 0 — is converged, not broken down. A NaN or Inf in pMp or in
    a residual norm (quantities the iteration computes anyway) raises
    :class:`NonFiniteIterate`; the returned iterate is scanned once at the end.

    Host reads (see :func:`solvers.count_host_reads`): on the host (NumPy, torch CPU) the exit
    test is read every step. On a device it is read every ``check_every`` steps (default
    :data:`DEVICE_CHECK_EVERY`; for fixed-step runs with rtol = atol = 0, only once, at the end)
    while converged and broken-down rows are frozen by on-device masks, so the result (iterate,
    steps per row, status) is identical to reading every step; only ``evaluations`` then
    counts the extra, discarded matrix-vector products. ``history=True`` reads every step.

    ``steps`` counts the steps of the iteration (the most any row took); ``evaluations``
    counts matvec calls (one more is made when x0 is given); batched runs also give
    ``row_steps`` and ``row_status`` per row.
    """
    if on_breakdown not in ("raise", "return"):
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
        # end (never 1, which would pick the every-step path for a vector, nor max_steps = 1,
        # which would read at step 0 as well)
        check_every = max_steps + 2 if rtol == atol == 0.0 else DEVICE_CHECK_EVERY
    matvec = checked(matvec, rhs, "matvec")
    if x0 is not None:
        check_array(x0, "x0", like=rhs, shape=rhs.shape)
    o = ops(xp)
    # CG is linear in (rhs, x0): each row is solved for rhs/s with s the power of two of its
    # largest entry (pow2_scale: exact), and the solution scaled back. Every step is then the
    # same run bitwise, except that rᵀr and pᵀMp cannot underflow or overflow at any scale of
    # the data (at ‖rhs‖ ~ 1e-170 in float64 rᵀr would be 0 and CG would stop at x = 0)
    s = pow2_scale(xp, rhs)
    s = xp.ones_like(rhs[..., 0]) if s is None else s    # a library without frexp: unscaled
    rows = s[..., None]
    rhs = rhs / rows
    evals = 0
    if x0 is None:
        x = xp.zeros_like(rhs)
        r = rhs
    else:
        x = x0 / rows
        r = rhs - matvec(x)
        evals += 1
    rhs_norm = o.norm(rhs)
    tol = o.maximum(rtol * rhs_norm, atol / s)
    # below this residual a row is solved to working precision: if its curvature pᵀMp then
    # vanishes (underflow of an ever smaller p, possible with rtol = atol = 0), it is converged
    floor = float(xp.finfo(rhs.dtype).eps) * rhs_norm
    run = _vector_cg if rhs.ndim == 1 and check_every == 1 else _masked_cg
    out = run(xp, o, matvec, x, r, tol, floor, s, max_steps=max_steps, check_every=check_every,
              rec=History() if history else None, on_breakdown=on_breakdown, evals=evals)
    if x0 is not None and out.steps == 0:
        out.x = x0          # no step taken: the start itself, not its scaled round trip
    return out


def _breakdown(step, curvature):
    return SolverBreakdown(f"CG breakdown at step {step}: matvec is not positive definite "
                           f"(p^T M p = {curvature:.3g} <= 0)")


def _vector_cg(xp, o, matvec, x, r, tol, floor, s, *, max_steps, check_every, rec,
               on_breakdown, evals):
    """One vector on the host: the exit tests read as Python floats every step, no masks.
    x, r are those of rhs/s (see :func:`cg`); the result and the history are scaled back."""
    tol, floor, s = to_host(tol, floor, s)
    rr = o.dot(r, r)
    p = r
    steps, status = 0, Status.MAX_STEPS
    while True:
        rnorm = to_host(o.sqrt(o.plain(rr)))
        if rec is not None:
            rec.record(x * s, rnorm * s)
        raise_if_not_finite(rnorm, "the CG residual", steps)
        if rnorm <= tol:
            status = Status.CONVERGED
            break
        if steps >= max_steps:
            break
        Mp = matvec(p)
        evals += 1
        pMp = o.dot(p, Mp)
        curvature = to_host(pMp)
        if not curvature > 0:
            raise_if_not_finite(curvature, "the curvature p^T M p returned by matvec", steps)
            if rnorm <= floor:
                status = Status.CONVERGED
                break
            if on_breakdown == "raise":
                raise _breakdown(steps, curvature)
            status = Status.BREAKDOWN
            break
        alpha = rr / pMp
        x = x + alpha * p
        r = r - alpha * Mp
        rr_new = o.dot(r, r)
        p = r + (rr_new / rr) * p
        rr = rr_new
        steps += 1
    x = x * s
    if not to_host(o.all(o.isfinite(o.plain(x)))):
        raise_if_not_finite(float("nan"), "the CG iterate", steps)
    return SolverResult(x=x, steps=steps, residual_norm=rnorm * s, status=status,
                        evaluations={"matvec": evals}, history=rec)


def _masked_cg(xp, o, matvec, x, r, tol, floor, s, *, max_steps, check_every, rec,
               on_breakdown, evals):
    """Rows frozen by masks on the arrays' own device; the exit test read every
    ``check_every`` steps. Row i takes exactly the steps, and ends at exactly the iterate, of
    :func:`_vector_cg` on that row alone. x, r are those of rhs/s (see :func:`cg`), each row
    with its own s; the result and the history are scaled back."""
    rows = s[..., None]
    rr = o.dot(r, r)
    zero = xp.zeros_like(rr)
    halted = zero != zero                      # rows stopped by pMp ≤ 0 or NaN (frozen)
    classified = halted                        # halted rows already judged on the host
    halt_pMp = zero                            # their curvature when they stopped
    row_steps = xp.zeros(rr.shape, dtype=xp.int64, device=device(rr))
    benign = np.zeros(rr.shape, dtype=bool)    # host: stopped at the rounding floor (converged)
    broken = np.zeros(rr.shape, dtype=bool)    # host: broken down (on_breakdown='return')
    p = r
    it, next_check = 0, 0 if check_every == 1 else check_every

    def judge(final):
        """One host read: any row still live, any freshly halted, any non-finite residual;
        at the end also every row's steps and convergence and the iterate's finiteness."""
        nonlocal classified
        live = ~(conv | halted)
        fresh = halted & ~classified
        arrays = [o.any(live), o.any(fresh), ~o.all(o.isfinite(o.plain(rr)))]
        if final:
            arrays += [row_steps, conv, o.all(o.isfinite(o.plain(x * rows))), rnorm * s]
        values = to_host(*arrays)
        if values[1] or values[2]:
            _classify(o, fresh, halt_pMp, rnorm, floor, row_steps, benign, broken, on_breakdown)
            classified = halted
        return values

    with quiet(xp):
        while True:
            rnorm = o.sqrt(o.plain(rr))
            conv = rnorm <= tol
            if rec is not None:
                rec.record(x * rows, to_host(rnorm * s) if rnorm.ndim == 0 else rnorm * s)
            if it == max_steps:
                values = judge(final=True)
                break
            if it == next_check:
                next_check += check_every
                if not judge(final=False)[0]:
                    values = judge(final=True)
                    break
            Mp = matvec(p)
            evals += 1
            pMp = o.dot(p, Mp)
            live = ~(conv | halted)
            go = live & (pMp > 0)              # False for pMp ≤ 0 and for NaN
            bad = live ^ go
            halted = halted | bad
            halt_pMp = o.where(bad, o.plain(pMp), halt_pMp)
            alpha = o.where(go, rr / pMp, zero)
            x = x + alpha[..., None] * p
            r = r - alpha[..., None] * Mp
            rr_new = o.dot(r, r)
            p = r + o.where(go, rr_new / rr, zero)[..., None] * p
            rr = rr_new
            row_steps = row_steps + go
            it += 1
    steps_h, conv_h, x_finite, rnorm_h = values[3:]
    steps_h = np.asarray(steps_h).astype(np.int64)
    done = np.asarray(conv_h, dtype=bool) | benign
    steps = int(steps_h.max()) if steps_h.size else 0
    if not x_finite:
        raise NonFiniteIterate(f"the CG iterate became NaN or Inf at step {steps}")
    status = (Status.BREAKDOWN if broken.any() else
              Status.CONVERGED if done.all() else Status.MAX_STEPS)
    batched = steps_h.ndim == 1
    row_status = tuple(Status.BREAKDOWN if b else Status.CONVERGED if c else Status.MAX_STEPS
                       for b, c in zip(broken, done)) if batched else None
    return SolverResult(x=x * rows, steps=steps, residual_norm=rnorm * s if batched else rnorm_h,
                        status=status, evaluations={"matvec": evals}, history=rec,
                        row_steps=steps_h if batched else None, row_status=row_status)


def _classify(o, fresh, halt_pMp, rnorm, floor, row_steps, benign, broken, on_breakdown):
    """Judge freshly halted rows on the host (one read; only when some row stopped): a
    non-finite curvature or residual raises, a vanishing curvature at the rounding floor is
    convergence, any other non-positive curvature is a breakdown."""
    fresh, curv, rn, fl, steps = (np.atleast_1d(v) for v in
                                  to_host(fresh, halt_pMp, rnorm, floor, row_steps))
    fresh = fresh.astype(bool)
    bad_res = ~np.isfinite(rn)
    if bad_res.any():
        i = int(np.flatnonzero(bad_res)[0])
        raise_if_not_finite(float(rn[i]), "the CG residual", int(steps[i]))
    bad_curv = fresh & ~np.isfinite(curv)
    if bad_curv.any():
        i = int(np.flatnonzero(bad_curv)[0])
        raise_if_not_finite(float(curv[i]), "the curvature p^T M p returned by matvec",
                            int(steps[i]))
    at_floor = fresh & (rn <= fl)
    new_broken = fresh & ~at_floor
    benign |= at_floor.reshape(benign.shape)
    if new_broken.any():
        i = int(np.flatnonzero(new_broken)[0])
        if on_breakdown == "raise":
            raise _breakdown(int(steps[i]), float(curv[new_broken].min()))
        broken |= new_broken.reshape(broken.shape)
