"""Diagnosis: which known wrong answer a failing meta-gradient is closest to.

On the instance where an implementation failed, the checker computes (in float64) the answers
that known mistakes produce (docs/mathematics.md §1–§7) and names the one the output matches:
first-order MAML ∇L(φ*), Reptile's θ − φ*, the inner loss's gradient, the inverse without λ,
H⁻¹∇L, a damped or shifted system sI + H/λ′ (the paper's reference code defaults to
2I + H/(λ + 10)), CG on the normal equations or on the right system stopped after k steps, an
inner solve stopped after k steps, a Neumann series (the fixed-point hypergradient) with too
few terms or not converged, or with its own step α — "α too large" when α‖I + H/λ‖ ≥ 2
(docs/mathematics.md §4a) —, a missing or extra factor (λ, 1/λ, λ², 2, −1), the query
data replaced by the inner data (or the other way round), θ in place of φ*, θ ignored, an
unregularised inner solve, the answer of an earlier task, single-precision rounding. A
candidate is named when it explains the error: ‖g − candidate‖ ≤ 5% of ‖g − g*‖ (and less than
any other); a fitted constant factor, shifted system or Neumann step only when it explains it to 1e-6. Otherwise the diagnosis says how the error looks (one coordinate, a small
relative error) or "no known defect".
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from solvers import ImplicitSystem
from theory.quadratic import QuadraticTask

__all__ = ["Diagnosis", "diagnose", "candidates", "cg_iterates"]

MATCH = 0.05        #: a named wrong answer explains the error when it is within 5% of it
FIT_MATCH = 1e-6    #: a fitted factor or shifted system must explain it to rounding
NO_DEFECT = "no known defect"


@dataclass
class Diagnosis:
    """name: the closest known wrong answer (or a description of the error, or
    'no known defect'); explained: ‖g − candidate‖/‖g − g*‖ for it (0 = exactly that answer);
    also: other candidates that explain it equally well on this instance; ranking: the five
    closest candidates with their ratios; decisive: False when a rescaled exact answer αg*
    explains the output as well as the named answer does (always so when d = 1, where every
    candidate is a multiple of g*): the instance cannot tell them apart, and the name is a
    coincidence unless a separating instance confirms it."""

    name: str
    explained: float | None = None
    also: list = field(default_factory=list)
    ranking: list = field(default_factory=list)
    decisive: bool = True

    @property
    def known(self) -> bool:
        return self.explained is not None and self.explained <= MATCH

    def __str__(self) -> str:
        if self.explained is None:
            return self.name
        text = f"{self.name} (explains the error to {self.explained:.1e})"
        if self.also:
            text += "; equally: " + ", ".join(self.also)
        return text

    def as_dict(self) -> dict:
        return {"name": self.name, "explained": self.explained, "also": list(self.also),
                "ranking": [[n, float(r)] for n, r in self.ranking], "decisive": self.decisive}


def _f64(x):
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def cg_iterates(matvec, rhs, steps: int, x0=None):
    """Plain float64 CG from x0 (default 0) for ``steps`` steps; yields the iterate after each
    step (1, 2, …). Stops early when the residual vanishes."""
    x = np.zeros_like(rhs) if x0 is None else np.array(x0, dtype=np.float64)
    r = rhs - (matvec(x) if x0 is not None else 0.0)
    p = r.copy()
    rr = float(r @ r)
    for _ in range(steps):
        if rr == 0:
            yield x
            continue
        Mp = matvec(p)
        pMp = float(p @ Mp)
        if pMp <= 0:
            return
        a = rr / pMp
        x = x + a * p
        r = r - a * Mp
        rr_new = float(r @ r)
        p = r + (rr_new / rr) * p
        rr = rr_new
        yield x


def _previous_residual_cg(matvec, rhs, steps: int):
    """CG with one slip: the new direction is r_old + (‖r_new‖²/‖r_old‖²)p instead of r_new + …
    (yields the iterates; stops when they stop being finite)."""
    x, r, p = np.zeros_like(rhs), rhs.copy(), rhs.copy()
    with np.errstate(all="ignore"):
        for _ in range(steps):
            Mp = matvec(p)
            rr, pMp = float(r @ r), float(p @ Mp)
            if rr == 0 or pMp == 0 or not np.isfinite(pMp):
                return
            a = rr / pMp
            x, r_new = x + a * p, r - a * Mp
            p = r + (float(r_new @ r_new) / rr) * p
            r = r_new
            if not np.all(np.isfinite(x)):
                return
            yield x


#: the Neumann terms / fixed-point iterations the catalogue tries
NEUMANN_TERMS = 400


def neumann_iterates(matvec, rhs, alpha, terms: int):
    """The truncated Neumann series x_k = α Σ_{j<k}(I − αM)^j rhs in float64, k = 1…``terms``
    (yields each; stops when they stop being finite)."""
    x = np.zeros_like(rhs)
    with np.errstate(all="ignore"):
        for _ in range(terms):
            x = x + alpha * (rhs - matvec(x))
            if not np.all(np.isfinite(x)):
                return
            yield x


def neumann_step_fit(g, H, lam, v, terms: int):
    """(α, ‖g − x_k(α)‖) for the step α > 0 whose ``terms``-term Neumann series of
    M = I + H/λ comes closest to ``g`` (a search over α‖M‖ in [1e-3, 4], log-spaced, refined by
    golden sections), from M's eigendecomposition: x_k(α) = U((1 − (1 − αw)^k)/w ⊙ Uᵀv)."""
    w, U = np.linalg.eigh(ImplicitSystem.of_hessian(H, lam).matrix())
    vh, gh = U.T @ v, U.T @ g
    top = float(np.max(np.abs(w)))
    if top == 0 or np.any(w == 0):
        return None

    def miss(a):
        with np.errstate(all="ignore"):
            x = (1 - (1 - a * w) ** terms) / w * vh
            e = float(np.linalg.norm(gh - x))
        return e if math.isfinite(e) else math.inf

    grid = np.geomspace(1e-3, 4.0, 400) / top
    errs = [miss(a) for a in grid]
    i = int(np.argmin(errs))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    phi = (math.sqrt(5) - 1) / 2
    for _ in range(80):
        a, b = hi - phi * (hi - lo), lo + phi * (hi - lo)
        if miss(a) <= miss(b):
            hi = b
        else:
            lo = a
    best = (lo + hi) / 2
    return best, miss(best)


