"""verify.checker: correct meta-gradients pass with no false alarm over several seeds; every
defect of a broad catalogue is flagged, the documented variants with the right diagnosis; budget
mode holds Algorithm 2 to Lemma 2/3 and CG's bounds; check_cg holds CG to the Krylov iterate;
the reports are deterministic, shrunk and reproducible; the command line and the documented
example run."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

import solvers
from _checker_catalogue import CORRECT, DEFECTS, assert_premises, textbook_solve
from verify.checker import (Instance, build, diagnose, check_cg, check_meta_gradient, exact_meta_gradient,
                            krylov_iterate)
from verify.checker.diagnosis import cg_iterates
from verify.checker.instances import corner_instances, sample
from verify.checker.reference import converged_allowance, rel

# -- converged mode: no false alarm ---------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", ["textbook_solve", "ours_converged"])
def test_correct_implementations_pass_over_seeds(name, seed):
    # solvers.imaml_meta_gradient runs tens of thousands of Nesterov steps at κ = 1e5: fewer
    # drawn instances here, 300 per seed under -m slow
    n = 100 if name == "textbook_solve" else 10
    report = check_meta_gradient(CORRECT[name], seed=seed, max_examples=n)
    assert report.passed, report
    assert report.instances >= n and report.failures == []
    assert report.worst_ratio < 0.5, "a correct implementation came close to its allowance"


@pytest.mark.parametrize("name", sorted(set(CORRECT) - {"textbook_solve", "ours_converged"}))
def test_other_correct_implementations_pass(name):
    report = check_meta_gradient(CORRECT[name], seed=3)
    assert report.passed, report


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(4, 12))
@pytest.mark.parametrize("name", sorted(CORRECT))
def test_correct_implementations_pass_many_seeds(name, seed):
    report = check_meta_gradient(CORRECT[name], seed=seed, max_examples=300)
    assert report.passed, report


# -- converged mode: the defect catalogue ---------------------------------------------------------
EXPECTED = {   # the diagnosis each defect must get (a substring of its name)
    "wrong_sign": "wrong sign", "missing_lambda": "missing factor λ", "extra_lambda": "extra factor λ (",
    "lambda_squared": "λ²", "one_over_lambda": "missing factor λ", "factor_two": "factor 2",
    "A_for_A_query": "A in place of A_query", "b_for_b_query": "b in place of b_query",
    "query_hessian_in_system": "built with A_query", "ignores_theta": "θ ignored",
    "theta_for_phi": "θ in place of φ*", "fomaml": "first-order MAML", "reptile": "Reptile",
    "normal_equations_cg5": "normal equations", "damped_paper_defaults": "2I + H/(λ + 10)",
    "inverse_without_lambda": "inverse without λ", "truncated_cg3": "CG on I + H/λ stopped after 3",
    "few_inner_steps": "inner solve stopped after 10", "float32_cast": "single-precision",
    "float32_accumulation_last_step": "single-precision", "transposed_product": "wrong order",
    "b_sign_flipped": "sign of b", "perturbed_1e6": "scaled by 1 + 1e-06",
    "perturbed_1e9": "scaled by 1 + 1e-09", "one_coordinate_1e9": "coordinate 0",
    "unregularized_inner": "unregularised", "inner_loss_as_outer": "inner loss used as the outer",
    "lambda_ignored_in_inner": "λ = 1", "cached_answer": "cached", "only_large_dim": "1 + 0.001",
    "cg_fixed_30_steps": "stopped after 30",
}


@pytest.fixture(scope="module")
def premise_instances():
    """d = 40 (> 30), κ = 1e4 (30 CG steps fall short), λ = 2.5 (≠ 1), a query with its own
    eigenvectors, ‖θ‖ = 1e4 (> the clip); two of one dimension (the cache); d = 3, where
    d − 1 CG steps are one short of the 3 distinct eigenvalues; and a well-conditioned one
    (κ = 2, ‖θ‖ = 1), where the correct answers agree to rounding and a 1e-9 change shows."""
    from verify.tasks import planted_spectrum_task

    instances = []
    for seed, dim, kappa, norm in ((0, 40, 1e4, 1e4), (1, 40, 1e4, 1e4), (2, 3, 1e4, 1e4),
                                   (3, 5, 2.0, 1.0)):
        task, _ = planted_spectrum_task(dim, kappa, 2.5, seed=seed, query="independent")
        theta = np.random.default_rng(seed).standard_normal(dim)
        instances.append((task, norm * theta / np.linalg.norm(theta)))
    return instances


def test_the_catalogue_is_what_it_says(premise_instances):
    """Without the checker: the correct implementations agree, every defect is wrong somewhere."""
    assert_premises(premise_instances)


def test_the_premise_check_fails_on_a_defect_that_is_right(premise_instances):
    """Its negative control: a 'defect' that returns the right answer is refused."""
    DEFECTS["planted_right_answer"] = textbook_solve
    try:
        with pytest.raises(AssertionError, match="planted_right_answer is not wrong"):
            assert_premises(premise_instances)
    finally:
        del DEFECTS["planted_right_answer"]


@pytest.mark.parametrize("name", sorted(DEFECTS))
def test_every_defect_is_flagged(name):
    fn = DEFECTS[name]() if name == "cached_answer" else DEFECTS[name]
    report = check_meta_gradient(fn)
    assert not report.passed, f"{name} was not flagged:\n{report}"
    assert report.failures and report.diagnosis is not None
    if name in EXPECTED:
        # decided on an instance that separates the candidates (never a 1-D coincidence)
        assert EXPECTED[name] in report.diagnosis.name, f"{name}: {report.diagnosis}\n{report}"
        assert report.diagnosis.decisive, f"{name}: {report.diagnosis}"


def test_report_is_readable_shrunk_and_reproducible():
    report = check_meta_gradient(DEFECTS["missing_lambda"], seed=4)
    text = str(report)
    assert text.startswith("FAIL") and "minimal failing instance (shrunk)" in text
    first = report.failures[0]
    assert first.minimal and first.check == "converged"
    assert first.measured > first.allowed and first.ratio > 1
    assert "reproduce:" in text and "λ" not in repr(first.instance)
    # the printed instance rebuilds the task, and the failure reproduces on it
    task, theta = build(first.instance)
    ref = exact_meta_gradient(task, theta)
    assert rel(DEFECTS["missing_lambda"](task, theta), ref.g) == pytest.approx(first.measured)
    doc = json.loads(report.to_json())
    assert doc["passed"] is False and doc["failures"][0]["instance"]["lam"] == first.instance.lam


def test_same_seed_same_report_other_seed_other_instances():
    a = check_meta_gradient(DEFECTS["perturbed_1e9"], seed=7)
    b = check_meta_gradient(DEFECTS["perturbed_1e9"], seed=7)
    c = check_meta_gradient(DEFECTS["perturbed_1e9"], seed=8)
    assert [f.instance for f in a.failures] == [f.instance for f in b.failures]
    assert str(a) == str(b)
    assert [f.instance for f in a.failures] != [f.instance for f in c.failures]


def test_corner_only_defect_is_found_by_the_search_alone():
    """Without the fixed corners, the seeded stream itself must reach d > 30."""
    from verify.checker.core import _MetaGradientCheck, _Search
    from verify.checker.instances import draw

    check = _MetaGradientCheck(DEFECTS["only_large_dim"], budgets=None, inner="any", backend="numpy",
                               device="cpu", dtype="float64", families=("planted",))
    failures, n, _, _ = _Search(check.evaluate).run(
        [], lambda i: draw(0, i, families=("planted",)), 100)
    assert failures and failures[0].instance.dim > 30 and failures[0].minimal


def test_output_problems_are_failures_not_crashes():
    def raises(task, theta):
        raise RuntimeError("boom")

    def wrong_shape(task, theta):
        return textbook_solve(task, theta)[None, :]

    def nan(task, theta):
        return np.full(task.dim, np.nan)

    for fn, text in ((raises, "raised RuntimeError: boom"), (wrong_shape, "returned shape (1,"),
                     (nan, "NaN")):
        report = check_meta_gradient(fn, max_examples=5)
        assert not report.passed and report.failures[0].check == "output"
        assert text in report.failures[0].error and text in str(report)


def test_result_objects_with_gradient_are_accepted():
    def result(task, theta):
        return solvers.imaml_meta_gradient(task, theta, inner_steps=1, cg_steps=0)

    report = check_meta_gradient(result, max_examples=5)
    assert not report.passed and report.failures[0].check == "converged"   # 1 step is not converged


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="inner_steps and cg_steps"):
        check_meta_gradient(textbook_solve, inner_steps=3)
    with pytest.raises(ValueError, match="backend"):
        check_meta_gradient(textbook_solve, backend="jax")
    with pytest.raises(ValueError, match="device"):
        check_meta_gradient(textbook_solve, device="cuda")
    with pytest.raises(ValueError, match="cg_steps"):
        check_meta_gradient(textbook_solve, inner_steps=3, cg_steps=-1)
    with pytest.raises(ValueError, match="families"):
        check_meta_gradient(textbook_solve, families=("cubic",))


# -- the reference and the allowance --------------------------------------------------------------
def test_extended_reference_agrees_with_the_float64_one_and_is_tighter():
    for inst in corner_instances()[:12]:
        task, theta = build(inst)
        ref = exact_meta_gradient(task, theta)
        al = converged_allowance(task, theta, ref)
        assert rel(task.meta_gradient(theta), ref.g) <= al.total
        assert ref.error_bar <= 1e-2 * al.total or al.total == 0


def test_allowance_is_far_below_the_smallest_defect_on_most_instances():
    """Negative control of the allowance's size: on most drawn instances a relative
    perturbation of 1e-9 of the answer exceeds it (so the allowance is not vacuous)."""
    below = 0
    drawn = sample(60, seed=1)
    for inst in drawn:
        task, theta = build(inst)
        ref = exact_meta_gradient(task, theta)
        al = converged_allowance(task, theta, ref)
        below += al.total < 1e-9 * float(np.linalg.norm(np.asarray(ref.g, dtype=float)))
    assert below >= len(drawn) // 4


# -- budget mode ----------------------------------------------------------------------------------
def _ours(inner):
    def fn(task, theta, inner_steps, cg_steps):
        return solvers.imaml_meta_gradient(task, theta, inner_steps=inner_steps, cg_steps=cg_steps,
                                           inner=inner).gradient
    fn.__name__ = fn.__qualname__ = f"imaml_meta_gradient_{inner}"
    return fn


def _algorithm2(system):
    """Algorithm 2 with an inner Nesterov solve and CG on a chosen system (documented variants)."""
    def fn(task, theta, inner_steps, cg_steps):
        phi = solvers.inner_solve(task, theta, inner_steps=inner_steps).x
        lam = float(task.lam)
        M = lambda w: w + task.inner_hvp(phi, w) / lam  # noqa: E731
        v = task.outer_grad(phi)
        if system == "normal":
            matvec, rhs = (lambda w: M(M(w))), M(v)
        else:   # the paper's reference code defaults
            matvec, rhs = (lambda w: 2 * w + task.inner_hvp(phi, w) / (lam + 10)), v
        its = [np.zeros(task.dim)] + list(cg_iterates(matvec, rhs, cg_steps))
        return its[-1]
    return fn


@pytest.mark.parametrize("inner", ["nesterov", "gd"])
def test_budget_mode_passes_algorithm2(inner):
    report = check_meta_gradient(_ours(inner), inner_steps=8, cg_steps=4, max_examples=6,
                                 max_kappa=30.0)
    assert report.passed, report
    assert report.instances > 20


@pytest.mark.parametrize("system, expected", [("normal", "normal equations"),
                                              ("paper", "2I + H/(λ + 10)")])
def test_budget_mode_flags_documented_variants(system, expected):
    report = check_meta_gradient(_algorithm2(system), inner_steps=10, cg_steps=5, max_examples=6,
                                 max_kappa=100.0)
    assert not report.passed
    assert expected in report.diagnosis.name, report


def test_budget_mode_flags_a_method_that_does_not_improve():
    """First-order MAML ignores the CG budget: its error does not shrink with the budgets."""
    def fomaml(task, theta, inner_steps, cg_steps):
        return solvers.fomaml_meta_gradient(task, theta, inner_steps=inner_steps).gradient

    report = check_meta_gradient(fomaml, inner_steps=5, cg_steps=2, max_examples=5, max_kappa=100.0)
    assert not report.passed
    assert "first-order MAML" in report.diagnosis.name or "CG on I + H/λ started at ∇L" in report.diagnosis.name


def test_budget_bound_is_lemma3_with_lemma2_and_cg():
    from theory.bounds import cg_error_bound, lemma3_bound_sharp, nesterov_distance_bound
    from verify.checker import budget_bound

    task, theta = build(Instance(dim=5, kappa=20.0, lam=0.37, seed=3))
    c = task.constants(theta)
    dist = float(np.linalg.norm(theta - task.inner_solution(theta)))
    bound, delta, dp = budget_bound(c, dist, 7, 3, "nesterov")
    assert delta == nesterov_distance_bound(c.kappa, 7, dist)
    assert dp == cg_error_bound(c.kappa, 3, c.lam / c.mu * (c.B + c.L * delta))
    assert bound == lemma3_bound_sharp(c, delta, dp)


# -- check_cg -------------------------------------------------------------------------------------
def _cg_variant(kind):
    def fn(matvec, rhs, m):
        x = np.zeros_like(rhs)
        if kind == "ours":
            return solvers.cg(matvec, rhs, rtol=0.0, atol=0.0, max_steps=m).x
        if kind == "normal":
            return list(cg_iterates(lambda w: matvec(matvec(w)), matvec(rhs), m))[-1]
        r, p = rhs.copy(), rhs.copy()
        for _ in range(m):
            Mp = matvec(p)
            a = (r @ r) / (p @ Mp)
            x = x + a * p
            r_new = r - a * matvec(r) if kind == "wrong_residual" else r - a * Mp
            beta = 0.0 if kind == "steepest" else (r_new @ r_new) / (r @ r)
            p = r_new + beta * p
            r = r_new
        return x
    fn.__name__ = fn.__qualname__ = f"cg_{kind}"
    return fn


def test_check_cg_passes_cg_and_flags_wrong_ones():
    ok = check_cg(_cg_variant("ours"), max_examples=30)
    assert ok.passed, ok
    assert check_cg(_cg_variant("textbook"), max_examples=30).passed
    normal = check_cg(_cg_variant("normal"), max_examples=10)
    assert not normal.passed and "normal equations" in normal.diagnosis.name
    steepest = check_cg(_cg_variant("steepest"), max_examples=10)
    assert not steepest.passed and "steepest descent" in steepest.diagnosis.name
    wrong = check_cg(_cg_variant("wrong_residual"), max_examples=10)
    assert not wrong.passed


def test_krylov_iterate_is_cg_in_exact_arithmetic():
    task, theta = build(Instance(dim=9, kappa=50.0, lam=0.37, seed=5))
    ref = exact_meta_gradient(task, theta)
    M = np.eye(9) + np.asarray(task.A) / task.lam
    v = np.asarray(ref.outer_grad)
    for m in (1, 2, 3, 4):
        x_m, res, ritz = krylov_iterate(M, v, m, ritz=True)
        x = solvers.cg(lambda w: M @ w, v, rtol=0.0, atol=0.0, max_steps=m).x
        assert np.linalg.norm(x - x_m) <= 1e-12 * np.linalg.norm(x_m)
        assert res > 0 and ritz > 0
    x9, res9 = krylov_iterate(M, v, 9)
    assert np.linalg.norm(x9 - np.linalg.solve(M, v)) <= 1e-12 * np.linalg.norm(x9) and res9 < 1e-12


# -- torch, curved tasks --------------------------------------------------------------------------
def _autograd(first_order=False):
    import torch

    from verify.checker.peers import torch_newton_inner

    def fn(task, theta):
        """Protocol only (torch autograd): damped Newton on G to its floor, then (I + H/λ)⁻¹∇L."""
        lam = float(task.lam)
        phi = torch_newton_inner(task, theta)
        v = torch.func.grad(task.outer_loss)(phi)
        if first_order:
            return v
        H = torch.func.hessian(task.inner_loss)(phi)
        return torch.linalg.solve(torch.eye(len(v), dtype=v.dtype, device=v.device) + H / lam, v)
    fn.__name__ = fn.__qualname__ = "autograd_first_order" if first_order else "autograd_newton"
    return fn


def test_torch_autograd_on_curved_tasks():
    pytest.importorskip("torch")
    report = check_meta_gradient(_autograd(), backend="torch", max_examples=10)
    assert report.passed, report
    assert "logistic" in report.settings["families"]
    bad = check_meta_gradient(_autograd(first_order=True), backend="torch", families=("logistic",),
                              max_examples=10)
    assert not bad.passed and "first-order MAML" in bad.diagnosis.name, bad


@pytest.mark.gpu
def test_torch_cuda_backend():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine")
    seen = []

    def on_device(task, theta):
        seen.append(theta.device.type)
        A, b, Aq, bq, lam = task.A, task.b, task.A_query, task.b_query, float(task.lam)
        C = A + lam * torch.eye(task.dim, dtype=A.dtype, device=A.device)
        phi = torch.linalg.solve(C, lam * theta - b)
        return lam * torch.linalg.solve(C, Aq @ phi + bq)

    report = check_meta_gradient(on_device, backend="torch", device="cuda", families=("planted",),
                                 max_examples=20)
    assert report.passed, report
    assert set(seen) == {"cuda"}


# -- command line and documentation ---------------------------------------------------------------
def test_cli_exit_status_and_json(capsys):
    from verify.cli import main

    assert main(["check", "_checker_catalogue:textbook_solve", "--max-examples", "10"]) == 0
    assert capsys.readouterr().out.startswith("PASS")
    assert main(["check", "_checker_catalogue:fomaml", "--max-examples", "10", "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["passed"] is False and "first-order MAML" in doc["diagnosis"]["name"]
    # usage errors (tests/test_faults.py has them through the child process too)
    assert main(["check", "_checker_catalogue:no_such_function", "--in-process"]) == 2
    assert main(["check", "no_such_module_xyz:f", "--in-process"]) == 2
    assert main(["check", "_checker_catalogue:textbook_solve", "--budget", "3"]) == 2
    capsys.readouterr()


def test_cli_budget_mode(capsys):
    from verify.cli import main

    # fn(task, theta) takes no budgets: refused before any work, in one line
    status = main(["check", "_checker_catalogue:textbook_solve", "--budget", "5,2",
                   "--max-examples", "3", "--in-process"])
    err = capsys.readouterr().err.strip()
    assert status == 2 and len(err.splitlines()) == 1
    assert "fn must be callable as fn(task, theta, inner_steps=K, cg_steps=M)" in err


DOC = Path(__file__).resolve().parents[1] / "docs" / "checker.md"


def test_documented_example_runs_exactly(capsys):
    """The ten-line example of docs/checker.md, executed as written."""
    block = re.search(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S).group(1)
    assert len(block.strip().splitlines()) <= 12
    namespace: dict = {}
    exec(compile(block, str(DOC), "exec"), namespace)  # noqa: S102
    assert namespace["report"].passed
    assert capsys.readouterr().out.startswith("PASS")


def test_instances_cover_the_distribution():
    drawn = sample(150, seed=0)
    assert {i.family for i in drawn} >= {"planted", "paper"}
    planted = [i for i in drawn if i.family == "planted"]
    assert max(i.dim for i in planted) > 30 and min(i.dim for i in planted) == 1
    assert max(i.kappa for i in planted) > 1e3
    assert {i.query for i in planted} == {"independent", "shared", "reversed", "same"}
    assert any(i.lam != 1.0 for i in planted) and any(i.b_scale == 0 for i in planted)
    assert {i.theta_kind for i in planted} >= {"random", "bottom", "top", "cancel", "zero"}
    assert math.isfinite(sum(i.kappa for i in drawn))


# -- instances that belong to the suite ----------------------------------------------------------
def test_the_stream_is_pinned_to_its_arguments():
    """Instance i of seed s is a function of (s, i): these values are the same on every machine,
    NumPy version and import order (PCG64's raw output and integer arithmetic only). A change
    here changes every checker run: it must be deliberate."""
    from verify.checker.instances import draw

    assert draw(0, 0) == Instance(family="planted", dim=36, kappa=10.0, lam=2.5, spectrum="log",
                                  floor=3.0, b_scale=30.0, theta_scale=1e4, theta_kind="top",
                                  seed=1602946317)
    assert draw(0, 1).kappa == 16.707 and draw(0, 1).dim == 18
    assert draw(5, 17, families=("planted", "paper", "logistic")) == draw(
        5, 17, families=("planted", "paper", "logistic"))
    assert draw(0, 3) != draw(1, 3)
    with pytest.raises(ValueError, match="seed"):
        draw(-1, 0)


def test_instances_do_not_depend_on_what_was_imported():
    """The same check, the same seed: the same instances, whether or not modules with many
    literal constants (which recent Hypothesis versions mine into their draws) were loaded."""
    import subprocess
    import sys

    code = ("import sys, hashlib\n"
            "for m in sys.argv[1:]: __import__(m)\n"
            "from verify.checker.instances import sample\n"
            "print(hashlib.sha256(repr(sample(150, seed=3, families=('planted', 'paper', "
            "'logistic'))).encode()).hexdigest())\n")
    outs = {subprocess.run([sys.executable, "-c", code, *mods], capture_output=True, text=True,
                           check=True).stdout
            for mods in ((), ("verify.gpu", "verify.fewshot", "verify.checker.peers", "hypothesis"))}
    assert len(outs) == 1


def test_shrinking_is_deterministic_and_reaches_the_boundary():
    """A defect confined to d > 30 shrinks to d = 31 exactly (and to the plainest other fields)."""
    from verify.checker.instances import draw, shrink

    start = next(draw(0, i) for i in range(100) if draw(0, i).dim > 35)
    fails = lambda inst: inst.dim > 30  # noqa: E731
    a = shrink(start, fails, budget=200)
    assert a == shrink(start, fails, budget=200)
    assert a.dim == 31 and a.lam == 0.37 and a.theta_kind == "random" and a.seed == 0
    # the budget bounds the work, and a budget of 0 leaves the instance as it was
    assert shrink(start, fails, budget=0) == start


def test_a_scaled_answer_is_not_also_a_shifted_system():
    """g = c·g* is (I + H/λ)⁻¹∇L solved with the system scaled by 1/c: one explanation, not two.
    On every instance (d ≥ 3, where the shifted fit applies) the scaling is named."""
    from verify.checker.instances import sample

    for inst in [i for i in sample(40, seed=2) if i.dim >= 3][:12]:
        task, theta = build(inst)
        ref = exact_meta_gradient(task, theta)
        al = converged_allowance(task, theta, ref)
        g = (1 + 1e-6) * np.asarray(ref.g, dtype=float)
        if rel(g, ref.g) <= al.total:
            continue
        d = diagnose(g, task, theta, ref, allowance=al.total)
        assert "scaled by 1 + 1e-06" in d.name, (inst, d)
        assert not any("shifted" in n for n, _ in d.ranking if _ <= 1e-6), (inst, d.ranking)


def test_a_one_dimensional_match_is_not_decisive():
    """On d = 1 every candidate is a multiple of g*: a match there is flagged as not decisive,
    and the overall diagnosis prefers what a separating instance says."""
    inst = Instance(family="planted", dim=1, kappa=1.0, lam=0.37, floor=0.5, seed=0)
    task, theta = build(inst)
    ref = exact_meta_gradient(task, theta)
    d = diagnose(np.asarray(task.outer_grad(np.asarray(ref.phi, dtype=float))), task, theta, ref)
    assert d.known and not d.decisive
    inst7 = Instance(family="planted", dim=7, kappa=40.0, lam=0.37, floor=0.5, seed=101)
    task, theta = build(inst7)
    ref = exact_meta_gradient(task, theta)
    d7 = diagnose(np.asarray(task.outer_grad(np.asarray(ref.phi, dtype=float))), task, theta, ref)
    assert d7.known and d7.decisive and "first-order MAML" in d7.name


def test_a_one_dimensional_coincidence_does_not_name_the_overall_diagnosis():
    """An implementation that is first-order MAML only when d = 1 and otherwise off in a
    direction no known mistake explains: the overall diagnosis is what the separating
    instances say ('no known defect'), not the 1-D coincidence."""
    def odd(task, theta):
        g = textbook_solve(task, theta)
        if task.dim == 1:
            return np.asarray(task.outer_grad(np.linalg.solve(
                task.A + task.lam * np.eye(1), task.lam * theta - task.b)))
        u = np.cos(np.arange(task.dim) * 1.7 + 0.3)
        return g + 0.3 * np.linalg.norm(g) * u / np.linalg.norm(u)

    report = check_meta_gradient(odd, max_examples=30)
    assert not report.passed
    one_d = [f for f in report.failures if f.instance.dim == 1 and f.diagnosis is not None]
    assert any("first-order MAML" in f.diagnosis.name and not f.diagnosis.decisive for f in one_d)
    assert "first-order MAML" not in report.diagnosis.name, report.diagnosis
