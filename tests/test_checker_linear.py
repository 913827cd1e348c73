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
    with pytest.raises(CheckerArgumentError, match=r"linear_options\['alpha'\] must be a finite"):
        check_meta_gradient(fn, linear_solver="neumann", linear_options={"alpha": 0.0}, **BUDGET)
    with pytest.raises(CheckerArgumentError, match=r"linear_options\['alpha'\] must be a finite"):
        check_meta_gradient(fn, linear_solver="neumann", linear_options={"alpha": True}, **BUDGET)
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


# -- pinned: the ladder, the diagnosis call, the divergence flag, the step fit's guards ----------
from types import SimpleNamespace

from theory.bounds import neumann_error_bound
from verify.checker import Instance, build, core
from verify.checker.diagnosis import FIT_MATCH, neumann_step_fit
from verify.checker.reference import converged_allowance


def _evaluate_alone(fn, budgets, inst, **linear):
    check = core._MetaGradientCheck(fn, budgets=budgets, inner="any", backend="numpy",
                                    device="cpu", dtype="float64", families=("planted",),
                                    **linear)
    return check.evaluate(inst)


@pytest.mark.parametrize("kappa", [3.0, 7.0, 10.0])
def test_the_neumann_ladder_ends_where_the_series_bound_reaches_rounding(kappa):
    """Budget mode with linear_solver='neumann' on one instance: (K, M), (2K, 2M), (4K, 4M) and
    the budget where the inner bound and the *series'* bound ‖I − αM‖^m‖g*‖ (α = λ/β) reach
    1e-3 of the allowance, if that is within max(50d, 200) = 300 steps (κ = 3: 60 odd; κ = 7:
    245; κ = 10: 354, not asked for); no Krylov stage (nothing skipped)."""
    from theory.bounds import lemma3_B1
    from verify.tasks import float64_twin

    inst = Instance(dim=6, kappa=kappa, lam=0.37, floor=0.5, seed=31)
    calls = []

    def alg2(task, theta, inner_steps, cg_steps):
        calls.append((inner_steps, cg_steps))
        return ours("neumann")(task, theta, inner_steps, cg_steps)

    out = _evaluate_alone(alg2, (4, 2), inst, linear_solver="neumann")
    task, theta = build(inst)
    ref = exact_meta_gradient(task, theta)
    al = converged_allowance(task, theta, ref).total
    c = float64_twin(task).constants(np.asarray(theta))
    dist = float(np.linalg.norm(np.asarray(theta) - np.asarray(ref.phi, float)))
    lam, mu, beta = c.lam, c.mu, c.beta
    target = 1e-3 * al / (lemma3_B1(c, sharp=True) + lam / mu * c.L)
    k_conv = core._steps_until(lambda k: core.inner_distance_bound(c.kappa, k, dist), target)
    m_conv = core._steps_until(
        lambda m: neumann_error_bound((mu / lam, beta / lam), lam / beta, m,
                                      lam / mu * (c.B + c.L * dist)), 1e-3 * al, cap=300)
    cg_conv = core._steps_until(lambda m: core.cg_error_bound(c.kappa, m, lam / mu * (c.B + c.L * dist)),
                                1e-3 * al, cap=300)
    ladder = [(4, 2), (8, 4), (16, 8)]
    if kappa == 10.0:
        assert m_conv is None       # beyond the cap
    else:
        assert m_conv > cg_conv and (m_conv > 200) == (kappa == 7.0)   # the series needs more
        ladder.append((max(k_conv, 4), max(m_conv, 2)))
    assert calls == ladder
    assert out.passed and out.skipped == 0