def _sym_solve(M, v):
    try:
        return np.linalg.solve(M, v)
    except np.linalg.LinAlgError:
        return None


def candidates(task, theta, ref, *, cg_steps=None, history=()) -> list[tuple[str, np.ndarray]]:
    """(name, vector) for every known wrong answer at this instance (float64). ``cg_steps``:
    the CG budget the implementation was given (budget mode), tried first; ``history``:
    (instance, exact meta-gradient) of instances evaluated earlier (for cached answers)."""
    from verify.tasks import float64_twin

    t64 = float64_twin(task)
    th = _f64(theta)
    lam = float(t64.lam)
    phi = _f64(ref.phi)
    g = _f64(ref.g)
    v = _f64(ref.outer_grad)
    H = _f64(ref.H)
    d = th.shape[0]
    eye = np.eye(d)
    out: list[tuple[str, np.ndarray]] = []
    add = lambda name, x: out.append((name, x)) if x is not None and np.all(np.isfinite(x)) else None  # noqa: E731

    def implicit(phi_at):
        Hk = H if isinstance(t64, QuadraticTask) else t64.hessian(phi_at)
        return lam * _sym_solve(Hk + lam * eye, _f64(t64.outer_grad(phi_at)))

    inner_grad = _f64(t64.inner_grad(phi))
    add("first-order MAML: ∇L(φ*) without the implicit Jacobian", v)
    add("Reptile's direction θ − φ* (not a gradient)", th - phi)
    add("the inner loss's gradient ∇L̂(φ*) = λ(θ − φ*) in place of ∇L(φ*)", inner_grad)
    add("the inverse without λ: (I + H)⁻¹∇L", _sym_solve(eye + H, v))
    add("H⁻¹∇L: the identity of I + H/λ dropped", _sym_solve(H, v) if np.linalg.cond(H) < 1e12 else None)
    add("(I − H/λ)∇L: a Neumann series cut after one term", v - H @ v / lam)
    add("the paper's reference code defaults: (2I + H/(λ + 10))⁻¹∇L", _sym_solve(2 * eye + H / (lam + 10), v))
    add("the implicit gradient at θ (θ in place of φ*)", implicit(th))
    add("∇L(θ): the outer gradient at θ, no inner solve", _f64(t64.outer_grad(th)))
    add("θ ignored: the meta-gradient at θ = 0", implicit(_inner_solution(t64, np.zeros(d))))
    add("the answer for λ = 1 (λ ignored)", _with_lam(t64, th, 1.0))
    if isinstance(t64, QuadraticTask):
        A, b, Aq, bq = (_f64(x) for x in (t64.A, t64.b, t64.A_query, t64.b_query))
        C = A + lam * eye
        add("∇L evaluated with A in place of A_query", lam * _sym_solve(C, A @ phi + bq))
        add("∇L evaluated with b in place of b_query", lam * _sym_solve(C, Aq @ phi + b))
        add("the inner loss used as the outer loss: λ(A + λI)⁻¹∇L̂(φ*)", lam * _sym_solve(C, A @ phi + b))
        add("the inner solution computed with λ = 1", lam * _sym_solve(C, Aq @ _sym_solve(A + eye, th - b) + bq))
        add("the implicit system built with A_query: (I + A_query/λ)⁻¹∇L", lam * _sym_solve(Aq + lam * eye, v))
        add("the inner problem solved with A_query in place of A",
            lam * _sym_solve(C, Aq @ _sym_solve(Aq + lam * eye, lam * th - b) + bq))
        add("λ(A + λI)⁻¹ and A_query multiplied in the wrong order",
            lam * Aq @ _sym_solve(C, phi) + lam * _sym_solve(C, bq))
        add("the inner solution with the sign of b flipped",
            lam * _sym_solve(C, Aq @ _sym_solve(C, lam * th + b) + bq))
        if np.linalg.cond(A) < 1e12:
            phi_u = _sym_solve(A, -b)
            add("an unregularised inner solve φ = argmin L̂", lam * _sym_solve(C, Aq @ phi_u + bq))
            add("an unregularised inner solve with first-order MAML", Aq @ phi_u + bq)
    # CG stopped early, on the right system, on the normal equations, on the paper's system
    system = ImplicitSystem.of_hessian(H, lam)
    M = system.matvec
    N = lambda w: M(M(w))  # noqa: E731
    P = system.damped(1.0, 10.0).matvec
    kmax = max(min(d + 2, 40), cg_steps or 0)
    first = [cg_steps] if cg_steps else []
    for label, mv, rhs in (("CG on I + H/λ", M, v), ("CG on the normal equations (I + H/λ)²g = (I + H/λ)∇L", N, M(v)),
                           ("CG on the paper's defaults 2I + H/(λ + 10)", P, v),
                           ("CG on I + H/λ started at ∇L", M, None)):
        its = list(cg_iterates(mv, rhs if rhs is not None else v, kmax, x0=None if rhs is not None else v))
        for k in first + [k for k in range(1, len(its) + 1) if k != cg_steps]:
            if 1 <= k <= len(its):
                add(f"{label} stopped after {k} step{'s' if k > 1 else ''}", its[k - 1])
    # CG whose new direction is built from the previous residual (betty's cg, as published),
    # on the inner objective's Hessian H + λI with the answer scaled by λ
    C_mv = lambda w: H @ w + lam * w  # noqa: E731
    for k, x in enumerate(_previous_residual_cg(C_mv, v, max(kmax, 2 * d)), start=1):
        add(f"CG with its direction built from the previous residual (betty's cg), {k} "
            f"step{'s' if k > 1 else ''}", lam * x)
    # the Neumann series at its default step α = λ/β, i.e. the fixed-point hypergradient of the
    # inner gradient step with η = 1/β (docs/mathematics.md §4a), cut after k terms
    beta, mu = t64.curvature_bounds()
    alpha = lam / beta
    budget = cg_steps or 0
    for k, x in enumerate(neumann_iterates(M, v, alpha, max(NEUMANN_TERMS, budget)), start=1):
        s = "s" if k > 1 else ""
        if k < budget:
            add(f"a Neumann series with too few terms: {k} of the {budget} budgeted "
                f"(α = λ/β)", x)
        elif k > budget:
            add(f"the fixed-point hypergradient not converged: {k} iteration{s} (η = 1/β; "
                f"equally, the Neumann series with α = λ/β, {k} term{s})", x)
    # inner solve stopped after k steps (gradient descent / Nesterov from θ, step 1/β)
    q = (math.sqrt(beta / mu) - 1) / (math.sqrt(beta / mu) + 1)
    for label, mom in (("gradient descent", 0.0), ("Nesterov", q)):
        x = y = th.copy()
        for k in range(1, 61):
            x_new = y - (_f64(t64.inner_grad(y)) + lam * (y - th)) / beta
            y, x = x_new + mom * (x_new - x), x_new
            if k in (1, 2, 3, 5, 10, 20, 30, 60):
                add(f"the inner solve stopped after {k} {label} step{'s' if k > 1 else ''}", implicit(x))
    for inst, g_old in history:
        if g_old.shape == g.shape and not np.array_equal(g_old, g):
            add(f"the answer of an earlier task ({inst!r}): a cached result", g_old)
    return out


