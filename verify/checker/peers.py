"""Real implementations side by side (``make check-peers``).

Runs :func:`verify.checker.check_meta_gradient` on
- torchopt's implicit differentiation (``torchopt.diff.implicit.custom_root``) with
  ``solve_cg`` and with ``solve_normal_cg(maxiter=5, atol=0)`` as in its iMAML example,
- jaxopt's ``implicit_diff.custom_root`` with ``linear_solve.solve_cg``,
- this suite's own solvers (converged, Algorithm 2 at budgets, first-order MAML as a control),
- small re-implementations of documented variants, written from their published descriptions:
  torchopt's normal-equation CG, the paper's reference code defaults (its ``matrix_evaluator``
  builds (1 + regu_coef)I + H/(λ + lam_damping) with regu_coef = 1, lam_damping = 10, solved by
  CG), and betty's ``cg`` (its step length uses cg_alpha·H but its residual update uses H, and
  its new direction is built from the previous residual),
and writes the table (implementation, verdict, measured error, diagnosis) to
``reports/peers/peers.json`` and ``reports/peers/peers.md``. Libraries that are not installed
(the optional extra ``peers``) are listed as skipped with the reason.

    python -m verify.checker.peers [--out reports/peers] [--seed 0] [--quick]
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import solvers
from solvers import ImplicitSystem
from verify.checker.core import check_meta_gradient
from verify.checker.diagnosis import NO_DEFECT, cg_iterates, diagnose
from verify.checker.instances import Instance, build
from verify.checker.reference import exact_meta_gradient, rel

__all__ = ["Peer", "peers", "run_peers", "render_markdown", "main", "ISSUE_INSTANCE",
           "torch_newton_inner"]

#: the issue's measurement: d = 50, λ = 2, cond(I + A/λ) = 16.7, float64
ISSUE_INSTANCE = Instance(family="planted", dim=50, kappa=16.7, lam=2.0, floor=0.0, seed=2019)


@dataclass
class Peer:
    """One implementation: ``fn`` in the checker's convention, ``mode`` 'converged' or 'budget'
    (then ``budgets`` = (K, M)), ``backend``, ``requires`` (modules it needs), ``note``."""

    name: str
    fn: object
    mode: str = "converged"
    budgets: tuple | None = None
    backend: str = "numpy"
    requires: tuple = ()
    note: str = ""


# -- the suite's own solvers ----------------------------------------------------------------------
def _converged_steps(task):
    beta, mu = task.curvature_bounds()
    kappa = beta / mu
    return int(math.ceil(2 * math.sqrt(kappa) * math.log(1e22 * kappa))) + 20, 4 * task.dim + 20


def ours_converged(task, theta):
    K, M = _converged_steps(task)
    return solvers.imaml_meta_gradient(task, theta, inner_steps=K, cg_steps=M).gradient


def ours_algorithm2(task, theta, inner_steps, cg_steps):
    return solvers.imaml_meta_gradient(task, theta, inner_steps=inner_steps, cg_steps=cg_steps).gradient


def ours_fomaml(task, theta):
    return solvers.fomaml_meta_gradient(task, theta, inner_steps=_converged_steps(task)[0]).gradient


# -- re-implementations of documented variants (NumPy, exact inner solve unless budgets) ----------
def _inner(task, theta, inner_steps=None):
    if inner_steps is None:
        lam = float(task.lam)
        return np.linalg.solve(task.A + lam * np.eye(task.dim), lam * theta - task.b)
    return solvers.inner_solve(task, theta, inner_steps=inner_steps).x


def _last(iterates, d):
    out = np.zeros(d)
    for out in iterates:
        pass
    return out


def normal_cg_reimpl(task, theta, inner_steps=None, cg_steps=5):
    """torchopt's solve_normal_cg: CG on MᵀM g = Mᵀ∇L (M = I + H/λ symmetric)."""
    phi = _inner(task, theta, inner_steps)
    M = ImplicitSystem.at(task, phi).matvec
    return _last(cg_iterates(lambda w: M(M(w)), M(task.outer_grad(phi)), cg_steps), task.dim)


def paper_defaults_reimpl(task, theta, inner_steps=None, cg_steps=5, regu_coef=1.0, lam_damping=10.0):
    """The paper's reference code: CG on ((1 + regu_coef)I + H/(λ + lam_damping))g = ∇L."""
    phi = _inner(task, theta, inner_steps)
    A = ImplicitSystem.at(task, phi).damped(regu_coef, lam_damping).matvec
    return _last(cg_iterates(A, task.outer_grad(phi), cg_steps), task.dim)


