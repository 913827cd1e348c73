"""The checker with the linear solvers of solvers/linear/ (docs/checker.md, docs/mathematics.md
§4a, §4b): check_meta_gradient in budget mode holds an implementation to its declared solver's
bound; a Neumann series with α‖I + H/λ‖ ≥ 2 is flagged (declared, or found by the bound and
named by the diagnosis) and a correct one passes; the catalogue names a fixed point not
converged and a Neumann series with too few terms."""
from __future__ import annotations

import numpy as np
import pytest

import solvers
from verify.checker import CheckerArgumentError, check_meta_gradient
from verify.checker.diagnosis import diagnose, neumann_iterates
from verify.checker.reference import exact_meta_gradient
from verify.tasks import planted_spectrum_task

BUDGET = dict(inner_steps=10, cg_steps=5, inner="gd", max_examples=8, families=("planted",))


def ours(solver):
    def fn(task, theta, inner_steps, cg_steps):
        return solvers.imaml_meta_gradient(task, theta, inner_steps=inner_steps,
                                           cg_steps=cg_steps, inner="gd",
                                           linear_solver=solver).gradient
    fn.__name__ = f"ours_{solver}"
    return fn


def library_neumann(factor, terms=None):
    """A Neumann series as libraries write it (no divergence test): α = factor·λ/β, ``terms``
    terms (default: the budget)."""
    def fn(task, theta, inner_steps, cg_steps):
        phi = solvers.inner_solve(task, theta, inner_steps=inner_steps, inner="gd").x
        beta, _ = task.curvature_bounds()
        alpha = factor * task.lam / beta
        v = task.outer_grad(phi)
        g, term = np.zeros_like(v), alpha * v
        for _ in range(cg_steps if terms is None else terms(cg_steps)):
            g = g + term
            term = term - alpha * (term + task.inner_hvp(phi, term) / task.lam)
        return g
    fn.__name__ = f"library_neumann_{factor}"
    return fn


@pytest.mark.parametrize("solver", ["neumann", "fixed_point", "minres"])
def test_a_correct_implementation_of_each_solver_passes(solver):
    rep = check_meta_gradient(ours(solver), linear_solver=solver, **BUDGET)
    assert rep.passed, str(rep)
    assert rep.settings["linear_solver"] == solver


def test_a_library_neumann_series_at_the_default_step_passes():
    assert check_meta_gradient(library_neumann(1.0), linear_solver="neumann", **BUDGET).passed


def test_a_neumann_series_with_alpha_too_large_is_flagged_and_named():
    """α‖M‖ = 2.5: the error grows with the budget, above the bound of the declared (default)
    step, and the diagnosis names the step it fits."""
    rep = check_meta_gradient(library_neumann(2.5), linear_solver="neumann", **BUDGET)
    assert not rep.passed and rep.failures[0].check == "budget"
    assert "Neumann series with α too large" in rep.diagnosis.name
    assert "α‖I + H/λ‖ = 2.5" in rep.diagnosis.name


def test_a_declared_step_with_alpha_norm_at_least_two_fails_on_every_instance():
    rep = check_meta_gradient(library_neumann(2.5), linear_solver="neumann",
                              linear_options={"alpha": 10.0}, **BUDGET)
    assert not rep.passed
    f = rep.failures[0]
    assert f.check == "divergent" and f.measured >= 2.0 == f.allowed
    assert f.diagnosis.name.startswith("a Neumann series with α too large")
    # a declared step that contracts is not flagged as divergent
    ok = check_meta_gradient(ours("neumann"), linear_solver="neumann",
                             linear_options={"alpha": 1e-3}, **BUDGET)
    assert all(f.check != "divergent" for f in ok.failures)


def test_too_few_terms_fail_the_neumann_bound():
    rep = check_meta_gradient(library_neumann(1.0, terms=lambda m: m - 3), linear_solver="neumann",
                              **BUDGET)
    assert not rep.passed


