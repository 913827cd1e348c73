"""Check anyone's meta-gradient: :func:`check_meta_gradient` and :func:`check_cg`.

Both draw instances from the checker's own seeded stream (instance i of seed s depends on (s, i)
alone, on every machine, whatever else is imported), evaluate the implementation on each, hold it to an exact reference within a derived allowance,
shrink a failure to a small instance and diagnose it. See docs/checker.md.
"""
from __future__ import annotations

import functools
import inspect
import json
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from solvers import ImplicitSystem
from theory.bounds import (cg_error_bound, lemma3_B1, lemma3_bound_sharp, minres_error_bound,
                           neumann_contraction, neumann_error_bound, nesterov_distance_bound)
from theory.tolerances import rounding_allowance
from verify._threads import single_thread
from verify.checker.diagnosis import Diagnosis, diagnose
from verify.checker.instances import (Instance, build, corner_instances, diagnostic_instances, draw,
                                      shrink)
from verify.checker._calling import (DEFAULT_TIMEOUT, call_isolated, check_timeout, guarded,
                                     task_from, task_inputs, to_f64)
from verify.checker.reference import (EXTENDED, converged_allowance, exact_meta_gradient,
                                      krylov_iterate, rel)

__all__ = ["check_meta_gradient", "check_cg", "Report", "Failure", "inner_distance_bound",
           "budget_bound", "INNER_METHODS", "DEFAULT_TIMEOUT", "CheckerArgumentError"]

INNER_METHODS = ("any", "nesterov", "gd")
MAX_CONVERGED_STEPS = 20_000   #: the largest inner budget the checker asks for
SHRINK_BUDGET = 80             #: new evaluations shrinking a failure may spend


# -- results --------------------------------------------------------------------------------------
@dataclass
class Failure:
    """One failed comparison. check: 'converged' (against the exact meta-gradient), 'budget'
    (against Lemma 3 with Lemma 2's and CG's bounds at ``budgets`` = (K, M)), 'krylov' (the
    M-step CG iterate at a converged inner solve), 'cg' (a CG routine against the Krylov
    iterate) or 'output' (an exception, a wrong shape, NaN). measured: the error, allowed: what
    a correct implementation may reach; reference_norm: ‖reference‖; minimal: the instance is
    the shrunk one."""

    check: str
    instance: Instance
    measured: float
    allowed: float
    reference_norm: float
    statement: str
    budgets: tuple | None = None
    minimal: bool = False
    diagnosis: Diagnosis | None = None
    error: str | None = None
    details: dict = field(default_factory=dict)

    @property
    def relative(self) -> float:
        return self.measured / self.reference_norm if self.reference_norm else math.inf

    @property
    def ratio(self) -> float:
        return self.measured / self.allowed if self.allowed else math.inf

    def reproduce(self, backend="numpy", device="cpu", dtype="float64") -> str:
        opts = "" if backend == "numpy" else f", backend={backend!r}, device={device!r}"
        opts += "" if dtype == "float64" else f", dtype={dtype!r}"
        call = "fn(task, theta)" if self.budgets is None else (
            f"fn(task, theta, inner_steps={self.budgets[0]}, cg_steps={self.budgets[1]})")
        if self.check == "cg":
            return (f"from verify.checker import Instance, build; task, theta = "
                    f"build({self.instance!r}{opts}); M = I + A/λ, rhs = ∇L(Alg*(θ)); "
                    f"cg_fn(lambda w: M @ w, rhs, {self.budgets[1]})")
        return (f"from verify.checker import Instance, build; task, theta = "
                f"build({self.instance!r}{opts}); {call}")

    def describe(self, indent="  ", **build_opts) -> str:
        where = ""
        if self.budgets:
            where = (f" at m = {self.budgets[1]} CG steps" if self.check == "cg"
                     else f" at budgets K={self.budgets[0]}, M={self.budgets[1]}")
        lines = [f"{indent}{self.instance!r}{where}"]
        if self.error:
            lines.append(f"{indent}  {self.error}")
        else:
            lines.append(f"{indent}  error {self.measured:.3e} (relative {self.relative:.2e}) > "
                         f"allowed {self.allowed:.3e}  [{self.ratio:.3g} × the allowance]; "
                         f"{self.statement}")
        if self.diagnosis is not None:
            lines.append(f"{indent}  diagnosis: {self.diagnosis}")
        lines.append(f"{indent}  reproduce: {self.reproduce(**build_opts)}")
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {"check": self.check, "instance": self.instance.as_dict(),
                "measured": self.measured, "allowed": self.allowed,
                "reference_norm": self.reference_norm, "relative": _finite(self.relative),
                "ratio": _finite(self.ratio), "statement": self.statement,
                "budgets": list(self.budgets) if self.budgets else None, "minimal": self.minimal,
                "error": self.error,
                "details": {k: v for k, v in self.details.items() if not isinstance(v, np.ndarray)},
                "diagnosis": self.diagnosis.as_dict() if self.diagnosis else None}


def _finite(x):
    return x if math.isfinite(x) else None