def test_a_failing_series_is_diagnosed_at_a_converged_inner_solve_and_cg_is_not():
    """A failing budget of a non-CG solver calls the implementation once more at the same linear
    budget with φ converged (details['converged_inner']); CG's failures do not."""
    inst = Instance(dim=6, kappa=3.0, lam=0.37, floor=0.5, seed=31)
    calls = []

    def big(task, theta, inner_steps, cg_steps):
        calls.append((inner_steps, cg_steps))
        return library_neumann(2.5)(task, theta, inner_steps, cg_steps)

    out = _evaluate_alone(big, (4, 2), inst, linear_solver="neumann")
    f = out.failures[0]
    assert not out.passed and f.check == "budget"
    k, m = f.budgets
    k_conv, g = f.details["converged_inner"]
    assert calls[-2:] == [(k, m), (k_conv, m)] and k_conv > k
    assert np.array_equal(g, big(*build(inst), k_conv, m))
    cg_out = _evaluate_alone(lambda t, th, inner_steps, cg_steps: 2 * ours("cg")(
        t, th, inner_steps, cg_steps), (4, 2), inst)
    assert not cg_out.passed and "converged_inner" not in cg_out.failures[0].details


def test_the_divergence_flag_at_alpha_norm_exactly_two():
    """‖I − αM‖ = 1 (α‖M‖ = 2: the top component never decays) is flagged; just below is not.
    M = diag(1, 2) (H = diag(0, 1), λ = 1)."""
    check = core._MetaGradientCheck(None, budgets=(1, 1), inner="any", backend="numpy",
                                    device="cpu", dtype="float64", families=("planted",),
                                    linear_solver="neumann", linear_options={"alpha": 1.0})
    ref = SimpleNamespace(H=np.diag([0.0, 1.0]), g=np.array([3.0, 4.0]))
    task = SimpleNamespace(lam=1.0)
    c = SimpleNamespace(lam=1.0, beta=2.0, mu=1.0)
    f = check._diverging("inst", task, ref, c)
    assert f.check == "divergent" and f.measured == 2.0 and f.allowed == 2.0
    assert f.reference_norm == 5.0 and f.details["contraction"] == 1.0
    assert f.diagnosis.explained == 0.0 and f.diagnosis.known
    assert "α‖I + H/λ‖ = 2 ≥ 2" in f.diagnosis.name
    check.linear_options = {"alpha": 0.999}
    assert check._diverging("inst", task, ref, c) is None
    check.linear_solver, check.linear_options = "fixed_point", {"step_size": 1.0}  # α = ηλ = 1
    assert check._diverging("inst", task, ref, c).measured == 2.0
    check.linear_solver = "minres"
    assert check._diverging("inst", task, ref, c) is None


def test_linear_step_and_delta():
    c = SimpleNamespace(lam=0.5, beta=4.0, mu=1.0, kappa=4.0)
    assert core.linear_step(c, "neumann") == 0.125 and core.linear_step(c, "cg") is None
    assert core.linear_step(c, "neumann", {"alpha": 0.3}) == 0.3
    assert core.linear_step(c, "fixed_point") == 0.25 * 0.5
    assert core.linear_step(c, "fixed_point", {"step_size": 0.1}) == 0.1 * 0.5
    # ‖g*‖ ≤ (λ/μ)·grad_bound = 1.5; the spectrum [μ/λ, β/λ] = [2, 8]
    assert core.linear_delta(c, 3, 3.0, "neumann") == neumann_error_bound((2.0, 8.0), 0.125, 3, 1.5)
    assert core.linear_delta(c, 3, 3.0, "cg") == core.cg_error_bound(4.0, 3, 1.5)
    from theory.bounds import minres_error_bound
    assert core.linear_delta(c, 3, 3.0, "minres") == minres_error_bound(3, 3.0, positive=(2.0, 8.0))


def test_the_step_fit_refuses_a_singular_system_and_fits_the_identity():
    v = np.array([1.0, 2.0])
    assert neumann_step_fit(v, np.diag([-1.0, 1.0]), 1.0, v, 3) is None      # w = (0, 2)
    assert neumann_step_fit(v, np.diag([-1.0, -1.0]), 1.0, v, 3) is None     # M = 0
    # M = I: x_k(α) = (1 − (1 − α)^k) v; g = 0.875 v is k = 3 at α = 1/2
    a, miss = neumann_step_fit(0.875 * v, np.zeros((2, 2)), 1.0, v, 3)
    assert abs(a - 0.5) <= FIT_MATCH and miss <= FIT_MATCH