def _collinear(x, g) -> bool:
    """Whether x is a multiple of g to rounding (always so when d = 1)."""
    x, g = _f64(x), _f64(g)
    if x.shape[0] == 1:
        return True
    ng, nx = float(np.linalg.norm(g)), float(np.linalg.norm(x))
    if ng == 0 or nx == 0:
        return True
    u = g / ng
    return float(np.linalg.norm(x - (x @ u) * u)) <= FIT_MATCH * nx


def _inner_solution(t64, theta):
    if isinstance(t64, QuadraticTask):
        lam = float(t64.lam)
        return np.linalg.solve(_f64(t64.A) + lam * np.eye(theta.shape[0]), lam * theta - _f64(t64.b))
    return t64.certified_solution(theta).phi


def _with_lam(t64, theta, lam):
    if not isinstance(t64, QuadraticTask) or float(t64.lam) == lam:
        return None
    A, b, Aq, bq = (_f64(x) for x in (t64.A, t64.b, t64.A_query, t64.b_query))
    C = A + lam * np.eye(theta.shape[0])
    return lam * np.linalg.solve(C, Aq @ np.linalg.solve(C, lam * theta - b) + bq)


_FACTORS = (("a wrong sign (−1 ×)", lambda lam: -1.0), ("a missing factor λ (g*/λ)", lambda lam: 1 / lam),
            ("an extra factor λ (λ g*)", lambda lam: lam), ("an extra factor λ² (λ² g*)", lambda lam: lam ** 2),
            ("a missing factor λ² (g*/λ²)", lambda lam: lam ** -2), ("a factor 2", lambda lam: 2.0),
            ("a factor 1/2", lambda lam: 0.5), ("a wrong sign and a factor λ", lambda lam: -lam),
            ("a wrong sign and a factor 1/λ", lambda lam: -1 / lam))