@dataclass
class Report:
    """The outcome of a check. passed: no comparison failed. failures: the failed comparisons,
    the shrunk one first. instances: how many distinct instances were evaluated;
    worst_ratio: the largest error/allowance among comparisons that passed (how close a pass
    came to failing); diagnosis: the overall diagnosis (None when it passed); settings: how the
    check ran (seed, backend, budgets, …)."""

    implementation: str
    mode: str
    passed: bool
    failures: list
    instances: int
    worst_ratio: float
    diagnosis: Diagnosis | None
    settings: dict
    skipped: int = 0

    def __str__(self) -> str:
        return self.text()

    def text(self, more: str = "see report.failures") -> str:
        """The report as text; ``more``: where to find the failures beyond the six shown (the
        command line says ``--json``)."""
        s = self.settings
        head = (f"{'PASS' if self.passed else 'FAIL'}: {self.implementation} — {self.mode} check, "
                f"{s.get('backend', 'numpy')} {s.get('dtype', 'float64')} on {s.get('device', 'cpu')}, "
                f"seed {s.get('seed')}")
        if s.get("budgets"):
            head += f", budgets K={s['budgets'][0]}, M={s['budgets'][1]}"
        lines = [head, f"  {self.instances} instance{'s' if self.instances != 1 else ''} "
                       f"({s.get('corners', 0)} fixed corner instances, "
                       f"the rest drawn from seed {s.get('seed')}); {len(self.failures)} failed comparison"
                       f"{'s' if len(self.failures) != 1 else ''}"
                       + (f"; {self.skipped} skipped (see docs/checker.md)" if self.skipped else "")]
        if s.get("families"):
            lines.append(f"  task families: {', '.join(s['families'])}"
                         + (f" (the default with backend={s.get('backend', 'numpy')!r})"
                            if s.get("families_default") else ""))
        if s.get("not_evaluated"):
            lines.append(f"  a call did not return within {s.get('timeout'):g} s: the check stopped "
                         f"calling the implementation ({s['not_evaluated']} drawn instances not "
                         f"evaluated)")
        if self.passed:
            lines.append(f"  every error within its allowance; the closest came to "
                         f"{self.worst_ratio:.3g} × the allowance")
            return "\n".join(lines)
        lines.append(f"  diagnosis: {self.diagnosis}")
        opts = {k: s[k] for k in ("backend", "device", "dtype") if k in s}
        shown = self.failures[:6]
        for i, f in enumerate(shown):
            title = "minimal failing instance (shrunk)" if f.minimal else "failing instance"
            lines.append(f"  {title} [{f.check}]:")
            lines.append(f.describe(indent="    ", **opts))
        if len(self.failures) > len(shown):
            lines.append(f"  … and {len(self.failures) - len(shown)} more ({more})")
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {"implementation": self.implementation, "mode": self.mode, "passed": self.passed,
                "instances": self.instances, "skipped": self.skipped,
                "worst_ratio": _finite(self.worst_ratio),
                "diagnosis": self.diagnosis.as_dict() if self.diagnosis else None,
                "settings": self.settings, "failures": [f.as_dict() for f in self.failures]}

    def to_json(self, **kw) -> str:
        return json.dumps(self.as_dict(), indent=kw.pop("indent", 2), default=_jsonable, **kw)


