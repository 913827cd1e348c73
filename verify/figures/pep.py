"""Figure 7: the exact worst case of Nesterov's method (performance estimation, PEPit) against
Lemma 2's implied bound and the worst quadratic (docs/mathematics.md §3). Needs the optional
'pep' extra (PEPit, cvxpy, Clarabel); without it the figure is skipped with that reason.

The worst case depends only on (k, κ), and building PEPit's problem dominates its cost (about
16 s for k = 1…24 on a 2-core machine), so the values are kept in ``pep_cache.json`` beside this
module together with what they were made with (PEPit, cvxpy and Clarabel versions, a digest of
the problem's source). A run reads the cache when that matches this environment (the locked one
does) and recomputes nothing; otherwise it computes every k and says why. The cache itself is
tested by :func:`recheck` (k = 1…3 recomputed, compared within the SDP solver's accuracy).
Refresh it with ``make pep-cache`` (``verify.figures.pep.refresh()``)."""
from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import math
import warnings
from pathlib import Path

import numpy as np

from solvers import nesterov
from theory import bounds
from verify.figures._draw import COLORS, finish, new, plot
from verify.figures._spec import FigureSpec, register


def _pep_worst_case(steps: int, kappa: float) -> tuple[float, bool]:
    """Exact worst case of ‖x_k − x*‖/‖x₀ − x*‖ for docs/mathematics.md §3's Nesterov variant over all
    1-smooth, 1/κ-strongly convex functions (PEPit, Clarabel). Returns (value, accurate)."""
    from PEPit import PEP
    from PEPit.functions import SmoothStronglyConvexFunction

    L, mu = 1.0, 1.0 / kappa
    q = bounds.cg_contraction(kappa)
    problem = PEP()
    f = problem.declare_function(SmoothStronglyConvexFunction, mu=mu, L=L)
    xs = f.stationary_point()
    x0 = problem.set_initial_point()
    problem.set_initial_condition((x0 - xs) ** 2 <= 1)
    x = y = x0
    for _ in range(steps):
        x_new = y - (1 / L) * f.gradient(y)
        y = x_new + q * (x_new - x)
        x = x_new
    problem.set_performance_metric((x - xs) ** 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tau = problem.solve(wrapper="cvxpy", solver="CLARABEL", verbose=0)
    accurate = not any("inaccurate" in str(w.message) for w in caught)
    return math.sqrt(max(float(tau), 0.0)), accurate


KAPPA = 10.0
FULL_STEPS = list(range(1, 25))
QUICK_STEPS = [1, 2, 4, 6, 8, 10, 12]
CACHE = Path(__file__).with_name("pep_cache.json")
PACKAGES = ("PEPit", "cvxpy", "clarabel")
#: a digest of the problem's source, taken when this module is loaded
_PROBLEM_DIGEST = hashlib.sha256(inspect.getsource(_pep_worst_case).encode("utf-8")).hexdigest()[:16]


def made_with() -> dict:
    """What the values depend on: the versions of PEPit, cvxpy and Clarabel here, a digest of
    the problem's source (:func:`_pep_worst_case`) and the momentum it takes from
    theory.bounds. The cache is used when they are what it was made with, so an unchanged tree
    and locked environment recompute nothing."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    out["problem"] = _PROBLEM_DIGEST
    # the problem's numbers that come from elsewhere (theory.bounds): the momentum at KAPPA
    out["momentum"] = float(bounds.cg_contraction(KAPPA))
    return out


def _cache() -> tuple[dict, dict]:
    """({k: (value, accurate)} at :data:`KAPPA`, what the cache was made with) from the
    committed cache (empty if absent or for another κ)."""
    try:
        doc = json.loads(CACHE.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}, {}
    if doc.get("kappa") != KAPPA:
        return {}, {}
    return ({int(k): (float(v), bool(ok)) for k, v, ok in
             zip(doc["steps"], doc["pep"], doc["pep_accurate"])}, doc.get("made_with", {}))


def worst_cases(steps, kappa=KAPPA) -> tuple[list, list, dict]:
    """(values, accurate flags, provenance) for ``steps``: the committed cache when it covers them
    and was made with this environment's PEPit, cvxpy, Clarabel and problem source (nothing is
    recomputed), else every value computed here (and the provenance says why)."""
    cached, cache_env = _cache() if kappa == KAPPA else ({}, {})
    here = made_with()
    if cached and all(k in cached for k in steps) and cache_env == here:
        values = {k: cached[k] for k in steps}
        source = {"source": "cache", "made_with": here}
    else:
        values = {k: _pep_worst_case(k, kappa) for k in steps}
        if not cached:
            why = "no cache"
        elif cache_env != here:
            diff = [f"{n} {cache_env.get(n)} in the cache, {here[n]} here" for n in here
                    if cache_env.get(n) != here[n]]
            why = "; ".join(diff)
        else:
            why = "the cache does not cover these steps"
        source = {"source": "computed", "made_with": here, "why": why}
    return [values[k][0] for k in steps], [values[k][1] for k in steps], source


def recheck(steps=(1, 2, 3), kappa=KAPPA) -> list[dict]:
    """Recompute ``steps`` and compare with the cache: one row per k with the cached and fresh
    values, both accuracy flags and whether they agree within the SDP solver's accuracy
    (:func:`theory.tolerances.sdp_allowance`; only values Clarabel reports accurate are
    compared). The test of the cache; a run never does this."""
    from theory.tolerances import sdp_allowance

    cached, _ = _cache()
    rows = []
    for k in steps:
        fresh, ok = _pep_worst_case(k, kappa)
        old, old_ok = cached.get(k, (math.nan, False))
        allowed = sdp_allowance(fresh)
        rows.append({"k": k, "cached": old, "fresh": fresh, "accurate": ok and old_ok,
                     "allowed": allowed, "agree": abs(old - fresh) <= allowed})
    return rows


def compute(ctx, records=()) -> dict:
    """Worst-case contraction of Nesterov's method: exact (PEPit) over all smooth strongly convex
    functions, Lemma 2's implied bound 2κ·exp(−k/(2√κ)), the standard bound
    √(κ+1)(1 − 1/√κ)^(k/2), and the observed worst case over quadratics with spectrum in [μ, β]."""
    kappa = KAPPA
    steps = QUICK_STEPS if ctx.quick else FULL_STEPS
    # installed? (found, not imported: with the committed cache nothing here needs them, and
    # importing PEPit and cvxpy costs most of a second)
    absent = [name for name in ("PEPit", "cvxpy") if importlib.util.find_spec(name) is None]
    if absent:
        return {"missing": f"the optional 'pep' extra is not installed ({absent[0]}); "
                           f"pip install 'imaml-verify[pep]'", "kappa": kappa}
    pep, accurate, provenance = worst_cases(steps, kappa)
    # quadratics: every eigen-direction evolves on its own, so one run on a diagonal quadratic
    # with a dense spectrum in [mu, beta] and x0 = (1, ..., 1) gives each eigenvalue's contraction
    mu, beta = 1.0 / kappa, 1.0
    spectrum = np.linspace(mu, beta, 2001)
    res = nesterov(lambda x: spectrum * x, np.ones_like(spectrum), step_size=1 / beta,
                   momentum=bounds.cg_contraction(kappa), max_steps=max(steps), history=True)
    quadratic = [float(np.max(np.abs(res.history.iterates[k]))) for k in steps]
    return {"missing": None, "kappa": kappa, "steps": steps, "pep": pep, "pep_accurate": accurate,
            "pep_provenance": provenance, "quadratic": quadratic,
            "lemma2_implied": [2 * kappa * math.exp(-k / (2 * math.sqrt(kappa))) for k in steps],
            "standard_bound": [bounds.nesterov_distance_bound(kappa, k, 1.0) for k in steps]}


def draw(data):
    fig, ax = new()
    plot(ax, data, "steps", "lemma2_implied", color=COLORS[4], ls="--", lw=1.5,
          label="Lemma 2 implied: 2κ·exp(−k/(2√κ))")
    plot(ax, data, "steps", "standard_bound", color=COLORS[3], ls=":", lw=1.5,
          label="standard bound √(κ+1)(1−1/√κ)^(k/2)")
    plot(ax, data, "steps", "pep", color=COLORS[0], marker="o", ms=4, lw=1.6,
          label="exact worst case, all smooth strongly convex f (PEPit)")
    plot(ax, data, "steps", "quadratic", color=COLORS[2], marker="^", ms=4, lw=1.2,
          label="observed worst case over quadratics")
    bad = [(k, v) for k, v, ok in zip(data["steps"], data["pep"], data["pep_accurate"]) if not ok]
    if bad:
        ax.plot([b[0] for b in bad], [b[1] for b in bad], ls="none", marker="o", ms=9, mfc="none",
                color="k", label="solver flagged 'inaccurate'")
    ax.set_yscale("log")
    finish(ax, f"Worst-case contraction of Nesterov's method (κ = {data['kappa']:g})",
            "steps k", "worst ‖xₖ − x*‖ / ‖x₀ − x*‖")
    return fig


def caption(data):
    if data.get("missing"):
        return f"Not drawn: {data['missing']}."
    k = data["steps"][-1]
    return (f"Worst case of ‖xₖ − x*‖/‖x₀ − x*‖ for the Nesterov variant of docs/mathematics.md §3 (step 1/β, constant momentum), κ = {data['kappa']:g}: "
            f"exact over all smooth strongly convex functions (performance estimation, PEPit + "
            f"Clarabel), over quadratics with spectrum in [μ, β], and the bounds. At k = {k} Lemma 2's "
            f"implied bound is {data['lemma2_implied'][-1] / data['pep'][-1]:.0f}× the exact worst case"
            f" and the worst quadratic is {data['quadratic'][-1] / data['pep'][-1]:.2f}× it."
            + (f" Circled: k where Clarabel reported the SDP solution may be inaccurate "
               f"({sum(not a for a in data['pep_accurate'])} of {len(data['steps'])})."
               if not all(data["pep_accurate"]) else "")
            + _provenance_text(data.get("pep_provenance")))


def _provenance_text(prov) -> str:
    if not prov:
        return ""
    env = prov["made_with"]
    versions = f"PEPit {env['PEPit']}, cvxpy {env['cvxpy']}, Clarabel {env['clarabel']}"
    if prov["source"] == "cache":
        return (f" Exact values read from the committed cache (verify/figures/pep_cache.json), "
                f"made by `make pep-cache` with {versions}, the versions installed here; "
                f"they are not recomputed in a run.")
    return f" Every exact value computed in this run with {versions} ({prov['why']})."


FIGURE = register(FigureSpec("fig7", "pep", "Worst-case contraction of Nesterov's method (PEPit)",
                             compute=compute, draw=draw, caption=caption,
                             unavailable=lambda data: data.get("missing")))


def refresh(kappa=KAPPA) -> dict:
    """Recompute every k of a full run and rewrite :data:`CACHE` (with what it was made with)."""
    values = [_pep_worst_case(k, kappa) for k in FULL_STEPS]
    doc = {"kappa": kappa, "steps": FULL_STEPS, "pep": [v for v, _ in values],
           "pep_accurate": [ok for _, ok in values], "made_with": made_with(),
           "note": "exact worst case of ||x_k - x*|| / ||x_0 - x*|| (PEPit + cvxpy/Clarabel); "
                   "make pep-cache (verify.figures.pep.refresh()) rewrites this file"}
    CACHE.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return doc