@pytest.mark.parametrize("alpha_norm", [1.2e-3, 0.7, 2.3, 3.9])
def test_the_step_fit_searches_alpha_norm_from_1e_3_to_4(alpha_norm):
    """The search runs over α‖M‖ ∈ [1e-3, 4] whatever ‖M‖ (here 1000): each step is recovered,
    to rounding of the fit."""
    H = np.diag([0.0, 4.0, 999.0])
    v = np.array([1.0, -2.0, 0.5])
    M = solvers.ImplicitSystem.of_hessian(H, 1.0)
    alpha = alpha_norm / 1000.0
    g = list(neumann_iterates(M.matvec, v, alpha, 10))[-1]
    a, miss = neumann_step_fit(g, H, 1.0, v, 10)
    # (FIT_MATCH: the catalogue's own threshold for naming a fitted answer)
    assert abs(a - alpha) <= FIT_MATCH * alpha and miss <= FIT_MATCH * float(np.linalg.norm(g))


def test_the_catalogues_neumann_names_by_budget():
    """Converged mode: 'not converged' after 1…NEUMANN_TERMS iterations (singular for 1);
    budget M: 'too few terms' for 1…M−1, nothing at M (that is the declared series), 'not
    converged' beyond; a budget above NEUMANN_TERMS extends the terms tried."""
    from verify.checker.diagnosis import NEUMANN_TERMS, candidates

    task, theta, ref, M, v, beta = _instance()
    conv = [n for n, _ in candidates(task, theta, ref) if "Neumann series with α = λ/β" in n]
    assert len(conv) == NEUMANN_TERMS
    assert conv[0].startswith("the fixed-point hypergradient not converged: 1 iteration (")
    assert conv[0].endswith("1 term)") and conv[1].endswith("2 terms)")
    assert "not converged: 2 iterations (" in conv[1]
    names = [n for n, _ in candidates(task, theta, ref, cg_steps=5)]
    few = [n for n in names if n.startswith("a Neumann series with too few terms")]
    assert few == [f"a Neumann series with too few terms: {k} of the 5 budgeted (α = λ/β)"
                   for k in range(1, 5)]
    late = [n for n in names if n.startswith("the fixed-point hypergradient not converged")]
    assert late[0].startswith("the fixed-point hypergradient not converged: 6 iterations")
    assert len(late) == NEUMANN_TERMS - 5
    many = [n for n, _ in candidates(task, theta, ref, cg_steps=NEUMANN_TERMS + 50)]
    assert sum(n.startswith("a Neumann series with too few terms") for n in many) == NEUMANN_TERMS + 49


@pytest.mark.parametrize("cg_steps", [None, 2])
def test_a_two_term_series_with_alpha_too_large_is_named(cg_steps):
    """The shortest series the fit covers: 2 terms (converged mode tries 2…40 terms, budget
    mode the budget)."""
    task, theta, ref, M, v, beta = _instance()
    top = float(np.max(np.linalg.eigvalsh(M.matrix())))
    g = list(neumann_iterates(M.matvec, v, 2.3 / top, 2))[-1]
    d = diagnose(g, task, theta, ref, cg_steps=cg_steps)
    assert d.name.startswith("a Neumann series with α too large") and d.name.endswith("(2 terms)")


def test_a_rescaled_answer_on_m_equal_to_c_i_is_named_a_rescaling():
    """On M = cI every Neumann series is a multiple of g*: the fit is not tried where a rescaled
    g* explains the output, which is named as such."""
    task, _ = planted_spectrum_task(5, 1.0, 0.37, seed=0, query="independent")
    theta = np.random.default_rng(1).standard_normal(5)
    ref = exact_meta_gradient(task, theta)
    d = diagnose(np.asarray(ref.g, float) * (1 + 1e-3), task, theta, ref)
    assert d.name.startswith("the exact meta-gradient scaled by"), d.name