def betty_cg_reimpl(task, theta, inner_steps=None, cg_steps=50, cg_alpha=1.0):
    """betty's ``cg`` as its source describes it, on the Hessian of the inner objective
    G = L̂ + (λ/2)‖φ − θ‖² (the proximal term is part of the user's inner loss), then the
    implicit gradient −∂²G/∂θ∂φ · x = λx."""
    phi = _inner(task, theta, inner_steps)
    lam = float(task.lam)
    hvp = lambda w: task.inner_hvp(phi, w) + lam * w  # noqa: E731
    v = task.outer_grad(phi)
    x, r, p = np.zeros_like(v), v.copy(), v.copy()
    for _ in range(cg_steps):
        Hp = hvp(p)
        step = (r @ r) / (p @ (cg_alpha * Hp))
        x_next = x + step * p
        r_next = r - step * Hp
        p = r + (r_next @ r_next) / (r @ r) * p        # built from the previous residual
        x, r = x_next, r_next
    return lam * cg_alpha * x


# -- torchopt -------------------------------------------------------------------------------------
def torch_newton_inner(task, theta, inner_steps=None):
    """φ from θ with torch autograd: K gradient steps with step 1/β when ``inner_steps`` is
    given, else Newton with backtracking on G (full steps once ‖∇G‖ < 1e-8, where function
    values can no longer resolve a decrease) until ‖∇G‖ stops decreasing."""
    import torch

    lam = float(task.lam)
    G = lambda p: task.inner_loss(p) + 0.5 * lam * torch.sum((p - theta) ** 2)  # noqa: E731
    phi = theta.detach().clone()
    if inner_steps is not None:
        beta, _ = task.curvature_bounds()
        for _ in range(inner_steps):
            phi = phi - torch.func.grad(G)(phi) / beta
        return phi
    best = None
    for _ in range(100):
        g = torch.func.grad(G)(phi)
        gn = float(torch.linalg.vector_norm(g))
        if best is not None and gn >= best[0]:
            break
        best = (gn, phi)
        step = torch.linalg.solve(torch.func.hessian(G)(phi), g)
        a, value, slope = 1.0, float(G(phi)), float(g @ step)
        while gn > 1e-8 and a > 1e-10 and float(G(phi - a * step)) > value - 0.25 * a * slope:
            a /= 2
        phi = phi - a * step
    return best[1]


def _torchopt(solve, inner_steps=None):
    def meta_gradient(task, theta, **budget):
        import torch
        import torchopt   # the optional 'peers' extra: imported when the peer runs

        K = budget.get("inner_steps", inner_steps)
        lam = float(task.lam)

        def objective(phi, th):
            return task.inner_loss(phi) + 0.5 * lam * torch.sum((phi - th) ** 2)

        @torchopt.diff.implicit.custom_root(torch.func.grad(objective, argnums=0), argnums=1,
                                            solve=solve(budget.get("cg_steps"), task.dim))
        def inner_solver(phi0, th):
            with torch.no_grad():
                return torch_newton_inner(task, th.detach(), K)

        th = theta.detach().clone().requires_grad_(True)
        phi = inner_solver(theta.detach().clone(), th)
        (g,) = torch.autograd.grad(task.outer_loss(phi), th)
        return g
    return meta_gradient


def torchopt_peers():
    def cg_default(steps, dim):
        import torchopt
        return torchopt.linear_solve.solve_cg() if steps is None else \
            torchopt.linear_solve.solve_cg(maxiter=steps, rtol=0.0, atol=0.0)

    def cg_tight(steps, dim):
        import torchopt
        return torchopt.linear_solve.solve_cg(maxiter=4 * dim + 20, rtol=1e-16)

    def normal_example(steps, dim):
        import torchopt
        return torchopt.linear_solve.solve_normal_cg(maxiter=5 if steps is None else steps, atol=0)

    req = ("torch", "torchopt")
    return [
        Peer("torchopt custom_root + solve_cg() (defaults: rtol=1e-5)", _torchopt(cg_default),
             backend="torch", requires=req),
        Peer("torchopt custom_root + solve_cg(maxiter=4d+20, rtol=1e-16)", _torchopt(cg_tight),
             backend="torch", requires=req),
        Peer("torchopt custom_root + solve_normal_cg(maxiter=5, atol=0) (its iMAML example)",
             _torchopt(normal_example), backend="torch", requires=req),
        Peer("torchopt custom_root + solve_cg(maxiter=M), Algorithm 2", _torchopt(cg_default),
             "budget", (10, 5), backend="torch", requires=req),
        Peer("torchopt custom_root + solve_normal_cg(maxiter=M), Algorithm 2 (its example)",
             _torchopt(normal_example), "budget", (10, 5), backend="torch", requires=req),
    ]