def diagnose(g_out, task, theta, ref, *, allowance=None, allowance32=None, cg_steps=None,
             history=()) -> Diagnosis:
    """Name the known wrong answer closest to ``g_out`` on this instance (see the module
    docstring). ``allowance`` and ``allowance32``: the float64 and float32 rounding allowances
    of a correct implementation (for the single-precision diagnosis)."""
    g = _f64(g_out)
    g_star = _f64(ref.g)
    err = float(np.linalg.norm(g - g_star))
    if err == 0 or not np.isfinite(err):
        return Diagnosis("non-finite output" if not np.isfinite(err) else NO_DEFECT)
    lam = float(task.lam)
    d = g.shape[0]
    named, fits = [], []   # named answers match within MATCH; generic fits only to rounding
    cands = candidates(task, theta, ref, cg_steps=cg_steps, history=history)
    for name, c in cands:
        named.append((name, float(np.linalg.norm(g - c)) / err))
    # a constant factor: g = c g*
    ng = float(g_star @ g_star)
    rescaled = 1.0   # how well the best rescaled g* explains the error (0: exactly; g* = 0: not)
    if ng > 0:
        c = float(g @ g_star) / ng
        fit = rescaled = float(np.linalg.norm(g - c * g_star)) / err
        # a known factor is named only when it explains the error (not merely when the fitted
        # constant is near it: with λ = 1, "a missing factor λ" is g* itself)
        for name, f in _FACTORS:
            explained = float(np.linalg.norm(g - f(lam) * g_star)) / err
            if explained <= MATCH:
                named.append((name, max(fit, explained)))
                break
        else:
            if d >= 2:
                shown = f"1 {'+' if c > 1 else '−'} {abs(c - 1):.2g}" if abs(c - 1) < 1e-3 else f"{c:.6g}"
                fits.append((f"the exact meta-gradient scaled by {shown}", fit))
    # a damped or shifted system: ∇L = s g + t H g for constants s, t (needs d ≥ 3 to mean anything)
    if d >= 3:
        H = _f64(ref.H)
        v = _f64(ref.outer_grad)
        # (when Hg is a multiple of g, s and t are not determined: no shifted system to name)
        (s, t), *_ = np.linalg.lstsq(np.stack([g, H @ g], axis=1), v, rcond=None)
        # (sI + tH)⁻¹∇L with tλ = s is (I + H/λ)⁻¹∇L scaled by 1/s: the constant factor above,
        # with one parameter more; it is not a second explanation
        scaling = abs(t * lam - s) <= FIT_MATCH * abs(s)
        if (np.isfinite(s) and np.isfinite(t) and not scaling and not _collinear(H @ g, g)
                and abs(t) * np.linalg.norm(H, 2) > 1e-6 * abs(s)):
            try:
                g_fit = np.linalg.solve(s * np.eye(d) + t * H, v)
                fits.append((f"a damped/shifted system ({s:.4g}·I + H/{1 / t:.4g})⁻¹∇L",
                             float(np.linalg.norm(g - g_fit)) / err))
            except np.linalg.LinAlgError:
                pass
    # a Neumann series with its own step α (fitted): named "α too large" when α‖M‖ ≥ 2 (only
    # where a rescaled g* does not explain the output: on M = cI every series is a rescaling)
    if d >= 2 and rescaled > FIT_MATCH:
        H = _f64(ref.H)
        v = _f64(ref.outer_grad)
        top = float(np.max(np.abs(np.linalg.eigvalsh(ImplicitSystem.of_hessian(H, lam).matrix()))))
        for k in ([cg_steps] if cg_steps else range(2, 41)):
            if k < 2:
                continue
            fit = neumann_step_fit(g, H, lam, v, k)
            if fit is None:
                continue
            a, miss = fit
            what = (f"a Neumann series with α too large: α = {a:.4g}, α‖I + H/λ‖ = {a * top:.3g} "
                    f"≥ 2, so it diverges ({k} terms)" if a * top >= 2 else
                    f"a Neumann series with step α = {a:.4g} (α‖I + H/λ‖ = {a * top:.3g}), "
                    f"{k} terms")
            fits.append((what, miss / err))
    fits.sort(key=lambda x: x[1])
    ranking = sorted(named + fits, key=lambda x: x[1])[:5]
    best = min(named, key=lambda x: x[1]) if named else None
    if best is not None and best[1] <= MATCH:
        # among answers that explain the error equally well, the first listed (closed forms
        # before truncated iterations) is named
        tied = [(n, r) for n, r in named if r <= MATCH and r <= max(100 * best[1], 1e-9)]
        # where a rescaled g* explains the output as well as the named answer does (always so
        # when d = 1, where every candidate is a multiple of g*), the instance cannot tell them
        # apart: not decisive. A known constant factor is decisive where other answers are not
        # rescalings of g* (d ≥ 2).
        factor = tied[0][0] not in dict(cands)
        decisive = d >= 2 and (factor or rescaled > max(100 * tied[0][1], 1e-9))
        return Diagnosis(tied[0][0], tied[0][1], [n for n, _ in tied[1:4]], ranking,
                         decisive=decisive)
    if fits and fits[0][1] <= FIT_MATCH:
        return Diagnosis(fits[0][0], fits[0][1], [], ranking)
    diff = np.abs(g - g_star)
    rel = err / max(float(np.linalg.norm(g_star)), 1e-300)
    if d > 1 and float(np.sort(diff)[-2]) <= 1e-3 * float(diff.max()):
        i = int(np.argmax(diff))
        return Diagnosis(f"an error confined to coordinate {i} (relative error {rel:.1e})", None, [], ranking)
    eps32 = float(np.finfo(np.float32).eps)
    if allowance32 is not None and 0.05 * eps32 * float(np.linalg.norm(g_star)) <= err <= allowance32:
        return Diagnosis(f"consistent with single-precision (float32) rounding: error {rel:.1e} "
                         f"relative, above float64's allowance and within float32's", None, [], ranking)
    if rel < 1e-3:
        return Diagnosis(f"a small relative error {rel:.1e} (a loose solver tolerance, too few "
                         f"steps, or a perturbation): {NO_DEFECT}", None, [], ranking)
    return Diagnosis(NO_DEFECT, None, [], ranking)