def _instance():
    task, _ = planted_spectrum_task(8, 20.0, 1.0, seed=1, query="independent")
    theta = np.random.default_rng(2).standard_normal(8)
    ref = exact_meta_gradient(task, theta)
    H, v = np.asarray(ref.H, float), np.asarray(ref.outer_grad, float)
    M = solvers.ImplicitSystem.of_hessian(H, task.lam)
    beta, _ = task.curvature_bounds()
    return task, theta, ref, M, v, beta


def test_the_catalogue_names_a_fixed_point_not_converged_and_too_few_terms():
    task, theta, ref, M, v, beta = _instance()
    g25 = list(neumann_iterates(M.matvec, v, task.lam / beta, 25))[-1]
    d = diagnose(g25, task, theta, ref)
    assert d.known and d.name.startswith("the fixed-point hypergradient not converged: 25 iterations")
    d = diagnose(g25, task, theta, ref, cg_steps=40)
    assert d.known and d.name.startswith("a Neumann series with too few terms: 25 of the 40")


def test_the_catalogue_fits_the_step_of_a_neumann_series():
    task, theta, ref, M, v, beta = _instance()
    top = float(np.max(np.linalg.eigvalsh(M.matrix())))
    g = list(neumann_iterates(M.matvec, v, 2.3 / top, 10))[-1]
    d = diagnose(g, task, theta, ref, cg_steps=10)
    assert d.known and d.name.startswith("a Neumann series with α too large")
    assert "α‖I + H/λ‖ = 2.3" in d.name
    # the exact answer is not "explained" by a fitted step
    assert not diagnose(np.asarray(ref.g, float) * (1 + 1e-3), task, theta, ref,
                        cg_steps=10).name.startswith("a Neumann series")


def test_bad_linear_arguments_name_themselves():
    fn = ours("neumann")
    with pytest.raises(CheckerArgumentError, match="linear_solver must be one of"):
        check_meta_gradient(fn, linear_solver="gmres", **BUDGET)
    with pytest.raises(CheckerArgumentError, match=r"linear_options\['beta'\] is not an option"):
        check_meta_gradient(fn, linear_solver="neumann", linear_options={"beta": 1.0}, **BUDGET)
    with pytest.raises(CheckerArgumentError, match=r"linear_options\['alpha'\] must be a finite"):
        check_meta_gradient(fn, linear_solver="neumann", linear_options={"alpha": -1.0}, **BUDGET)
    with pytest.raises(CheckerArgumentError, match="linear_options must be a dict"):
        check_meta_gradient(fn, linear_solver="neumann", linear_options=[1.0], **BUDGET)
    with pytest.raises(CheckerArgumentError, match="give them in budget mode"):
        check_meta_gradient(lambda task, theta: theta, linear_solver="neumann")


neumann_at_default_step = library_neumann(1.0)
neumann_with_alpha_too_large = library_neumann(2.5)


def test_cli_linear_solver(capsys):
    """imaml-verify check --linear-solver neumann: the correct series passes (exit 0), the one
    with α‖M‖ = 2.5 fails (exit 1) and is named; a malformed option is a usage error (exit 2)."""
    from verify.cli import main

    common = ["--budget", "10,5", "--inner", "gd", "--linear-solver", "neumann",
              "--max-examples", "4", "--family", "planted", "--in-process"]
    assert main(["check", "test_checker_linear:neumann_at_default_step", *common]) == 0
    assert capsys.readouterr().out.startswith("PASS")
    assert main(["check", "test_checker_linear:neumann_with_alpha_too_large", *common,
                 "--json"]) == 1
    doc = __import__("json").loads(capsys.readouterr().out)
    assert "Neumann series with α too large" in doc["diagnosis"]["name"]
    assert main(["check", "test_checker_linear:neumann_at_default_step", *common,
                 "--linear-option", "alpha"]) == 2
    assert "--linear-option must be NAME=NUMBER" in capsys.readouterr().err
    assert main(["check", "test_checker_linear:neumann_at_default_step", *common,
                 "--linear-option", "alpha=10"]) == 1
    assert "α too large" in capsys.readouterr().out