# -- jaxopt ---------------------------------------------------------------------------------------
def _jaxopt(tol=None):
    def meta_gradient(task, theta):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import jax
            import jax.numpy as jnp
            from jaxopt import implicit_diff, linear_solve
        jax.config.update("jax_enable_x64", True)
        A, b, Aq, bq = (jnp.asarray(np.asarray(x, dtype=np.float64)) for x in
                        (task.A, task.b, task.A_query, task.b_query))
        lam = float(task.lam)

        def inner_objective(phi, th):
            return 0.5 * phi @ A @ phi + phi @ b + 0.5 * lam * jnp.sum((phi - th) ** 2)

        solve = linear_solve.solve_cg if tol is None else (
            lambda matvec, rhs: linear_solve.solve_cg(matvec, rhs, tol=tol, maxiter=10 * task.dim + 50))

        @implicit_diff.custom_root(jax.grad(inner_objective, argnums=0), solve=solve)
        def inner_solver(init, th):
            return jnp.linalg.solve(A + lam * jnp.eye(A.shape[0]), lam * th - b)

        def outer(th):
            phi = inner_solver(None, th)
            return 0.5 * phi @ Aq @ phi + phi @ bq

        return np.asarray(jax.grad(outer)(jnp.asarray(np.asarray(theta, dtype=np.float64))))
    return meta_gradient


def jaxopt_peers():
    req = ("jax", "jaxopt")
    return [Peer("jaxopt implicit_diff.custom_root + solve_cg (defaults: tol=1e-5)", _jaxopt(),
                 requires=req),
            Peer("jaxopt implicit_diff.custom_root + solve_cg(tol=1e-15)", _jaxopt(1e-15),
                 requires=req)]


def peers() -> list[Peer]:
    """Every implementation ``make check-peers`` checks."""
    own = [Peer("imaml-verify solvers.imaml_meta_gradient (converged)", ours_converged),
           Peer("imaml-verify solvers.imaml_meta_gradient (Algorithm 2)", ours_algorithm2, "budget", (10, 5)),
           Peer("imaml-verify solvers.fomaml_meta_gradient (control)", ours_fomaml,
                note="first-order MAML: must be flagged")]
    reimpl = [
        Peer("re-implementation: torchopt's normal-equation CG, 5 steps", normal_cg_reimpl),
        Peer("re-implementation: paper's reference code defaults, 5 CG steps",
             paper_defaults_reimpl),
        Peer("re-implementation: paper's reference code defaults, solved exactly",
             lambda task, theta: paper_defaults_reimpl(task, theta, cg_steps=4 * task.dim + 20)),
        Peer("re-implementation: betty's cg, 50 iterations (cg_alpha = 1)", betty_cg_reimpl),
        Peer("re-implementation: paper's reference code defaults, Algorithm 2",
             lambda task, theta, inner_steps, cg_steps: paper_defaults_reimpl(task, theta, inner_steps, cg_steps),
             "budget", (10, 5)),
    ]
    return own + reimpl + torchopt_peers() + jaxopt_peers()


def _missing(requires):
    import importlib.util

    return [m for m in requires if importlib.util.find_spec(m) is None]


def _issue_instance_error(peer) -> float | None:
    """Relative error on the issue's instance (d = 50, λ = 2, κ = 16.7), at M = 5 CG steps and a
    converged inner solve for budget-mode peers."""
    task, theta = build(ISSUE_INSTANCE, backend=peer.backend)
    ref = exact_meta_gradient(task, theta)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = peer.fn(task, theta) if peer.mode == "converged" else peer.fn(
                task, theta, inner_steps=2000, cg_steps=peer.budgets[1])
    except Exception:  # reported as missing in the table
        return None
    out = getattr(out, "gradient", out)
    if hasattr(out, "detach"):
        out = out.detach().cpu().numpy()
    out = np.asarray(out, dtype=np.float64)
    _ISSUE_OUTPUT[peer.name] = (task, theta, ref, out)
    return rel(out, ref.g) / float(np.linalg.norm(np.asarray(ref.g, dtype=float)))


_ISSUE_OUTPUT: dict = {}


def _issue_instance_diagnosis(peer) -> str | None:
    """The diagnosis of the peer's output on the issue's instance (used where the failures the
    search found cannot be diagnosed, e.g. a NaN)."""
    if peer.name not in _ISSUE_OUTPUT:
        return None
    task, theta, ref, out = _ISSUE_OUTPUT[peer.name]
    if not np.all(np.isfinite(out)):
        return None
    d = diagnose(out, task, theta, ref,
                 cg_steps=peer.budgets[1] if peer.budgets else None)
    return None if str(d).startswith(NO_DEFECT) else f"on the issue's instance: {d}"