def _jsonable(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


# -- calling the implementation -------------------------------------------------------------------
# (verify.checker._calling: own copies per call, read-only where the library allows, mutation
# detection, a time limit, every exception a finding)
def _to_f64(out):
    return to_f64(out)


def _call(fn, task, theta, *, timeout=DEFAULT_TIMEOUT, where=None, **kw):
    """(output as float64 NumPy, None) or (None, what went wrong) for fn(task, theta, **kw),
    called on its own copies of the task and θ (see verify.checker._calling)."""
    return call_isolated(lambda c: fn(task_from(task, c), c["theta"], **kw),
                         task_inputs(task, theta), dim=task.dim, timeout=timeout, where=where)


def _name(fn) -> str:
    mod = getattr(fn, "__module__", None)
    qual = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    return f"{mod}:{qual}" if mod else qual


# -- bounds of budget mode ------------------------------------------------------------------------
def inner_distance_bound(kappa: float, steps: int, distance: float, inner: str = "any") -> float:
    """‖φ_K − Alg*(θ)‖ after K steps from θ (docs/mathematics.md §3): Nesterov's
    √(κ+1)(1 − 1/√κ)^(K/2)‖θ − φ*‖, gradient descent's (1 − 1/κ)^K‖θ − φ*‖ (step 1/β), or
    the larger of the two for ``inner='any'`` (either method is accepted)."""
    if inner not in INNER_METHODS:
        raise ValueError(f"inner must be one of {INNER_METHODS}, got {inner!r}")
    nest = nesterov_distance_bound(kappa, steps, distance)
    gd = (1 - 1 / kappa) ** steps * distance if kappa > 1 else (0.0 if steps else distance)
    return {"nesterov": nest, "gd": gd, "any": max(nest, gd)}[inner]


#: the linear solvers the checker knows in budget mode (solvers.LINEAR_SOLVERS' names)
LINEAR_SOLVER_NAMES = ("cg", "minres", "neumann", "fixed_point")


def linear_step(constants, linear_solver: str, linear_options=None) -> float | None:
    """The step α of the Neumann series a budget-mode implementation declares: ``alpha``
    (default λ/β) for 'neumann', ηλ with η = ``step_size`` (default 1/β) for 'fixed_point'
    (docs/mathematics.md §4a); None for the Krylov solvers."""
    c, opts = constants, dict(linear_options or {})
    if linear_solver == "neumann":
        return float(opts.get("alpha", c.lam / c.beta))
    if linear_solver == "fixed_point":
        return float(opts.get("step_size", 1.0 / c.beta)) * c.lam
    return None


def budget_bound(constants, distance: float, inner_steps: int, cg_steps: int,
                 inner: str = "any", linear_solver: str = "cg",
                 linear_options=None) -> tuple[float, float, float]:
    """(bound, δ, δ′) for Algorithm 2 with K inner steps from θ and M steps of the linear solver
    from 0 (docs/mathematics.md §3–§5): δ from :func:`inner_distance_bound`, δ′ from the
    solver's bound (CG's Chebyshev bound by default; MINRES's residual bound over μ/λ, §4b; for
    the Neumann series and the fixed point ‖I − αM‖^M‖g*‖ with α of :func:`linear_step`, §4a) with
    ‖g*(φ)‖ ≤ (λ/μ)(B + Lδ), and Lemma 3 in its sharp form B₁δ + δ′."""
    c = constants
    delta = inner_distance_bound(c.kappa, inner_steps, distance, inner)
    delta_p = linear_delta(c, cg_steps, c.B + c.L * delta, linear_solver, linear_options)
    return lemma3_bound_sharp(c, delta, delta_p), delta, delta_p


def linear_delta(constants, steps: int, grad_bound: float, linear_solver: str = "cg",
                 linear_options=None) -> float:
    """δ′ of ``steps`` steps of ``linear_solver`` from 0 on (I + H/λ)g = ∇L with
    ‖∇L‖ ≤ ``grad_bound`` (so ‖g*‖ ≤ (λ/μ)·grad_bound) and M's eigenvalues in [μ/λ, β/λ]."""
    c = constants
    e0 = c.lam / c.mu * grad_bound
    if linear_solver == "cg":
        return cg_error_bound(c.kappa, steps, e0)
    spectrum = (c.mu / c.lam, c.beta / c.lam)
    if linear_solver == "minres":
        return minres_error_bound(steps, grad_bound, positive=spectrum)
    return neumann_error_bound(spectrum, linear_step(c, linear_solver, linear_options), steps, e0)


def _steps_until(fn, target, cap=MAX_CONVERGED_STEPS) -> int | None:
    """The smallest k ≤ cap with fn(k) ≤ target (fn non-increasing in k), or None."""
    if fn(cap) > target:
        return None
    lo, hi = 0, cap
    while lo < hi:
        mid = (lo + hi) // 2
        if fn(mid) <= target:
            hi = mid
        else:
            lo = mid + 1
    return lo


# -- the search -----------------------------------------------------------------------------------
@dataclass
class _Outcome:
    passed: bool
    failures: list
    ratio: float = 0.0
    skipped: int = 0


class _Search:
    """Corner instances, then instances 0, 1, … of the seeded stream (:func:`draw`) until the
    first failure, which is shrunk (:func:`shrink`, at most SHRINK_BUDGET new instances);
    every evaluation is memoised."""

    def __init__(self, evaluate: Callable[[Instance], _Outcome]):
        self.evaluate = evaluate
        self.cache: dict[Instance, _Outcome] = {}

    def probe(self, inst: Instance) -> _Outcome:
        if inst not in self.cache:
            self.cache[inst] = self.evaluate(inst)
        return self.cache[inst]

    def run(self, corners, drawn: Callable[[int], Instance], max_examples: int, *,
            max_kappa: float = 1e5):
        """(failures, instances evaluated, worst passing ratio, comparisons skipped) after the
        corners and up to ``max_examples`` instances ``drawn(0)``, ``drawn(1)``, …"""
        for inst in corners:
            self.probe(inst)
        corner_failed = [i for i in corners if not self.cache[i].passed]
        minimal = None
        for i in range(max_examples):
            inst = drawn(i)
            if not self.probe(inst).passed:
                minimal = shrink(inst, lambda c: not self.probe(c).passed, budget=SHRINK_BUDGET,
                                 max_kappa=max_kappa)
                break
        failures = []
        if minimal is not None:
            for f in self.cache[minimal].failures:
                f.minimal = True
                failures.append(f)
        for inst in corner_failed:
            if inst != minimal:
                failures += self.cache[inst].failures
        for inst, out in self.cache.items():
            if not out.passed and inst != minimal and inst not in corner_failed:
                failures += out.failures
        outs = list(self.cache.values())
        ratio = max([o.ratio for o in outs if o.passed] or [0.0])
        return failures, len(self.cache), ratio, sum(o.skipped for o in outs)


# -- check_meta_gradient --------------------------------------------------------------------------
class _MetaGradientCheck:
    def __init__(self, fn, *, budgets, inner, backend, device, dtype, families,
                 timeout=DEFAULT_TIMEOUT, linear_solver="cg", linear_options=None):
        self.fn, self.budgets, self.inner = fn, budgets, inner
        self.linear_solver, self.linear_options = linear_solver, dict(linear_options or {})
        self.opts = dict(backend=backend, device=device, dtype=dtype)
        self.families = families
        self.history: list = []
        self.timeout = timeout
        self.hung = None          # the first instance whose call did not return in time
        self.not_evaluated = 0    # instances drawn after that, not evaluated

    def _call(self, inst, task, theta, **kw):
        g, error = _call(self.fn, task, theta, timeout=self.timeout, where=inst, **kw)
        if error and error.startswith("did not return within") and self.hung is None:
            self.hung = inst
        if error and inst.family == "logistic" and error.startswith("raised AttributeError") \
                and "LogisticTask" in error:
            error += (" — a LogisticTask has no A or b (the families drawn with backend='torch' "
                      "include 'logistic' by default): use the task protocol (inner_grad, "
                      "inner_hvp, outer_grad, lam), or check quadratic tasks only with "
                      "families=('planted', 'paper') (--family planted --family paper)")
        return g, error

    def _prepare(self, inst):
        task, theta = build(inst, **self.opts)
        ref = exact_meta_gradient(task, theta)
        al = converged_allowance(task, theta, ref, dtype=self.opts["dtype"])
        return task, theta, ref, al

    def evaluate(self, inst: Instance) -> _Outcome:
        if self.hung is not None:
            # a call that never returned: each further instance would cost the time limit
            # again; the failure is recorded, the rest is not evaluated (and not counted)
            self.not_evaluated += 1
            return _Outcome(True, [])
        task, theta, ref, al = self._prepare(inst)
        if all(inst != old for old, _ in self.history):   # answers an implementation may have cached
            self.history = (self.history + [(inst, np.asarray(ref.g, dtype=np.float64))])[-64:]
        if self.budgets is None:
            return self._converged(inst, task, theta, ref, al)
        return self._budget(inst, task, theta, ref, al)

    def _fail_output(self, inst, ref, error, budgets=None):
        return Failure("output", inst, math.inf, 0.0, float(np.linalg.norm(np.asarray(ref.g, float))),
                       "the implementation must return a finite array of shape (d,)", budgets,
                       error=error, diagnosis=Diagnosis(f"the implementation {error}"))

    def _converged(self, inst, task, theta, ref, al) -> _Outcome:
        g, error = self._call(inst, task, theta)
        if error:
            return _Outcome(False, [self._fail_output(inst, ref, error)])
        measured = rel(g, ref.g)
        ok = measured <= al.total
        ratio = measured / al.total if al.total else (0.0 if measured == 0 else math.inf)
        if ok:
            return _Outcome(True, [], ratio)
        f = Failure("converged", inst, measured, al.total, _norm(ref.g),
                    "‖g − dθL(Alg*(θ))‖ ≤ rounding allowance (docs/mathematics.md §1, §10)",
                    details={"allowance": al.parts, "magnitudes": al.magnitudes})
        f.details["output"] = g
        return _Outcome(False, [f], ratio)

    def _budget(self, inst, task, theta, ref, al) -> _Outcome:
        from verify.tasks import float64_twin

        K, M = self.budgets
        t64 = float64_twin(task)
        th = np.asarray(_f64(theta))
        c = t64.constants(th)
        dist = float(np.linalg.norm(th - np.asarray(ref.phi, dtype=np.float64)))
        lam, mu = c.lam, c.mu
        B1 = lemma3_B1(c, sharp=True)
        failures, worst = [], 0.0
        # a budget at which φ is at rounding level: the inner error's effect on g is below
        # 1e-3 of the rounding allowance
        target = 1e-3 * al.total / max(B1 + lam / mu * c.L, 1e-300)
        k_conv = _steps_until(lambda k: inner_distance_bound(c.kappa, k, dist, self.inner), target)
        m_conv = _steps_until(lambda m: cg_error_bound(c.kappa, m, lam / mu * (c.B + c.L * dist)),
                              1e-3 * al.total, cap=max(50 * task.dim, 200))
        solver, opts = self.linear_solver, self.linear_options
        diverging = self._diverging(inst, task, ref, c)
        if diverging is not None:
            return _Outcome(False, [diverging], math.inf)
        if solver != "cg":
            m_conv = _steps_until(lambda m: linear_delta(c, m, c.B + c.L * dist, solver, opts),
                                  1e-3 * al.total, cap=max(50 * task.dim, 200))
        ladder = [(K, M), (2 * K, 2 * M), (4 * K, 4 * M)]
        if k_conv is not None and m_conv is not None:
            ladder.append((max(k_conv, K), max(m_conv, M)))
        for k, m in ladder:
            g, error = self._call(inst, task, theta, inner_steps=k, cg_steps=m)
            if error:
                return _Outcome(False, [self._fail_output(inst, ref, error, (k, m))])
            bound, delta, delta_p = budget_bound(c, dist, k, m, self.inner, solver, opts)
            allowed = bound + al.total
            measured = rel(g, ref.g)
            worst = max(worst, measured / allowed if allowed else 0.0)
            if measured > allowed:
                failures.append(Failure(
                    "budget", inst, measured, allowed, _norm(ref.g),
                    f"‖g − dθL(Alg*(θ))‖ ≤ B₁δ + δ′ + rounding with δ = {delta:.3g} "
                    f"({self.inner} inner bound) and δ′ = {delta_p:.3g} ({_SOLVER_LABEL[solver]} "
                    f"bound) (docs/mathematics.md §3–§5{_SOLVER_SECTION[solver]})", (k, m),
                    details={"delta": delta, "delta_prime": delta_p, "bound": bound,
                             "allowance": al.total, "output": g}))
                if solver != "cg" and k_conv is not None:
                    # for the diagnosis: the same linear budget with the inner solve converged
                    # (φ at rounding level), where the catalogue's answers at φ* apply
                    g_conv, error = self._call(inst, task, theta, inner_steps=max(k_conv, k),
                                               cg_steps=m)
                    if not error:
                        failures[-1].details["converged_inner"] = (max(k_conv, k), g_conv)
                break   # one failing budget is enough for this instance
        skipped = 0
        # (the Krylov comparison is CG's: its m-step iterate is the unique Krylov iterate)
        if not failures and k_conv is not None and solver == "cg":
            kf, sk = self._krylov(inst, task, theta, ref, al, max(k_conv, K))
            failures += kf
            skipped += sk
        return _Outcome(not failures, failures, worst, skipped)

    def _diverging(self, inst, task, ref, c):
        """For a declared Neumann series / fixed point: a Failure when its step α has
        ‖I − αM‖ ≥ 1 at this instance's system M = I + H(φ*)/λ (α‖M‖ ≥ 2: the series diverges
        whatever the budget, docs/mathematics.md §4a), else None."""
        alpha = linear_step(c, self.linear_solver, self.linear_options)
        if alpha is None:
            return None
        w = np.linalg.eigvalsh(ImplicitSystem.of_hessian(np.asarray(ref.H, dtype=np.float64),
                                                         task.lam).matrix())
        q = neumann_contraction((float(w[0]), float(w[-1])), alpha)
        if q < 1.0:
            return None
        top = float(np.max(np.abs(w)))
        name = (f"a Neumann series with α too large: α = {alpha:.4g}, α‖I + H/λ‖ = "
                f"{alpha * top:.3g} ≥ 2, so it diverges (‖I − αM‖ = {q:.3g}; docs/mathematics.md "
                f"§4a)")
        return Failure("divergent", inst, alpha * top, 2.0, _norm(ref.g),
                       "the declared step must make the series contract: α‖I + H/λ‖ < 2 "
                       "(docs/mathematics.md §4a)", self.budgets,
                       diagnosis=Diagnosis(name, 0.0),
                       details={"alpha": alpha, "contraction": q, "system_norm": top})

    def _krylov(self, inst, task, theta, ref, al, k_conv):
        """At an inner budget where φ is at rounding level, Algorithm 2 with m CG steps from 0
        is the unique m-step Krylov iterate of (I + H/λ)g = ∇L(φ*) (docs/mathematics.md §4)."""
        Msys = ImplicitSystem.of_hessian(np.asarray(ref.H, dtype=np.float64), task.lam).matrix()
        v = np.asarray(ref.outer_grad, dtype=np.float64)
        failures, skipped = [], 0
        for m in sorted({1, 2, 3, self.budgets[1]}):
            if m == 0 or m >= task.dim:
                continue
            x_m, _res, ritz = krylov_iterate(Msys, v, m, ritz=True)
            if ritz < _ritz_floor(self.opts["dtype"]):
                skipped += 1
                continue
            allowed = al.total + _cg_allowance(Msys, v, self.opts["dtype"])
            g, error = self._call(inst, task, theta, inner_steps=k_conv, cg_steps=m)
            if error:
                return [self._fail_output(inst, ref, error, (k_conv, m))], skipped
            measured = rel(g, x_m)
            if measured > allowed:
                failures.append(Failure(
                    "krylov", inst, measured, allowed, _norm(x_m),
                    f"with φ converged, {m} CG steps from 0 must give the unique {m}-step "
                    f"Krylov iterate of (I + H/λ)g = ∇L(φ*) (docs/mathematics.md §4)",
                    (k_conv, m), details={"output": g, "krylov_iterate": x_m}))
                break
        return failures, skipped

    def diagnose(self, failure: Failure) -> Diagnosis:
        g = failure.details.get("output")
        if g is None:
            return failure.diagnosis
        if "converged_inner" in failure.details:
            g = failure.details["converged_inner"][1]
        task, theta, ref, al = self._prepare(failure.instance)
        al32 = converged_allowance(task, theta, ref, dtype="float32").total
        cg_steps = failure.budgets[1] if failure.budgets else None
        return diagnose(g, task, theta, ref, allowance=al.total, allowance32=al32,
                        cg_steps=cg_steps, history=self.history)

    def diagnostic_failure(self) -> Failure | None:
        """The implementation on the generic diagnostic instances; the first failure there."""
        fam = "logistic" if self.families == ("logistic",) else "planted"
        for inst in diagnostic_instances(family=fam):
            out = self.evaluate(inst)
            if not out.passed:
                return out.failures[0]
        return None


_SOLVER_LABEL = {"cg": "CG", "minres": "MINRES", "neumann": "Neumann series",
                 "fixed_point": "fixed point"}
_SOLVER_SECTION = {"cg": "", "minres": ", §4b", "neumann": ", §4a", "fixed_point": ", §4a"}


def _f64(x):
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _norm(x) -> float:
    return float(np.linalg.norm(np.asarray(x, dtype=np.float64)))


def _ritz_floor(dtype) -> float:
    """Finite-precision CG follows exact CG while no Ritz pair of the Lanczos process has
    converged (Paige: orthogonality is lost in proportion to eps‖M‖/(Ritz residual)); the
    checker compares with the Krylov iterate only while every Ritz residual is at least
    100·√eps·‖M‖."""
    from theory.tolerances import machine_epsilon

    return 100 * math.sqrt(machine_epsilon(dtype))


def _cg_allowance(Msys, rhs, dtype) -> float:
    """Rounding allowance of m CG steps on M x = rhs: eps·(d + 4)·κ(M)·(‖M⁻¹rhs‖ +
    ‖rhs‖/λmin(M)), plus the same with extended precision for the reference."""
    w = np.linalg.eigvalsh(Msys)
    kappa = float(w[-1] / w[0])
    x = np.linalg.solve(Msys, rhs)
    scale = _norm(x) + _norm(rhs) / float(w[0])
    d = Msys.shape[0] + 4
    return (rounding_allowance(dtype, kappa=kappa, scale=scale, dim=d)
            + rounding_allowance(EXTENDED, kappa=kappa, scale=scale, dim=d))


def _families(backend, families):
    if families is None:
        return ("planted", "paper", "logistic") if backend == "torch" else ("planted", "paper")
    families = tuple(families)
    return families


def _one_blas_thread(check):
    """Run a check with one BLAS thread (its matrices are small; see verify._threads), and the
    signal handlers of its calls installed once (verify.checker._calling.guarded)."""
    @functools.wraps(check)
    def wrapped(*args, **kwargs):
        with single_thread(), guarded():
            return check(*args, **kwargs)
    return wrapped


class CheckerArgumentError(TypeError, ValueError):
    """An argument of :func:`check_meta_gradient` or :func:`check_cg` that cannot be used
    (raised before any work; both a TypeError and a ValueError, so either ``except`` catches
    it). The command line exits 2 with its message."""


def _argument(check, *args, **kwargs):
    """check(*args, **kwargs), its TypeError/ValueError re-raised as CheckerArgumentError."""
    try:
        return check(*args, **kwargs)
    except CheckerArgumentError:
        raise
    except (TypeError, ValueError) as exc:
        raise CheckerArgumentError(str(exc)) from None


def _count(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise CheckerArgumentError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_callable(fn, what, call, example):
    """fn must be callable and (when its signature can be read) accept ``call`` arguments."""
    if not callable(fn):
        raise CheckerArgumentError(f"{what} must be callable as {example}, got "
                                   f"{type(fn).__name__} {fn!r:.80}")
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):   # a builtin without a signature: find out by calling
        return
    args, kwargs = call
    try:
        sig.bind(*args, **kwargs)
    except TypeError as exc:
        raise CheckerArgumentError(f"{what} must be callable as {example}; {_name(fn)}{sig} "
                                   f"is not ({exc})") from None


def _check_families(families):
    from verify.checker.instances import FAMILIES

    if isinstance(families, (str, bytes)):
        raise CheckerArgumentError(f"families must be a list of family names, got the string "
                                   f"{families!r} (write [{families!r}])")
    try:
        fams = tuple(dict.fromkeys(families))
    except TypeError:
        raise CheckerArgumentError(f"families must be a list of names from {FAMILIES}, got "
                                   f"{type(families).__name__}") from None
    unknown = [f for f in fams if f not in FAMILIES]
    if unknown or not fams:
        raise CheckerArgumentError(f"families must be a non-empty list of names from "
                                   f"{FAMILIES}, got {list(fams)!r}")
    return fams


def _check_where(backend, device, dtype):
    if backend not in ("numpy", "torch"):
        raise CheckerArgumentError(f"backend must be 'numpy' or 'torch', got {backend!r}")
    if not isinstance(device, str):
        raise CheckerArgumentError(f"device must be a string ('cpu', 'cuda', 'cuda:N'), got "
                                   f"{type(device).__name__}")
    if backend == "numpy" and device != "cpu":
        raise CheckerArgumentError(f"device {device!r} needs backend='torch'")
    if device != "cpu":
        import torch

        try:
            dev = torch.device(device)
        except (RuntimeError, ValueError):
            raise CheckerArgumentError(f"device must be 'cpu', 'cuda' or 'cuda:N', got "
                                       f"{device!r}") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise CheckerArgumentError(f"device {device!r}: no CUDA device here")
        if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
            raise CheckerArgumentError(f"device {device!r}: this machine has "
                                       f"{torch.cuda.device_count()} CUDA device(s)")
    if dtype not in ("float64", "float32"):
        raise CheckerArgumentError(f"dtype must be 'float64' or 'float32', got {dtype!r}")


def _check_search(seed, max_examples, max_dim, max_kappa, corners, timeout):
    from validation import check_kappa, check_seed

    seed = _argument(check_seed, seed, "seed")
    max_examples = _count(max_examples, "max_examples", 0)
    max_dim = _count(max_dim, "max_dim", 1)
    max_kappa = _argument(check_kappa, max_kappa, "max_kappa")
    if not isinstance(corners, (bool, np.bool_)):
        raise CheckerArgumentError(f"corners must be True or False, got {corners!r}")
    if not corners and max_examples == 0:
        raise CheckerArgumentError("corners=False with max_examples=0 evaluates no instance: "
                                   "a check that checks nothing cannot pass (give "
                                   "max_examples > 0, or keep the corner instances)")
    timeout = _argument(check_timeout, timeout)
    return seed, max_examples, max_dim, max_kappa, bool(corners), timeout


def _check_linear(linear_solver, linear_options, budgets):
    """The declared linear solver and its options (budget mode only)."""
    from solvers import LINEAR_SOLVERS

    if linear_solver not in LINEAR_SOLVER_NAMES:
        raise CheckerArgumentError(f"linear_solver must be one of {LINEAR_SOLVER_NAMES}, got "
                                   f"{linear_solver!r}")
    if linear_options is not None and not isinstance(linear_options, dict):
        raise CheckerArgumentError(f"linear_options must be a dict, got "
                                   f"{type(linear_options).__name__}")
    opts = dict(linear_options or {})
    if budgets is None and (linear_solver != "cg" or opts):
        raise CheckerArgumentError("linear_solver and linear_options describe Algorithm 2's "
                                   "linear solve: give them in budget mode (inner_steps=, "
                                   "cg_steps=)")
    known = LINEAR_SOLVERS[linear_solver].options
    for key, value in opts.items():
        if key not in known:
            raise CheckerArgumentError(f"linear_options[{key!r}] is not an option of "
                                       f"linear_solver={linear_solver!r} (its options: "
                                       f"{', '.join(known) or 'none'})")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                not (math.isfinite(value) and value > 0):
            raise CheckerArgumentError(f"linear_options[{key!r}] must be a finite number > 0, "
                                       f"got {value!r}")
    return opts


def _validated_meta_gradient_args(fn, *, inner_steps, cg_steps, backend, device, dtype, seed,
                                  max_examples, families, inner, max_dim, max_kappa, corners,
                                  timeout):
    """Every argument of check_meta_gradient checked before any work (CheckerArgumentError)."""
    from validation import check_steps

    if (inner_steps is None) != (cg_steps is None):
        raise CheckerArgumentError("give both inner_steps and cg_steps (budget mode) or neither "
                                   "(converged mode)")
    budgets = None
    if inner_steps is not None:
        budgets = (_argument(check_steps, inner_steps, "inner_steps"),
                   _argument(check_steps, cg_steps, "cg_steps"))
    if budgets is None:
        _check_callable(fn, "fn", ((None, None), {}), "fn(task, theta)")
    else:
        _check_callable(fn, "fn", ((None, None), {"inner_steps": 0, "cg_steps": 0}),
                        "fn(task, theta, inner_steps=K, cg_steps=M) in budget mode")
    _check_where(backend, device, dtype)
    if inner not in INNER_METHODS:
        raise CheckerArgumentError(f"inner must be one of {INNER_METHODS}, got {inner!r}")
    fams = _families(backend, None if families is None else _check_families(families))
    if max_examples is None:
        max_examples = 100 if budgets is None else 25
    if max_kappa is None:
        max_kappa = 1e5 if budgets is None else 300.0
    seed, max_examples, max_dim, max_kappa, corners, timeout = _check_search(
        seed, max_examples, max_dim, max_kappa, corners, timeout)
    return (budgets, fams, families is not None, max_examples, max_kappa, seed, max_dim,
            timeout, corners)


@_one_blas_thread
def check_meta_gradient(fn, *, inner_steps=None, cg_steps=None, backend: str = "numpy",
                        device: str = "cpu", dtype: str = "float64", seed: int = 0,
                        max_examples: int | None = None, families=None, inner: str = "any",
                        max_dim: int = 40, max_kappa: float | None = None,
                        corners: bool = True, timeout: float | None = DEFAULT_TIMEOUT,
                        linear_solver: str = "cg", linear_options=None) -> Report:
    """Check an implementation of iMAML's meta-gradient on instances with exact answers.

    Converged mode (no budgets): ``fn(task, theta)`` claims the exact meta-gradient
    dθL(Alg*(θ)) = (I + H/λ)⁻¹∇L(Alg*(θ)) (docs/mathematics.md §1); it must be within the
    rounding allowance of :func:`verify.checker.reference.converged_allowance` of the exact
    one (computed in extended precision).

    Budget mode (``inner_steps=K`` and ``cg_steps=M``): ``fn(task, theta, inner_steps=k,
    cg_steps=m)`` claims Algorithm 2, k inner steps from θ then m CG steps from 0; at
    (K, M), (2K, 2M), (4K, 4M) and at a budget where the bounds reach rounding level its error
    must be within Lemma 3 (sharp form) with Lemma 2's / gradient descent's δ (``inner``:
    'any', 'nesterov' or 'gd') and CG's δ′, plus rounding (so it must improve as budgets grow);
    and with φ at rounding level, m ∈ {1, 2, 3, M} CG steps must give the exact m-step Krylov
    iterate (docs/mathematics.md §3–§5).

    ``linear_solver`` (budget mode): the solver the implementation runs for its ``cg_steps``
    steps, held to that solver's bound — 'cg' (default), 'minres' (§4b), 'neumann' (the
    truncated Neumann series with ``linear_options={'alpha': α}``, default λ/β, §4a) or
    'fixed_point' (the fixed-point hypergradient of the inner gradient step with
    ``linear_options={'step_size': η}``, default 1/β: the series with α = ηλ). A declared α with
    α‖I + H/λ‖ ≥ 2 on an instance fails there ("a Neumann series with α too large": the series
    diverges whatever the budget). The Krylov comparison is made for CG only.

    ``task`` is a :class:`theory.QuadraticTask` (A, b, A_query, b_query, lam and the task
    protocol) or, in ``families`` 'logistic' (default with ``backend='torch'``), a
    :class:`theory.LogisticTask` whose losses are torch functions; NumPy arrays with
    ``backend='numpy'``, torch tensors on ``device`` with ``backend='torch'``. ``fn`` returns an
    array or tensor of shape (d,) (or an object with ``.gradient``).

    Instances: about twenty fixed corner instances (``corners=False`` skips them, for slow
    implementations), then up to ``max_examples`` drawn from ``seed`` (default 100
    converged, 25 with budgets); the first failure is shrunk. Returns a
    :class:`Report` (``.passed``, ``.failures``, ``str()``); a check that evaluated no
    instance does not pass.

    Each call gets its own copies of the task's arrays and θ (NumPy copies read-only); an
    implementation that changes an input in place fails, with a diagnosis naming the input.
    Whatever a call raises (``SystemExit`` included) fails that call, not the check; each call
    may take at most ``timeout`` seconds (default :data:`DEFAULT_TIMEOUT` = 60; None: no
    limit), and after a call that did not return the check stops calling the implementation.
    Every argument is checked before any work (:class:`CheckerArgumentError`, a TypeError and
    a ValueError, naming it): ``fn`` must be callable as ``fn(task, theta)`` (with
    ``inner_steps=``, ``cg_steps=`` in budget mode), ``seed`` an integer from 0 to 2**32 − 1,
    ``families`` a list of names from ('planted', 'paper', 'logistic'), and at least one instance
    must be evaluated (``corners=False`` needs ``max_examples`` > 0)."""
    (budgets, fams, families_given, max_examples, max_kappa, seed, max_dim, timeout,
     corners) = _validated_meta_gradient_args(
        fn, inner_steps=inner_steps, cg_steps=cg_steps, backend=backend, device=device,
        dtype=dtype, seed=seed, max_examples=max_examples, families=families, inner=inner,
        max_dim=max_dim, max_kappa=max_kappa, corners=corners, timeout=timeout)
    linear_options = _check_linear(linear_solver, linear_options, budgets)
    check = _MetaGradientCheck(fn, budgets=budgets, inner=inner, backend=backend, device=device,
                               dtype=dtype, families=fams, timeout=timeout,
                               linear_solver=linear_solver, linear_options=linear_options)
    corners = corner_instances(families=fams, max_dim=max_dim, max_kappa=max_kappa,
                               seed=seed) if corners else []
    drawn = functools.partial(draw, seed, families=fams, max_dim=max_dim, max_kappa=max_kappa)
    failures, n, worst, skipped = _Search(check.evaluate).run(corners, drawn, max_examples,
                                                              max_kappa=max_kappa)
    not_evaluated = check.not_evaluated   # drawn by the search after a call that hung
    for f in failures[:6]:
        if f.diagnosis is None:
            f.diagnosis = check.diagnose(f)
    overall = None
    if failures:
        overall = _overall(check, failures)
    n -= not_evaluated
    settings_ = {"seed": seed, "backend": backend, "device": device, "dtype": dtype,
                 "budgets": list(budgets) if budgets else None, "inner": inner,
                 "max_examples": max_examples, "families": list(fams),
                 "families_default": not families_given, "corners": len(corners),
                 "max_dim": max_dim, "max_kappa": max_kappa, "timeout": timeout,
                 "not_evaluated": not_evaluated, "linear_solver": linear_solver,
                 "linear_options": dict(linear_options)}
    if n == 0 and not failures:   # nothing was checked: that is not a pass
        overall = Diagnosis("no instance was evaluated, so nothing was checked")
    return Report(_name(fn), "converged" if budgets is None else "budget",
                  not failures and n > 0, failures, n, worst, overall, settings_, skipped)


def _overall(check, failures) -> Diagnosis:
    """The diagnosis decided where wrong answers can be told apart: a decisive one on a generic
    instance (d = 7 or 9, wrong answers far apart) when the implementation fails there too, else
    the most specific decisive one among the failures, else what the generic instance says. A
    name matched only where candidates coincide (d = 1, or a rescaling of g*) is given only when
    nothing else is known, and says so."""
    known = [f.diagnosis for f in failures[:6] if f.diagnosis is not None and f.diagnosis.known]
    decisive = [d for d in known if d.decisive]
    generic = check.diagnostic_failure()
    gd = None
    if generic is not None:
        generic.diagnosis = gd = check.diagnose(generic)
    if gd is not None and gd.known and gd.decisive:
        return gd
    if decisive:
        return min(decisive, key=lambda d: (len(d.also), d.explained))
    if gd is not None and not gd.known:
        return gd
    if gd is not None:
        known = [gd] + known
    if known:
        d = min(known, key=lambda d: (len(d.also), d.explained))
        return Diagnosis(f"{d.name} — matched only on instances where the known wrong answers "
                         f"coincide (d = 1, or a rescaling of g*), so possibly a coincidence",
                         d.explained, d.also, d.ranking, decisive=False)
    return failures[0].diagnosis


# -- check_cg -------------------------------------------------------------------------------------
@_one_blas_thread
def check_cg(cg_fn, steps=(1, 2, 3, 5, 8), *, backend: str = "numpy", device: str = "cpu",
             dtype: str = "float64", seed: int = 0, max_examples: int = 60,
             max_dim: int = 40, max_kappa: float = 1e5,
             timeout: float | None = DEFAULT_TIMEOUT) -> Report:
    """Check a conjugate-gradient routine against the exact m-step iterate.

    ``cg_fn(matvec, rhs, m)`` must return m steps of CG from x₀ = 0 on M x = rhs, where
    ``matvec(w) = M w`` (arrays of ``backend`` on ``device``). In exact arithmetic that iterate is
    unique: the minimiser of ‖x − M⁻¹rhs‖_M over the Krylov space span{rhs, …, M^{m−1}rhs}
    (docs/mathematics.md §4). The checker computes it independently (Lanczos with full
    re-orthogonalisation in extended precision and a small dense solve) and holds the routine
    to it within eps·(d + 4)·κ·(‖M⁻¹rhs‖ + ‖rhs‖/λmin(M)); M is iMAML's system I + A/λ of a
    drawn quadratic task and rhs its ∇L(φ*). Comparisons where a Ritz pair has converged
    (finite-precision CG then legitimately departs from exact CG) are skipped and counted.
    This is what catches a wrong residual update or a normal-equation solve at small budgets.

    As in :func:`check_meta_gradient`, every argument is checked before any work, each call
    gets its own read-only copy of ``rhs`` (a routine that writes into it fails, saying so), is
    bounded by ``timeout`` seconds, and whatever it raises fails that call."""
    steps = _validated_steps(steps)
    _check_callable(cg_fn, "cg_fn", ((None, None, 1), {}), "cg_fn(matvec, rhs, m)")
    _check_where(backend, device, dtype)
    seed, max_examples, max_dim, max_kappa, _, timeout = _check_search(
        seed, max_examples, max_dim, max_kappa, True, timeout)
    opts = dict(backend=backend, device=device, dtype=dtype)
    hung = []

    def evaluate(inst: Instance) -> _Outcome:
        if hung:   # a call that never returned: the rest is not evaluated (module docstring)
            hung.append(inst)
            return _Outcome(True, [])
        task, theta = build(inst, **opts)
        ref = exact_meta_gradient(task, theta)
        Msys = ImplicitSystem.of_hessian(np.asarray(ref.H, dtype=np.float64), task.lam).matrix()
        v = np.asarray(ref.outer_grad, dtype=np.float64)
        if not np.any(v):
            return _Outcome(True, [])
        Mb = _as_backend(Msys, task)
        vb = _as_backend(v, task)
        allowed = _cg_allowance(Msys, v, dtype)
        worst, skipped = 0.0, 0
        for m in steps:
            x_m, _res, ritz = krylov_iterate(Msys, v, m, ritz=True)
            if ritz < _ritz_floor(dtype):
                skipped += 1
                continue
            x, error = call_isolated(lambda c: cg_fn(lambda w: Mb @ w, c["rhs"], m),
                                     {"rhs": vb}, dim=task.dim, timeout=timeout, where=inst)
            if error and error.startswith("did not return within"):
                hung.append(inst)
            if error:
                return _Outcome(False, [Failure("output", inst, math.inf, 0.0, _norm(x_m),
                                                f"cg_fn(matvec, rhs, {m}) must return an array "
                                                f"of shape (d,)", (0, m), error=error,
                                                diagnosis=Diagnosis(f"cg_fn {error}"))])
            measured = rel(x, x_m)
            worst = max(worst, measured / allowed)
            if measured > allowed:
                f = Failure("cg", inst, measured, allowed, _norm(x_m),
                            f"{m} CG steps from 0 must give the exact {m}-step Krylov iterate "
                            f"(docs/mathematics.md §4)", (0, m))
                f.diagnosis = _diagnose_cg(x, Msys, v, m, measured)
                return _Outcome(False, [f], worst, skipped)
        return _Outcome(True, [], worst, skipped)

    corners = corner_instances(families=("planted",), max_dim=max_dim, max_kappa=max_kappa, seed=seed)
    drawn = functools.partial(draw, seed, families=("planted",), max_dim=max_dim,
                              max_kappa=max_kappa)
    failures, n, worst, skipped = _Search(evaluate).run(corners, drawn, max_examples,
                                                        max_kappa=max_kappa)
    not_evaluated = max(len(hung) - 1, 0)
    n -= not_evaluated
    overall = failures[0].diagnosis if failures else None
    for f in failures:
        if f.diagnosis is not None and f.diagnosis.known and not f.minimal:
            overall = f.diagnosis if overall is None or not overall.known else overall
    settings_ = {"seed": seed, "backend": backend, "device": device, "dtype": dtype,
                 "steps": list(steps), "max_examples": max_examples, "corners": len(corners),
                 "timeout": timeout, "not_evaluated": not_evaluated}
    if n == 0 and not failures:
        overall = Diagnosis("no instance was evaluated, so nothing was checked")
    return Report(_name(cg_fn), "cg", not failures and n > 0, failures, n, worst, overall,
                  settings_, skipped)


def _validated_steps(steps) -> tuple:
    """check_cg's step counts: a non-empty list of integers >= 1 (not a string, not floats)."""
    if isinstance(steps, (str, bytes)) or not hasattr(steps, "__iter__"):
        raise CheckerArgumentError(f"steps must be a list of step counts (integers >= 1), got "
                                   f"{type(steps).__name__} {steps!r}")
    steps = tuple(steps)
    bad = [s for s in steps if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1]
    if not steps or bad:
        raise CheckerArgumentError(f"steps must be a non-empty list of integers >= 1, got "
                                   f"{list(steps)!r}")
    return tuple(int(s) for s in steps)


def _as_backend(x, task):
    A = task.A
    if hasattr(A, "detach"):
        import torch

        return torch.as_tensor(x, dtype=A.dtype, device=A.device)
    return np.asarray(x, dtype=A.dtype)


def _diagnose_cg(x, Msys, v, m, err) -> Diagnosis:
    from verify.checker.diagnosis import MATCH, cg_iterates

    cands = []
    its = list(cg_iterates(lambda w: Msys @ (Msys @ w), Msys @ v, m))
    if len(its) == m:
        cands.append((f"CG on the normal equations M²x = M·rhs ({m} steps)", its[-1]))
    for k in (m - 1, m + 1):
        if k >= 1:
            cands.append((f"an off-by-one step count: {k} steps instead of {m}",
                          krylov_iterate(Msys, v, k)[0]))
    x_sd = np.zeros_like(v)
    for _ in range(m):
        r = v - Msys @ x_sd
        x_sd = x_sd + (r @ r) / (r @ Msys @ r) * r
    cands.append((f"steepest descent ({m} steps), not CG", x_sd))
    cands.append(("the exact solution M⁻¹rhs, not the m-step iterate", np.linalg.solve(Msys, v)))
    scored = sorted(((n, float(np.linalg.norm(x - c)) / err) for n, c in cands), key=lambda t: t[1])
    if scored[0][1] <= MATCH:
        return Diagnosis(scored[0][0], scored[0][1], [], scored[:5])
    return Diagnosis("no known defect (a wrong residual or direction update?)", None, [], scored[:5])