def run_peers(*, seed: int = 0, quick: bool = False, only=None) -> dict:
    """Check every peer; returns the results document (see :func:`render_markdown`)."""
    rows = []
    for peer in peers():
        if only and not any(s in peer.name for s in only):
            continue
        row = {"implementation": peer.name, "mode": peer.mode,
               "budgets": list(peer.budgets) if peer.budgets else None, "backend": peer.backend}
        missing = _missing(peer.requires)
        if missing:
            row.update(verdict="SKIPPED", reason=f"not installed: {', '.join(missing)} "
                                                 f"(pip install -e '.[peers]')")
            rows.append(row)
            continue
        start = time.perf_counter()
        kwargs = dict(backend=peer.backend, seed=seed,
                      max_examples=(10 if quick else 40) if peer.mode == "converged" else (3 if quick else 10))
        if peer.backend == "torch":
            kwargs["families"] = ("planted", "logistic") if peer.mode == "converged" else ("planted",)
        if peer.mode == "budget":
            kwargs.update(inner_steps=peer.budgets[0], cg_steps=peer.budgets[1], max_kappa=100.0)
        report = check_meta_gradient(peer.fn, **kwargs)
        first = report.failures[0] if report.failures else None
        row.update(
            verdict="PASS" if report.passed else "FAIL", instances=report.instances,
            worst_ratio=report.worst_ratio if report.passed else None,
            measured=None if first is None or first.error else first.measured,
            allowed=None if first is None or first.error else first.allowed,
            relative_error=None if first is None or first.error else first.relative,
            failing_instance=repr(first.instance) if first else None,
            check=first.check if first else None, error=first.error if first else None,
            diagnosis=str(report.diagnosis) if report.diagnosis else None,
            issue_instance_relative_error=_issue_instance_error(peer),
            elapsed_s=time.perf_counter() - start, note=peer.note)
        if not report.passed and (not row["diagnosis"] or row["diagnosis"].startswith(NO_DEFECT)):
            row["diagnosis"] = _issue_instance_diagnosis(peer) or row["diagnosis"]
        rows.append(row)
        print(f"{row['verdict']:7s} {peer.name}", file=sys.stderr)
    return {"seed": seed, "quick": quick, "issue_instance": ISSUE_INSTANCE.as_dict(), "rows": rows}


def _fmt(x, spec=".2e"):
    return "—" if x is None else format(x, spec)


def render_markdown(doc) -> str:
    """The table of :func:`run_peers` as Markdown (the report's "Third-party implementations")."""
    lines = ["## Third-party implementations", "",
             "`make check-peers` (docs/checker.md): each implementation checked against exact "
             "meta-gradients; converged mode unless budgets (K, M) are given. *Measured*: the "
             "first failing comparison, ‖g − g*‖ against what a correct implementation may reach "
             "there (rounding, or Lemma 3's bound at those budgets); *issue instance*: relative "
             "error on d = 50, λ = 2, κ(I + A/λ) = 16.7 with M = 5 CG steps.", "",
             "| implementation | mode | verdict | measured (allowed) | relative | issue instance | diagnosis |",
             "|---|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        mode = r["mode"] + (f" K={r['budgets'][0]}, M={r['budgets'][1]}" if r.get("budgets") else "")
        if r["verdict"] == "SKIPPED":
            lines.append(f"| {r['implementation']} | {mode} | skipped | — | — | — | {r['reason']} |")
            continue
        measured = (f"{_fmt(r['measured'])} ({_fmt(r['allowed'])})" if r["measured"] is not None
                    else (f"within allowance (worst {r['worst_ratio']:.2g}×)" if r["verdict"] == "PASS"
                          else (r.get("error") or "—")))
        lines.append(f"| {r['implementation']} | {mode} | {r['verdict']} | {measured} | "
                     f"{_fmt(r.get('relative_error'))} | {_fmt(r.get('issue_instance_relative_error'), '.3g')} | "
                     f"{(r.get('diagnosis') or '').replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m verify.checker.peers",
                                description="Run the checker on real libraries and variants.")
    p.add_argument("--out", default="reports/peers")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="fewer instances per implementation")
    p.add_argument("--only", action="append", default=None, help="substring of names to run")
    args = p.parse_args(argv)
    doc = run_peers(seed=args.seed, quick=args.quick, only=args.only)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "peers.json").write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")
    md = render_markdown(doc)
    (out / "peers.md").write_text(md, encoding="utf-8")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
