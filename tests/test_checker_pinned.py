"""Pinned tests of the checker (verify/checker/), written from its surviving mutants and from
issue 18's hand mutants: each test fails on a change that no other fast test saw."""
from __future__ import annotations

import numpy as np

import solvers
from verify.checker import check_meta_gradient
from verify.checker.reference import converged_allowance, exact_meta_gradient


def _off_by(factor):
    """Algorithm 2 (our solver) plus an error of ``factor`` × the converged rounding allowance
    of the instance, along e₁: a defect just above what rounding explains."""
    def fn(task, theta, inner_steps, cg_steps):
        g = np.asarray(solvers.imaml_meta_gradient(task, theta, inner_steps=inner_steps,
                                                   cg_steps=cg_steps).gradient, dtype=float)
        al = converged_allowance(task, theta, exact_meta_gradient(task, theta)).total
        return g + factor * al * np.eye(g.shape[0])[0]
    fn.__name__ = fn.__qualname__ = f"algorithm2_off_by_{factor:g}_allowances"
    return fn


def test_budget_mode_holds_the_converged_budget_to_the_rounding_allowance():
    """Mutant: the budget mode's allowance ×1e6. At the budget where Lemma 3's bound is at
    rounding level (1e-3 of the allowance), an error of 30 allowances is a failure of the
    budget comparison itself; 1/2 an allowance is not."""
    bad = check_meta_gradient(_off_by(30.0), inner_steps=8, cg_steps=4, max_examples=2,
                              max_kappa=30.0, corners=False)
    assert not bad.passed
    assert any(f.check == "budget" and f.measured > f.allowed for f in bad.failures), bad
    ok = check_meta_gradient(_off_by(0.5), inner_steps=8, cg_steps=4, max_examples=2,
                             max_kappa=30.0, corners=False)
    assert not any(f.check == "budget" for f in ok.failures), ok


# -- diagnosis: every named wrong answer is what its name says ----------------------------------
import math

import pytest

from _tolerances import assert_within_rounding
from verify.checker import diagnosis as dg
from verify.checker.instances import build, diagnostic_instances


@pytest.fixture(scope="module")
def setting():
    """A diagnostic instance (d = 7, κ = 40, λ = 0.37, A invertible) with its exact reference,
    the candidates by name, and the float64 data."""
    inst = diagnostic_instances()[0]
    task, theta = build(inst)
    ref = exact_meta_gradient(task, theta)
    cands = dg.candidates(task, theta, ref)
    A, b, Aq, bq = (np.asarray(x, dtype=float) for x in (task.A, task.b, task.A_query, task.b_query))
    return dict(inst=inst, task=task, theta=np.asarray(theta, float), ref=ref, cands=cands,
                by_name=dict(cands), A=A, b=b, Aq=Aq, bq=bq, lam=float(task.lam), d=task.dim)


def _same(got, want, s, *, roundings=2):
    C = s["A"] + s["lam"] * np.eye(s["d"])
    scale = float(np.linalg.norm(want)) + float(np.linalg.norm(got)) + 1.0
    assert_within_rounding(got, want, dtype="float64", kappa=float(np.linalg.cond(C)) ** 2,
                           scale=scale, dim=s["d"], roundings=roundings)


def _closed_forms(s):
    """The closed-form wrong answers, computed here from the task's data."""
    A, b, Aq, bq, lam, th, d = (s[k] for k in ("A", "b", "Aq", "bq", "lam", "theta", "d"))
    eye = np.eye(d)
    C = A + lam * eye
    solve = np.linalg.solve
    phi = solve(C, lam * th - b)
    v = Aq @ phi + bq
    H = A

    def mg(phi_at, lam_=lam, C_=C):
        return lam_ * solve(C_, Aq @ phi_at + bq)

    phi_u = solve(A, -b)
    return {
        "first-order MAML: ∇L(φ*) without the implicit Jacobian": v,
        "Reptile's direction θ − φ* (not a gradient)": th - phi,
        "the inner loss's gradient ∇L̂(φ*) = λ(θ − φ*) in place of ∇L(φ*)": A @ phi + b,
        "the inverse without λ: (I + H)⁻¹∇L": solve(eye + H, v),
        "H⁻¹∇L: the identity of I + H/λ dropped": solve(H, v),
        "(I − H/λ)∇L: a Neumann series cut after one term": v - H @ v / lam,
        "the paper's reference code defaults: (2I + H/(λ + 10))⁻¹∇L": solve(2 * eye + H / (lam + 10), v),
        "the implicit gradient at θ (θ in place of φ*)": mg(th),
        "∇L(θ): the outer gradient at θ, no inner solve": Aq @ th + bq,
        "θ ignored: the meta-gradient at θ = 0": mg(solve(C, -b)),
        "the answer for λ = 1 (λ ignored)": mg(solve(A + eye, th - b), 1.0, A + eye),
        "∇L evaluated with A in place of A_query": lam * solve(C, A @ phi + bq),
        "∇L evaluated with b in place of b_query": lam * solve(C, Aq @ phi + b),
        "the inner loss used as the outer loss: λ(A + λI)⁻¹∇L̂(φ*)": lam * solve(C, A @ phi + b),
        "the inner solution computed with λ = 1": lam * solve(C, Aq @ solve(A + eye, th - b) + bq),
        "the implicit system built with A_query: (I + A_query/λ)⁻¹∇L": lam * solve(Aq + lam * eye, v),
        "the inner problem solved with A_query in place of A":
            lam * solve(C, Aq @ solve(Aq + lam * eye, lam * th - b) + bq),
        "λ(A + λI)⁻¹ and A_query multiplied in the wrong order":
            lam * Aq @ solve(C, phi) + lam * solve(C, bq),
        "the inner solution with the sign of b flipped": lam * solve(C, Aq @ solve(C, lam * th + b) + bq),
        "an unregularised inner solve φ = argmin L̂": lam * solve(C, Aq @ phi_u + bq),
        "an unregularised inner solve with first-order MAML": Aq @ phi_u + bq,
    }


def test_closed_form_candidates_are_their_formulas(setting):
    """Mutants: any operator or constant of a candidate's formula (the paper's λ + 10, a sign,
    A for A_query ...). Each closed-form candidate equals its formula recomputed here."""
    forms = _closed_forms(setting)
    assert set(forms) <= set(setting["by_name"])
    for name, want in forms.items():
        _same(setting["by_name"][name], want, setting)


def _cg(mv, rhs, k, x0=None):
    x = np.zeros_like(rhs) if x0 is None else x0.copy()
    r = rhs - mv(x)
    p = r.copy()
    for _ in range(k):
        Mp = mv(p)
        a = (r @ r) / (p @ Mp)
        x = x + a * p
        r_new = r - a * Mp
        p = r_new + (r_new @ r_new) / (r @ r) * p
        r = r_new
    return x


def _betty(mv, rhs, k):
    x, r, p = np.zeros_like(rhs), rhs.copy(), rhs.copy()
    for _ in range(k):
        Mp = mv(p)
        a = (r @ r) / (p @ Mp)
        x, r_new = x + a * p, r - a * Mp
        p = r + (r_new @ r_new) / (r @ r) * p
        r = r_new
    return x


def test_iterative_candidates_are_their_iterations(setting):
    """CG stopped after k steps (three systems, two starts), the previous-residual CG, and the
    inner solve stopped after k gradient or Nesterov steps: recomputed here for every k listed."""
    s = setting
    A, lam, d, th = s["A"], s["lam"], s["d"], s["theta"]
    forms = _closed_forms(s)
    v = forms["first-order MAML: ∇L(φ*) without the implicit Jacobian"]
    M = lambda w: w + A @ w / lam  # noqa: E731
    systems = {"CG on I + H/λ": (M, v, None),
               "CG on the normal equations (I + H/λ)²g = (I + H/λ)∇L": (lambda w: M(M(w)), M(v), None),
               "CG on the paper's defaults 2I + H/(λ + 10)": (lambda w: 2 * w + A @ w / (lam + 10), v, None),
               "CG on I + H/λ started at ∇L": (M, v, v)}
    kmax = min(d + 2, 40)
    for label, (mv, rhs, x0) in systems.items():
        for k in range(1, kmax + 1):
            name = f"{label} stopped after {k} step{'s' if k > 1 else ''}"
            if name in s["by_name"]:
                _same(s["by_name"][name], _cg(mv, rhs, k, x0), s)
        assert f"{label} stopped after 1 step" in s["by_name"]
    betty = [n for n in s["by_name"] if n.startswith("CG with its direction built")]
    assert betty and betty[0].endswith(", 1 step") and len(betty) <= max(kmax, 2 * d)
    for k in range(1, len(betty) + 1):
        name = (f"CG with its direction built from the previous residual (betty's cg), {k} "
                f"step{'s' if k > 1 else ''}")
        _same(s["by_name"][name], lam * _betty(lambda w: A @ w + lam * w, v, k), s)
    w = np.linalg.eigvalsh(A) + lam
    beta, mu = w[-1], w[0]
    q = (math.sqrt(beta / mu) - 1) / (math.sqrt(beta / mu) + 1)
    C = A + lam * np.eye(d)
    for label, mom in (("gradient descent", 0.0), ("Nesterov", q)):
        x = y = th.copy()
        for k in range(1, 61):
            x_new = y - (A @ y + s["b"] + lam * (y - th)) / beta
            y, x = x_new + mom * (x_new - x), x_new
            name = f"the inner solve stopped after {k} {label} step{'s' if k > 1 else ''}"
            if k in (1, 2, 3, 5, 10, 20, 30, 60):
                _same(s["by_name"][name], lam * np.linalg.solve(C, s["Aq"] @ x + s["bq"]), s)
            else:
                assert name not in s["by_name"]


def test_the_catalogue_of_candidates_is_pinned(setting):
    """The names and their order (the first listed wins a tie): 21 closed forms, 9 steps of each
    of four CGs, the previous-residual CG, the Neumann series / fixed point at α = λ/β cut after
    1…NEUMANN_TERMS terms, 8 stops of each inner solver."""
    names = [n for n, _ in setting["cands"]]
    assert names[:21] == list(_closed_forms(setting))
    assert dg.NEUMANN_TERMS == 400
    assert len(names) == len(set(names)) == 21 + 4 * 9 + 14 + dg.NEUMANN_TERMS + 16
    assert names[21] == "CG on I + H/λ stopped after 1 step"
    first = 21 + 4 * 9 + 14
    assert names[first] == ("the fixed-point hypergradient not converged: 1 iteration (η = 1/β; "
                            "equally, the Neumann series with α = λ/β, 1 term)")
    assert names[first + dg.NEUMANN_TERMS - 1].startswith(
        "the fixed-point hypergradient not converged: 400 iterations")
    assert names[-1] == "the inner solve stopped after 60 Nesterov steps"


def test_candidates_with_a_budget_and_a_history(setting):
    s = setting
    task, theta, ref = s["task"], s["theta"], s["ref"]
    with_budget = [n for n, _ in dg.candidates(task, theta, ref, cg_steps=12)]
    assert "CG on I + H/λ stopped after 12 steps" in with_budget       # beyond d + 2 = 9
    assert with_budget.index("CG on I + H/λ stopped after 12 steps") < with_budget.index(
        "CG on I + H/λ stopped after 1 step")                            # the budget first
    old = np.ones(s["d"])
    hist = dg.candidates(task, theta, ref, history=[("earlier", old), ("same", np.asarray(ref.g, float)),
                                                     ("other shape", np.ones(3))])
    cached = [(n, x) for n, x in hist if "earlier task" in n]
    assert len(cached) == 1 and np.array_equal(cached[0][1], old) and "'earlier'" in cached[0][0]
    out = dg.diagnose(old, task, theta, ref, history=[("earlier", old)])
    assert "cached result" in out.name


@pytest.mark.parametrize("name, factor", [(n, f(0.37)) for n, f in dg._FACTORS])
def test_known_factors_are_named(setting, name, factor):
    """Mutants: any factor of the table (λ² for λ⁻², a sign). λ = 0.37 keeps them apart."""
    s = setting
    g = np.asarray(s["ref"].g, float)
    out = dg.diagnose(factor * g, s["task"], s["theta"], s["ref"])
    assert out.name == name and out.explained <= dg.MATCH and out.decisive
    assert out.known and name in str(out) and out.as_dict()["name"] == name


def test_fitted_factor_shifted_system_coordinate_and_small_errors(setting):
    s = setting
    task, theta, ref = s["task"], s["theta"], s["ref"]
    g = np.asarray(ref.g, float)
    out = dg.diagnose(1.7 * g, task, theta, ref)
    assert out.name == "the exact meta-gradient scaled by 1.7" and out.explained <= dg.FIT_MATCH
    v = np.asarray(ref.outer_grad, float)
    shifted = np.linalg.solve(1.5 * np.eye(s["d"]) + s["A"] / 3.0, v)
    out = dg.diagnose(shifted, task, theta, ref)
    assert out.name.startswith("a damped/shifted system (1.5·I + H/3") and out.explained <= dg.FIT_MATCH
    bumped = g.copy()
    bumped[4] += 0.1 * np.linalg.norm(g)
    out = dg.diagnose(bumped, task, theta, ref)
    assert out.name.startswith("an error confined to coordinate 4 (relative error 1.0e-01")
    rng = np.random.default_rng(0)
    small = g + 1e-5 * np.linalg.norm(g) * rng.standard_normal(s["d"]) / math.sqrt(s["d"])
    out = dg.diagnose(small, task, theta, ref)
    assert out.name.startswith("a small relative error") and dg.NO_DEFECT in out.name
    big = g + np.linalg.norm(g) * rng.standard_normal(s["d"])
    assert dg.diagnose(big, task, theta, ref).name == dg.NO_DEFECT
    assert dg.diagnose(g, task, theta, ref).name == dg.NO_DEFECT
    assert dg.diagnose(g * np.nan, task, theta, ref).name == "non-finite output"
    eps32 = float(np.finfo(np.float32).eps)
    f32 = g + 3 * eps32 * np.linalg.norm(g) * rng.standard_normal(s["d"]) / math.sqrt(s["d"])
    out = dg.diagnose(f32, task, theta, ref, allowance32=100 * eps32 * np.linalg.norm(g))
    assert out.name.startswith("consistent with single-precision (float32) rounding")
    assert not dg.diagnose(f32, task, theta, ref,
                           allowance32=eps32 * np.linalg.norm(g)).name.startswith("consistent")


def test_diagnosis_text_and_dict():
    d = dg.Diagnosis("x", 0.01, ["y", "z"], [("x", 0.01)], decisive=False)
    assert str(d) == "x (explains the error to 1.0e-02); equally: y, z"
    assert str(dg.Diagnosis("plain")) == "plain" and not dg.Diagnosis("plain").known
    assert d.known and not dg.Diagnosis("w", 0.06).known and dg.Diagnosis("w", 0.05).known
    assert d.as_dict() == {"name": "x", "explained": 0.01, "also": ["y", "z"],
                           "ranking": [["x", 0.01]], "decisive": False}
    assert str(dg.Diagnosis("x", 0.0)) == "x (explains the error to 0.0e+00)"


def test_cg_iterates_helper():
    M = np.diag([1.0, 3.0, 10.0])
    rhs = np.array([1.0, -2.0, 0.5])
    its = list(dg.cg_iterates(lambda w: M @ w, rhs, 5))
    assert len(its) == 5
    for k, x in enumerate(its[:3], start=1):
        assert np.allclose(x, _cg(lambda w: M @ w, rhs, k), rtol=0, atol=1e-14)
    assert np.allclose(its[-1], np.linalg.solve(M, rhs), rtol=0, atol=1e-14)   # converged, held
    x0 = np.array([0.5, 0.5, 0.5])
    assert np.allclose(next(dg.cg_iterates(lambda w: M @ w, rhs, 1, x0=x0)),
                       _cg(lambda w: M @ w, rhs, 1, x0), rtol=0, atol=1e-14)
    assert list(dg.cg_iterates(lambda w: -w, rhs, 3)) == []      # pᵀMp ≤ 0: stops


# -- instances: the stream, the corners, the data they build -------------------------------------
import hashlib
import importlib

from verify.checker.instances import Instance

ci = importlib.import_module("verify.checker.instances")   # (verify.checker.instances is also a function)

ALL = ("planted", "paper", "logistic")


def _h(x) -> str:
    return hashlib.sha256(repr(x).encode()).hexdigest()[:16]


def _grid(a):
    """An array on a grid of 1e-9 of its largest entry (rounding noise below that vanishes, so
    the digest is the same on every machine)."""
    a = np.asarray(a, dtype=float).ravel()
    top = float(np.max(np.abs(a))) if a.size else 0.0
    if top == 0:
        return [0] * a.size
    return [f"{top:.9g}"] + [int(x) for x in np.rint(a / (1e-9 * top))]


def _data_digest(inst):
    task, theta = build(inst)
    th = np.asarray(theta, float)
    i = int(np.argmax(np.abs(th)))
    sign = np.sign(th[i]) if th[i] != 0 else 1.0       # an eigenvector's sign is LAPACK's choice
    parts = ([task._X64, task._y64, task._Xq64, task._yq64] if inst.family == "logistic"
             else [task.A, task.b, task.A_query, task.b_query])
    return _h([_grid(p) for p in parts] + [_grid(sign * th), float(task.lam)])


def test_the_streams_and_fixed_lists_are_pinned():
    """Mutants: any constant of the distribution (an option list, a weight, a range, the salt)
    or of the fixed corner and diagnostic lists. Instance i of seed s is a function of (s, i)
    (PCG64's raw bits and integer arithmetic): these digests are the same on every machine; a
    change to them changes every checker run and must be deliberate."""
    assert _h(ci.sample(200, seed=0)) == "fbaa714f26c8a482"
    assert _h(ci.sample(200, seed=7, families=ALL)) == "af530fa44157d911"
    assert _h(ci.sample(100, seed=3, families=("logistic",), max_dim=6, max_kappa=50.0)) == \
        "44944ba87d82fb99"
    assert _h(ci.corner_instances(families=ALL)) == "791663b17fc24f41"
    assert _h(ci.corner_instances(families=ALL, max_dim=8, max_kappa=100.0, seed=3)) == \
        "288635108b65a80e"
    assert _h(ci.diagnostic_instances()) == "e6fcf05f03639352"
    assert _h(ci.diagnostic_instances(family="logistic")) == "42aa09166f4352f8"


BUILD = [Instance(),
         Instance(dim=5, kappa=30.0, lam=0.37, query="shared", spectrum="log", floor=0.5,
                  theta_kind="bottom", seed=3),
         Instance(dim=5, kappa=30.0, lam=2.5, query="reversed", spectrum="random", floor=3.0,
                  theta_kind="top", theta_scale=1e2, seed=4),
         Instance(dim=6, kappa=1e3, lam=0.05, query="same", spectrum="endpoints", theta_kind="cancel",
                  theta_scale=1e2, seed=5),
         Instance(dim=6, kappa=10.0, lam=7.0, theta_kind="cancel", theta_scale=0.0, b_scale=1e3,
                  query_b_scale=1e-3, seed=6),
         Instance(dim=3, kappa=5.0, lam=1.0, theta_kind="zero", b_scale=0.0, query_b_scale=0.0,
                  seed=7),
         Instance(dim=1, kappa=1.0, lam=13.0, seed=8),
         Instance(family="paper", dim=50, kappa=50.0, lam=5.0, seed=10),
         Instance(family="paper", dim=50, kappa=50.0, lam=5.0, seed=11, theta_kind="bottom",
                  theta_scale=1e2),
         Instance(family="logistic", dim=4, lam=0.37, n=12, n_query=7, seed=12, data_scale=3.0,
                  theta_kind="top", theta_scale=10.0),
         Instance(family="logistic", dim=3, lam=2.5, n=5, n_query=2, seed=13, theta_kind="zero")]
BUILT = ['44679a9c3a0aacbb', 'bec2314bbb311ae6', '5e80b88e36b4bfbc', '5e5eb199035ef33c',
         'd36fc67ab35cee8f', '8ddaa0309df0a230', '27d87d0135f34087', '3e40e618c762ec2a',
         '68aca7cdc011e249', '81c0eb7fd40f362d', '08c7d5b60c50dec5']


@pytest.mark.parametrize("i", range(len(BUILD)))
def test_built_data_is_pinned(i):
    """Mutants: any constant or operator of how an instance becomes (task, θ): the planted
    spectrum and floor, the query kinds, the scales, each θ kind (the cancellation's 1e-3),
    the paper's and the logistic family's data. The numbers on a 1e-9 grid, digested."""
    assert _data_digest(BUILD[i]) == BUILT[i]


@pytest.mark.parametrize("inst", BUILD[:6], ids=lambda x: f"{x.query}-{x.theta_kind}")
def test_built_planted_data_has_its_properties(inst):
    task, theta = build(inst)
    A, Aq, lam = np.asarray(task.A), np.asarray(task.A_query), task.lam
    w = np.linalg.eigvalsh(A)
    assert (w[-1] + lam) / (w[0] + lam) == pytest.approx(inst.kappa, rel=1e-9)
    assert w[0] == pytest.approx(inst.floor * lam, abs=1e-9 * (w[-1] + lam))
    if inst.query == "same":
        assert np.array_equal(Aq, A) and np.array_equal(task.b_query, task.b)
    th = np.asarray(theta)
    if inst.theta_kind in ("random", "bottom", "top"):
        assert np.linalg.norm(th) == pytest.approx(inst.theta_scale, rel=1e-12)
    if inst.theta_kind in ("bottom", "top"):
        u = np.linalg.eigh(A)[1][:, 0 if inst.theta_kind == "bottom" else -1]
        assert abs(u @ th) == pytest.approx(inst.theta_scale, rel=1e-9)
    if inst.theta_kind == "zero":
        assert not th.any()
    if inst.theta_kind == "cancel" and np.linalg.matrix_rank(Aq) == inst.dim:
        # (with a singular query Hessian, b_query's part in its kernel cannot cancel)
        ref = exact_meta_gradient(task, theta)
        v = np.asarray(ref.outer_grad, float)
        assert np.linalg.norm(v) < 1e-2 * np.linalg.norm(Aq @ np.asarray(ref.phi, float))
    for x, scale in ((task.b, inst.b_scale), (task.b_query, inst.query_b_scale)):
        if scale == 0:
            assert not np.asarray(x).any()


def test_build_in_torch_float32_is_the_same_data_rounded():
    import torch

    for inst in (BUILD[1], BUILD[9]):
        t64, th64 = build(inst)
        t32, th32 = build(inst, backend="torch", dtype="float32")
        assert th32.dtype == torch.float32 and torch.equal(
            th32, torch.as_tensor(np.asarray(th64), dtype=torch.float32))
    with pytest.raises(ValueError, match="backend"):
        build(BUILD[0], backend="jax")
    with pytest.raises(ValueError, match="family"):
        ci.build64(Instance(family="nonsense"))


def test_instance_records():
    inst = Instance(family="logistic", dim=3, lam=2.5, n=5, n_query=2, seed=13, theta_kind="zero")
    d = inst.as_dict()
    assert "kappa" not in d and "query" not in d and d["n"] == 5 and d["data_scale"] == 1.0
    p = Instance(dim=5, kappa=30.0, seed=3).as_dict()
    assert "n" not in p and p["kappa"] == 30.0 and p["floor"] == 0.0
    assert Instance.from_dict(dict(d, unknown=1)) == inst
    assert repr(Instance(dim=5, kappa=30.0, seed=3)) == \
        "Instance(family='planted', dim=5, kappa=30.0, lam=1.0, seed=3)"
    assert repr(inst) == ("Instance(family='logistic', dim=3, lam=2.5, theta_kind='zero', "
                          "seed=13, n=5, n_query=2)")


def test_draw_and_instances_refuse_bad_arguments_and_keep_within_limits():
    for bad in (True, -1, 1.5):
        with pytest.raises(ValueError, match="seed"):
            ci.draw(bad, 0)
    for fams in ((), ("planted", "tensor")):
        with pytest.raises(ValueError, match="families"):
            ci.draw(0, 0, families=fams)
        with pytest.raises(ValueError, match="families"):
            ci.instances(families=fams)
    drawn = ci.sample(300, seed=1, families=ALL, max_dim=9, max_kappa=20.0)
    assert {i.family for i in drawn} == set(ALL)
    counts = {f: sum(i.family == f for i in drawn) for f in ALL}
    assert counts["planted"] > counts["logistic"] > counts["paper"] > 0      # weights 8 : 4 : 1
    for i in drawn:
        if i.family == "planted":
            assert 1 <= i.dim <= 9 and 1.0 <= i.kappa <= 20.0 and (i.dim > 1 or i.kappa == 1.0)
            assert i.lam in ci.LAMBDAS and i.theta_scale in ci.THETA_SCALES
        elif i.family == "logistic":
            assert 1 <= i.dim <= 9 and 2 <= i.n <= 40 and 1 <= i.n_query <= 30
            assert i.lam in ci.LOGISTIC_LAMBDAS and i.data_scale in ci.DATA_SCALES
        else:
            assert (i.dim, i.kappa, i.lam) == (50, 50.0, 5.0) and i.theta_kind in ci.PAPER_THETA_KINDS
        assert 0 <= i.seed <= 2**31 - 1
    assert max(i.dim for i in ci.sample(300, seed=1, families=("logistic",))) == 12
    kappas = {i.kappa for i in ci.sample(300, seed=2) if i.family == "planted" and i.dim > 1}
    assert {1.0, 10.0, 1e4} <= kappas and max(kappas) <= 1e5


def test_the_hypothesis_strategy_draws_the_same_kind_of_instances():
    from hypothesis import given, settings

    seen = []

    @settings(max_examples=30, derandomize=True, database=None)
    @given(ci.instances(families=ALL, max_dim=6, max_kappa=30.0))
    def collect(inst):
        seen.append(inst)
        assert inst.family in ALL and inst.dim <= (50 if inst.family == "paper" else 6)
        if inst.family == "planted":
            assert inst.kappa <= 30.0

    collect()
    assert len(seen) == 30


def test_simpler_neighbours_and_shrinking():
    inst = Instance(dim=9, kappa=300.0, lam=13.0, query="same", spectrum="endpoints", floor=3.0,
                    b_scale=1e3, query_b_scale=30.0, theta_scale=1e4, theta_kind="zero", seed=5)
    out = ci.simpler(inst)
    assert [o.dim for o in out[:4]] == [1, 2, 4, 8] and out[0].kappa == 1.0
    assert [o.kappa for o in out[4:6]] == [1.0, 10.0]
    assert out[-1] == Instance(**{**inst.as_dict(), "seed": 0})
    assert _h(out) == _h(ci.simpler(inst)) and len(out) == 4 + 2 + 7 + 3 + 3 + 1 + 4 + 4 + 4 + 4 + 1
    assert [o.kappa for o in ci.simpler(inst, max_kappa=5.0)[4:5]] == [1.0]
    assert not any(o.kappa == 10.0 for o in ci.simpler(inst, max_kappa=5.0) if o.dim == 9)
    log = Instance(family="logistic", dim=3, lam=2.5, n=10, n_query=3, seed=0, data_scale=0.3,
                   theta_scale=10.0, theta_kind="zero")
    out = ci.simpler(log)
    assert [(o.dim, o.n, o.n_query) for o in out[:6]] == [(1, 10, 3), (2, 10, 3), (3, 2, 3),
                                                          (3, 6, 3), (3, 10, 1), (3, 10, 2)]
    assert all(o.seed == 0 for o in out)
    paper = Instance(family="paper", dim=50, kappa=50.0, lam=5.0, theta_scale=1e2,
                     theta_kind="cancel", seed=4)
    assert [(o.theta_scale, o.theta_kind, o.seed) for o in ci.simpler(paper)] == [
        (1.0, "cancel", 4), (0.0, "cancel", 4), (1e2, "random", 4), (1e2, "bottom", 4),
        (1e2, "top", 4), (1e2, "cancel", 0)]
    calls = []
    ci.shrink(inst, lambda c: calls.append(c) or False, budget=5)
    assert len(calls) == 5
    assert ci.shrink(inst, lambda c: c.dim >= 4, budget=1000).dim == 4


# -- core: results, their text and JSON, the bounds of budget mode, the search --------------------
from verify.checker import core


def _failure(**kw):
    base = dict(check="converged", instance=Instance(dim=3, seed=4), measured=2.0, allowed=0.5,
                reference_norm=4.0, statement="‖g − g*‖ ≤ allowance")
    return core.Failure(**{**base, **kw})


def test_failure_numbers_text_and_dict():
    f = _failure()
    assert f.relative == 0.5 and f.ratio == 4.0
    assert _failure(reference_norm=0.0).relative == math.inf and _failure(allowed=0.0).ratio == math.inf
    assert f.reproduce() == ("from verify.checker import Instance, build; task, theta = "
                             "build(Instance(family='planted', dim=3, lam=1.0, seed=4)); fn(task, theta)")
    assert f.reproduce(backend="torch", device="cuda", dtype="float32").endswith(
        "seed=4), backend='torch', device='cuda', dtype='float32'); fn(task, theta)")
    b = _failure(check="budget", budgets=(8, 4))
    assert b.reproduce().endswith("fn(task, theta, inner_steps=8, cg_steps=4)")
    c = _failure(check="cg", budgets=(0, 5))
    assert c.reproduce().endswith("; M = I + A/λ, rhs = ∇L(Alg*(θ)); cg_fn(lambda w: M @ w, rhs, 5)")
    text = f.describe()
    assert text.splitlines() == [
        "  Instance(family='planted', dim=3, lam=1.0, seed=4)",
        "    error 2.000e+00 (relative 5.00e-01) > allowed 5.000e-01  [4 × the allowance]; "
        "‖g − g*‖ ≤ allowance",
        "    reproduce: " + f.reproduce()]
    assert b.describe(indent="").splitlines()[0].endswith(" at budgets K=8, M=4")
    assert c.describe(indent="").splitlines()[0].endswith(" at m = 5 CG steps")
    e = _failure(check="output", error="returned NaN or Inf", diagnosis=dg.Diagnosis("x"))
    lines = e.describe(indent="").splitlines()
    assert lines[1] == "  returned NaN or Inf" and lines[2] == "  diagnosis: x"
    d = _failure(allowed=0.0, details={"output": np.ones(3), "bound": 1.5}).as_dict()
    assert d["ratio"] is None and d["relative"] == 0.5 and d["details"] == {"bound": 1.5}
    assert d["budgets"] is None and d["diagnosis"] is None and d["instance"]["dim"] == 3
    assert b.as_dict()["budgets"] == [8, 4] and e.as_dict()["diagnosis"]["name"] == "x"


def _report(passed, failures=(), **settings):
    s = {"seed": 3, "backend": "numpy", "dtype": "float64", "device": "cpu", "corners": 2, **settings}
    return core.Report("mod:fn", "converged", passed, list(failures), 7, 0.25,
                       None if passed else dg.Diagnosis("a wrong sign (−1 ×)", 0.0), s)


def test_report_text_and_json():
    ok = _report(True)
    assert str(ok).splitlines() == [
        "PASS: mod:fn — converged check, numpy float64 on cpu, seed 3",
        "  7 instances (2 fixed corner instances, the rest drawn from seed 3); 0 failed comparisons",
        "  every error within its allowance; the closest came to 0.25 × the allowance"]
    one = _report(False, [_failure(minimal=True)], budgets=[8, 4])
    lines = str(one).splitlines()
    assert lines[0].endswith("seed 3, budgets K=8, M=4") and lines[0].startswith("FAIL: mod:fn")
    assert lines[1].endswith("; 1 failed comparison")
    assert lines[2] == "  diagnosis: a wrong sign (−1 ×) (explains the error to 0.0e+00)"
    assert lines[3] == "  minimal failing instance (shrunk) [converged]:"
    many = _report(False, [_failure() for _ in range(8)])
    many.skipped = 2
    text = str(many)
    assert "; 8 failed comparisons; 2 skipped (see docs/checker.md)" in text
    assert text.count("  failing instance [converged]:") == 6
    assert text.endswith("  … and 2 more (see report.failures)")
    d = many.as_dict()
    assert d["passed"] is False and d["instances"] == 7 and d["skipped"] == 2 and len(d["failures"]) == 8
    assert d["worst_ratio"] == 0.25 and d["diagnosis"]["name"] == "a wrong sign (−1 ×)"
    assert _report(True).as_dict()["diagnosis"] is None
    inf = core.Report("f", "cg", True, [], 1, math.inf, None, {})
    assert inf.as_dict()["worst_ratio"] is None
    import json

    j = json.loads(core.Report("f", "cg", True, [], 1, 0.5, None,
                               {"a": np.float64(1.5), "b": np.int64(2), "c": np.arange(2),
                                "d": object}).to_json())
    assert j["settings"]["a"] == 1.5 and j["settings"]["b"] == 2 and j["settings"]["c"] == [0, 1]
    assert j["settings"]["d"].startswith("<class")
    assert core.Report("f", "cg", True, [], 1, 0.5, None, {}).to_json(indent=None).startswith('{"implementation"')


def test_budget_bounds_and_the_step_search():
    from theory.bounds import cg_error_bound, lemma3_bound_sharp, nesterov_distance_bound

    assert core.inner_distance_bound(16.0, 10, 2.0, "gd") == pytest.approx((1 - 1 / 16) ** 10 * 2.0)
    assert core.inner_distance_bound(16.0, 10, 2.0, "nesterov") == nesterov_distance_bound(16.0, 10, 2.0)
    assert core.inner_distance_bound(16.0, 10, 2.0) == max(
        core.inner_distance_bound(16.0, 10, 2.0, "gd"), core.inner_distance_bound(16.0, 10, 2.0, "nesterov"))
    assert core.inner_distance_bound(1.0, 3, 2.0, "gd") == 0.0
    assert core.inner_distance_bound(1.0, 0, 2.0, "gd") == 2.0
    with pytest.raises(ValueError, match="inner"):
        core.inner_distance_bound(4.0, 1, 1.0, "newton")
    from theory.constants import Constants

    c = Constants(beta=8.0, mu=0.5, kappa=16.0, L=3.0, B=2.0, rho=0.0, D=1.0, lam=1.0)
    bound, delta, dp = core.budget_bound(c, 2.0, 10, 4, "gd")
    assert delta == core.inner_distance_bound(16.0, 10, 2.0, "gd")
    assert dp == cg_error_bound(16.0, 4, 1.0 / 0.5 * (2.0 + 3.0 * delta))
    assert bound == lemma3_bound_sharp(c, delta, dp)
    f = lambda k: 100.0 / (k + 1)  # noqa: E731
    assert core._steps_until(f, 10.0, cap=1000) == 9
    assert core._steps_until(f, 100.0, cap=1000) == 0
    assert core._steps_until(f, 0.01, cap=1000) is None
    assert core._steps_until(f, 100.0 / 1001, cap=1000) == 1000
    assert core.MAX_CONVERGED_STEPS == 20_000 and core.SHRINK_BUDGET == 80


def test_the_search_reports_the_shrunk_failure_first_then_corners_then_the_rest():
    fail = lambda inst: inst.dim >= 3  # noqa: E731
    outcomes = {}

    def evaluate(inst):
        outcomes[inst] = outcomes.get(inst, 0) + 1
        ok = not fail(inst)
        return core._Outcome(ok, [] if ok else [_failure(instance=inst)], 0.1 * inst.dim, 1)

    corners = [Instance(dim=1, seed=1), Instance(dim=5, seed=2)]
    stream = [Instance(dim=2, seed=3), Instance(dim=9, seed=4), Instance(dim=2, seed=5)]
    failures, n, ratio, skipped = core._Search(evaluate).run(corners, lambda i: stream[i], 3)
    assert failures[0].minimal and failures[0].instance.dim == 3      # shrunk from d = 9
    assert failures[1].instance == corners[1] and not failures[1].minimal
    assert all(v == 1 for v in outcomes.values())                     # memoised
    assert n == len(outcomes) and skipped == n
    assert ratio == pytest.approx(0.2)                                # the worst passing one
    assert Instance(dim=2, seed=5) not in outcomes                    # stops at the first failure
    none = core._Search(lambda i: core._Outcome(True, [], 0.3)).run([], lambda i: stream[i], 2)
    assert none == ([], 2, 0.3, 0)


# -- the command line: what reaches the checks -------------------------------------------------
import argparse
import json
import sys

import verify.checker as vc
from verify.checker import cli as ccli


def _args(*argv):
    p = argparse.ArgumentParser()
    ccli.add_parser(p.add_subparsers(dest="command"))
    # in this process, so that the recorders below see the call (the child-process path has its
    # own tests in tests/test_faults.py)
    return p.parse_args(["check", "--in-process", *argv])


@pytest.fixture
def captured(monkeypatch):
    """check_meta_gradient and check_cg replaced by recorders returning a fixed report."""
    calls = []

    def fake(kind, passed):
        def f(fn, *args, **kwargs):
            calls.append((kind, fn, args, kwargs))
            return core.Report("f", kind, passed, [], 1, 0.5, None, {"seed": kwargs.get("seed")})
        return f

    monkeypatch.setattr(vc, "check_meta_gradient", fake("converged", True))
    monkeypatch.setattr(vc, "check_cg", fake("cg", False))
    return calls


def test_cli_passes_every_option_through(captured, capsys):
    assert ccli.run(_args("_checker_catalogue:textbook_solve", "--budget", "7,3", "--backend",
                          "torch", "--dtype", "float32", "--seed", "5", "--max-examples", "9",
                          "--family", "planted", "--family", "logistic", "--inner", "gd",
                          "--linear-solver", "neumann", "--linear-option", "alpha=0.5")) == 0
    kind, fn, args, kw = captured[-1]
    assert kind == "converged" and fn.__name__ == "textbook_solve" and args == ()
    assert kw == dict(inner_steps=7, cg_steps=3, backend="torch", device="cpu", dtype="float32",
                      seed=5, max_examples=9, families=["planted", "logistic"], inner="gd",
                      timeout=60.0, linear_solver="neumann", linear_options={"alpha": 0.5})
    assert capsys.readouterr().out.startswith("PASS: f")
    assert ccli.run(_args("_checker_catalogue:textbook_solve")) == 0
    assert captured[-1][3]["inner_steps"] is None and captured[-1][3]["cg_steps"] is None
    assert captured[-1][3]["max_examples"] is None and captured[-1][3]["families"] is None
    assert captured[-1][3]["linear_solver"] == "cg" and captured[-1][3]["linear_options"] is None
    capsys.readouterr()
    assert ccli.run(_args("_checker_catalogue:textbook_solve", "--cg", "1,4", "--json")) == 1
    kind, fn, args, kw = captured[-1]
    assert kind == "cg" and args == ([1, 4],) and "max_examples" not in kw and kw["seed"] == 0
    assert json.loads(capsys.readouterr().out)["mode"] == "cg"
    ccli.run(_args("_checker_catalogue:textbook_solve", "--cg", "2", "--max-examples", "4"))
    assert captured[-1][3]["max_examples"] == 4


@pytest.mark.parametrize("argv, message", [
    (("_checker_catalogue:textbook_solve", "--budget", "5,2", "--cg", "1"), "exclude each other"),
    (("_checker_catalogue:textbook_solve", "--budget", "5"), "--budget must be 2 non-negative"),
    (("_checker_catalogue:textbook_solve", "--budget", "5,-1"), "--budget must be 2 non-negative"),
    (("_checker_catalogue:textbook_solve", "--budget", "5,x"), "--budget must be comma-separated"),
    (("_checker_catalogue:textbook_solve", "--cg", "1,-2"), "--cg must be some non-negative"),
    (("textbook_solve",), "expected module:function"),
    (("no_such_module_xyz:f",), "cannot import 'no_such_module_xyz'"),
    (("_checker_catalogue:nothing_here",), "has no attribute 'nothing_here'"),
    (("_checker_catalogue:DEFECTS",), "is not callable"),
    (("_checker_catalogue:textbook_solve", "--linear-option", "alpha"),
     "--linear-option must be NAME=NUMBER"),
    (("_checker_catalogue:textbook_solve", "--linear-option", "alpha=x"),
     "--linear-option must be NAME=NUMBER"),
])
def test_cli_usage_errors_name_what_is_wrong(captured, capsys, argv, message):
    assert ccli.run(_args(*argv)) == 2
    err = capsys.readouterr().err
    assert err.startswith("imaml-verify check: error: ") and message in err
    assert not captured


def test_cli_loads_methods_and_the_current_directory(tmp_path, monkeypatch):
    (tmp_path / "mymod_i18.py").write_text("class K:\n    @staticmethod\n    def f(task, theta):\n"
                                           "        return theta\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".")])
    f = ccli.load("mymod_i18:K.f")
    assert f(None, 3) == 3 and "" in sys.path


# -- peers: the table, and each re-implementation is what its description says ----------------
import importlib.util

from verify.checker import peers as P

_HAS_PEERS = all(importlib.util.find_spec(m) for m in ("torchopt", "jax", "jaxopt"))


def test_the_peers_table_is_pinned():
    rows = [(p.name, p.mode, p.budgets, p.backend, p.requires) for p in P.peers()]
    assert rows[:8] == [
        ("imaml-verify solvers.imaml_meta_gradient (converged)", "converged", None, "numpy", ()),
        ("imaml-verify solvers.imaml_meta_gradient (Algorithm 2)", "budget", (10, 5), "numpy", ()),
        ("imaml-verify solvers.fomaml_meta_gradient (control)", "converged", None, "numpy", ()),
        ("re-implementation: torchopt's normal-equation CG, 5 steps", "converged", None, "numpy", ()),
        ("re-implementation: paper's reference code defaults, 5 CG steps", "converged", None, "numpy", ()),
        ("re-implementation: paper's reference code defaults, solved exactly", "converged", None,
         "numpy", ()),
        ("re-implementation: betty's cg, 50 iterations (cg_alpha = 1)", "converged", None, "numpy", ()),
        ("re-implementation: paper's reference code defaults, Algorithm 2", "budget", (10, 5), "numpy", ())]
    assert [(m, b, be, r) for _, m, b, be, r in rows[8:]] == (
        [("converged", None, "torch", ("torch", "torchopt"))] * 3
        + [("budget", (10, 5), "torch", ("torch", "torchopt"))] * 2
        + [("converged", None, "numpy", ("jax", "jaxopt"))] * 2)
    assert P.peers()[2].note == "first-order MAML: must be flagged"
    assert P.ISSUE_INSTANCE == Instance(family="planted", dim=50, kappa=16.7, lam=2.0, seed=2019)


@pytest.fixture(scope="module")
def small():
    task, theta = build(Instance(dim=6, kappa=20.0, lam=0.37, floor=0.5, seed=21))
    A, b = np.asarray(task.A, float), np.asarray(task.b, float)
    lam = float(task.lam)
    phi = np.linalg.solve(A + lam * np.eye(6), lam * np.asarray(theta) - b)
    return task, np.asarray(theta, float), A, lam, phi, np.asarray(task.outer_grad(phi), float)


def _close(a, b, scale, kappa=1e4):
    assert_within_rounding(a, b, dtype="float64", kappa=kappa, scale=scale, dim=6, roundings=2)


def test_reimplementations_compute_what_they_describe(small):
    task, theta, A, lam, phi, v = small
    M = lambda w: w + A @ w / lam  # noqa: E731
    s = float(np.linalg.norm(v)) * 10
    _close(P.normal_cg_reimpl(task, theta), _cg(lambda w: M(M(w)), M(v), 5), s)
    _close(P.normal_cg_reimpl(task, theta, cg_steps=2), _cg(lambda w: M(M(w)), M(v), 2), s)
    paper = lambda w: 2 * w + A @ w / (lam + 10)  # noqa: E731
    _close(P.paper_defaults_reimpl(task, theta), _cg(paper, v, 5), s)
    _close(P.paper_defaults_reimpl(task, theta, cg_steps=4 * 6 + 20), np.linalg.solve(
        2 * np.eye(6) + A / (lam + 10), v), s)
    _close(P.paper_defaults_reimpl(task, theta, regu_coef=0.5, lam_damping=3.0, cg_steps=40),
           np.linalg.solve(1.5 * np.eye(6) + A / (lam + 3.0), v), s)
    C = lambda w: A @ w + lam * w  # noqa: E731
    _close(P.betty_cg_reimpl(task, theta), lam * _betty(C, v, 50), s)
    _close(P.betty_cg_reimpl(task, theta, cg_steps=3), lam * _betty(C, v, 3), s)

    def betty_alpha(a, k):        # step length from a·Hp, residual update from Hp
        x, r, p = np.zeros(6), v.copy(), v.copy()
        for _ in range(k):
            Hp = C(p)
            step = (r @ r) / (p @ (a * Hp))
            x, r_new = x + step * p, r - step * Hp
            p = r + (r_new @ r_new) / (r @ r) * p
            r = r_new
        return lam * a * x
    _close(P.betty_cg_reimpl(task, theta, cg_steps=4, cg_alpha=0.5), betty_alpha(0.5, 4), s)
    # with budgets the inner solve is the suite's Nesterov from θ
    import solvers

    phi3 = np.asarray(solvers.inner_solve(task, theta, inner_steps=3).x)
    Mb = lambda w: w + np.asarray(task.inner_hvp(phi3, w)) / lam  # noqa: E731
    _close(P.normal_cg_reimpl(task, theta, inner_steps=3, cg_steps=2),
           _cg(lambda w: Mb(Mb(w)), Mb(np.asarray(task.outer_grad(phi3))), 2), s)


def test_own_peers_and_their_step_counts(small):
    task, theta, A, lam, phi, v = small
    beta, mu = task.curvature_bounds()
    K = int(math.ceil(2 * math.sqrt(beta / mu) * math.log(1e22 * beta / mu))) + 20
    assert P._converged_steps(task) == (K, 4 * 6 + 20)
    ref = exact_meta_gradient(task, theta)
    g = np.asarray(ref.g, float)
    _close(P.ours_converged(task, theta), g, float(np.linalg.norm(g)))
    import solvers

    _close(P.ours_fomaml(task, theta), solvers.fomaml_meta_gradient(
        task, theta, inner_steps=K).gradient, float(np.linalg.norm(v)))
    _close(P.ours_algorithm2(task, theta, 4, 2), solvers.imaml_meta_gradient(
        task, theta, inner_steps=4, cg_steps=2).gradient, float(np.linalg.norm(v)))


def test_issue_instance_error_and_diagnosis():
    ok = P.Peer("ours", P.ours_converged)
    task, theta = build(P.ISSUE_INSTANCE)
    ref = exact_meta_gradient(task, theta)
    g_norm = float(np.linalg.norm(np.asarray(ref.g, float)))
    assert P._issue_instance_error(ok) <= converged_allowance(task, theta, ref).total / g_norm
    assert P._issue_instance_diagnosis(ok).startswith("on the issue's instance: a small relative")
    boom = P.Peer("boom", lambda task, theta: 1 / 0)
    assert P._issue_instance_error(boom) is None and P._issue_instance_diagnosis(boom) is None
    flipped = P.Peer("flipped", lambda task, theta: -P.ours_converged(task, theta))
    assert P._issue_instance_error(flipped) == pytest.approx(2.0, rel=1e-9)
    assert P._issue_instance_diagnosis(flipped).startswith(
        "on the issue's instance: a wrong sign (−1 ×) (explains the error to")
    budget = P.Peer("alg2", P.ours_algorithm2, "budget", (10, 5))
    # budget peers are measured at a converged inner solve and M = 5 CG steps
    assert 0.05 < P._issue_instance_error(budget) < 0.2
    nan = P.Peer("nan", lambda task, theta: np.full(task.dim, np.nan))
    P._issue_instance_error(nan)
    assert P._issue_instance_diagnosis(nan) is None


def test_markdown_rows():
    doc = {"rows": [
        {"implementation": "a|b", "mode": "converged", "budgets": None, "verdict": "SKIPPED",
         "reason": "not installed: x"},
        {"implementation": "p", "mode": "budget", "budgets": [10, 5], "verdict": "PASS",
         "measured": None, "worst_ratio": 0.123, "relative_error": None,
         "issue_instance_relative_error": 0.0996, "diagnosis": None},
        {"implementation": "f", "mode": "converged", "budgets": None, "verdict": "FAIL",
         "measured": 2.0, "allowed": 1e-12, "relative_error": 0.5,
         "issue_instance_relative_error": None, "diagnosis": "x | y"},
        {"implementation": "e", "mode": "converged", "budgets": None, "verdict": "FAIL",
         "measured": None, "error": "raised ValueError: no", "relative_error": None,
         "issue_instance_relative_error": 1.0, "diagnosis": None}]}
    lines = P.render_markdown(doc).splitlines()
    assert lines[0] == "## Third-party implementations" and lines[-5].startswith("|---|")
    assert lines[-4] == "| a|b | converged | skipped | — | — | — | not installed: x |"
    assert lines[-3] == "| p | budget K=10, M=5 | PASS | within allowance (worst 0.12×) | — | 0.0996 |  |"
    assert lines[-2] == "| f | converged | FAIL | 2.00e+00 (1.00e-12) | 5.00e-01 | — | x / y |"
    assert lines[-1] == "| e | converged | FAIL | raised ValueError: no | — | 1 |  |"


def test_run_peers_rows_and_skips(monkeypatch):
    doc = P.run_peers(quick=True, only=["paper's reference code defaults, 5 CG steps"], seed=2)
    assert doc["seed"] == 2 and doc["quick"] is True and doc["issue_instance"]["dim"] == 50
    (row,) = doc["rows"]
    assert row["verdict"] == "FAIL" and row["mode"] == "converged" and row["budgets"] is None
    assert row["instances"] >= 1 and row["worst_ratio"] is None and row["check"] == "converged"
    assert row["measured"] > row["allowed"] and row["relative_error"] == pytest.approx(
        row["measured"] / (row["measured"] / row["relative_error"]))
    assert "2I + H/(λ + 10)" in row["diagnosis"] and row["note"] == ""
    monkeypatch.setattr(P, "_missing", lambda req: list(req))
    doc = P.run_peers(quick=True, only=["torchopt custom_root + solve_cg() (defaults"])
    (row,) = doc["rows"]
    assert row["verdict"] == "SKIPPED" and row["reason"] == (
        "not installed: torch, torchopt (pip install -e '.[peers]')")


@pytest.mark.skipif(not _HAS_PEERS, reason="optional extra 'peers' not installed")
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")  # torchopt, jax
def test_torch_peers_compute_what_they_describe(small):
    """torchopt's custom_root with CG at M steps is Algorithm 2 with gradient-descent inner steps;
    the Newton inner solve reaches Alg*(θ); jaxopt's tight solve is the exact meta-gradient."""
    import warnings

    import torch

    import solvers

    with warnings.catch_warnings():       # torchopt's import warns about torch.jit.script
        warnings.simplefilter("ignore")
        import jaxopt  # noqa: F401
        import torchopt  # noqa: F401
    task, theta, A, lam, phi, v = small
    tt, th = build(Instance(dim=6, kappa=20.0, lam=0.37, floor=0.5, seed=21), backend="torch")
    newton = P.torch_newton_inner(tt, th).numpy()
    _close(newton, phi, float(np.linalg.norm(phi)))
    beta, _ = task.curvature_bounds()
    gd = P.torch_newton_inner(tt, th, inner_steps=7).numpy()
    _close(gd, np.asarray(solvers.inner_solve(task, theta, inner_steps=7, inner="gd").x),
           float(np.linalg.norm(theta)))
    budget = next(p for p in P.torchopt_peers() if p.name.startswith(
        "torchopt custom_root + solve_cg(maxiter=M)"))
    g = budget.fn(tt, th, inner_steps=7, cg_steps=3).detach().numpy()
    want = solvers.imaml_meta_gradient(task, theta, inner_steps=7, cg_steps=3, inner="gd").gradient
    _close(g, want, float(np.linalg.norm(v)) * 10)
    tight = P.jaxopt_peers()[1]
    ref = exact_meta_gradient(task, theta)
    _close(tight.fn(task, theta), np.asarray(ref.g, float), float(np.linalg.norm(v)))
    assert isinstance(th, torch.Tensor)


# -- budget mode and converged mode, reconstructed on one instance ------------------------------
from verify.checker.reference import krylov_iterate, rel


def _evaluate_alone(fn, budgets, inst):
    check = core._MetaGradientCheck(fn, budgets=budgets, inner="any", backend="numpy",
                                    device="cpu", dtype="float64", families=("planted",))
    return check.evaluate(inst)


def test_budget_mode_asks_for_its_ladder_and_reports_its_worst_ratio():
    """The budgets asked for, on one instance: (K, M), (2K, 2M), (4K, 4M), the budget where the
    bounds reach 1e-3 of the allowance, then m ∈ {1, 2, 3, M} CG steps at that inner budget
    (Krylov iterates); the worst ratio is the largest error/(bound + allowance) over the ladder."""
    from theory.bounds import cg_error_bound, lemma3_B1
    from verify.tasks import float64_twin

    inst = Instance(dim=6, kappa=20.0, lam=0.37, floor=0.5, seed=31)
    calls = []

    def alg2(task, theta, inner_steps, cg_steps):
        calls.append((inner_steps, cg_steps))
        return solvers.imaml_meta_gradient(task, theta, inner_steps=inner_steps,
                                           cg_steps=cg_steps).gradient

    out = _evaluate_alone(alg2, (4, 2), inst)
    task, theta = build(inst)
    ref = exact_meta_gradient(task, theta)
    al = converged_allowance(task, theta, ref).total
    c = float64_twin(task).constants(np.asarray(theta))
    dist = float(np.linalg.norm(np.asarray(theta) - np.asarray(ref.phi, float)))
    lam, mu = c.lam, c.mu
    target = 1e-3 * al / (lemma3_B1(c, sharp=True) + lam / mu * c.L)
    k_conv = core._steps_until(lambda k: core.inner_distance_bound(c.kappa, k, dist), target)
    m_conv = core._steps_until(lambda m: cg_error_bound(c.kappa, m, lam / mu * (c.B + c.L * dist)),
                               1e-3 * al, cap=max(50 * 6, 200))
    ladder = [(4, 2), (8, 4), (16, 8), (max(k_conv, 4), max(m_conv, 2))]
    assert calls[:4] == ladder and calls[4:] == [(max(k_conv, 4), m) for m in (1, 2, 3)]
    assert out.passed
    worst = 0.0
    for k, m in ladder:
        g = alg2(task, theta, k, m)
        bound = core.budget_bound(c, dist, k, m)[0]
        worst = max(worst, rel(g, ref.g) / (bound + al))
    assert out.ratio == pytest.approx(worst, rel=1e-6) and 0 < out.ratio <= 1


def test_budget_mode_krylov_stage_holds_m_steps_to_the_krylov_iterate():
    """At the converged inner budget, m CG steps must give the m-step Krylov iterate: CG with
    one step fewer (at m ≥ 2) is a 'krylov' failure; an output error there is an 'output' one."""
    inst = Instance(dim=6, kappa=20.0, lam=0.37, floor=0.5, seed=31)
    task, theta = build(inst)
    ref = exact_meta_gradient(task, theta)
    H = np.asarray(ref.H, float)
    Msys = np.eye(6) + H / task.lam
    v = np.asarray(ref.outer_grad, float)

    def one_short_at_2(task, theta, inner_steps, cg_steps):
        m = cg_steps - 1 if cg_steps == 2 and inner_steps > 100 else cg_steps
        return solvers.imaml_meta_gradient(task, theta, inner_steps=inner_steps, cg_steps=m).gradient

    out = _evaluate_alone(one_short_at_2, (4, 5), inst)
    (f,) = out.failures
    assert f.check == "krylov" and f.budgets[1] == 2 and f.budgets[0] > 100
    assert np.allclose(f.details["krylov_iterate"], krylov_iterate(Msys, v, 2)[0], rtol=0, atol=1e-12)

    def raises_at_3(task, theta, inner_steps, cg_steps):
        if cg_steps == 3:
            raise RuntimeError("boom")
        return solvers.imaml_meta_gradient(task, theta, inner_steps=inner_steps,
                                           cg_steps=cg_steps).gradient

    (f,) = _evaluate_alone(raises_at_3, (4, 5), inst).failures
    assert f.check == "output" and f.budgets[1] == 3 and f.error == "raised RuntimeError: boom"
    # budgets of at least d CG steps have no Krylov stage beyond m < d
    calls = []

    def rec(task, theta, inner_steps, cg_steps):
        calls.append(cg_steps)
        return solvers.imaml_meta_gradient(task, theta, inner_steps=inner_steps,
                                           cg_steps=cg_steps).gradient

    _evaluate_alone(rec, (4, 7), inst)
    assert calls[4:] == [1, 2, 3]


def test_converged_mode_ratio_and_failure_details():
    inst = Instance(dim=5, kappa=10.0, lam=2.5, seed=8)
    task, theta = build(inst)
    ref = exact_meta_gradient(task, theta)
    al = converged_allowance(task, theta, ref)
    exact = lambda task, theta: np.asarray(ref.g, float)  # noqa: E731
    out = _evaluate_alone(exact, None, inst)
    assert out.passed and out.ratio == rel(exact(task, theta), ref.g) / al.total
    off = lambda task, theta: np.asarray(ref.g, float) + 3 * al.total * np.eye(5)[0]  # noqa: E731
    out = _evaluate_alone(off, None, inst)
    (f,) = out.failures
    assert not out.passed and f.check == "converged" and f.allowed == al.total
    assert f.measured == rel(off(task, theta), ref.g) and out.ratio == f.measured / al.total
    assert f.details["allowance"] == al.parts and np.array_equal(f.details["output"], off(task, theta))
    assert f.reference_norm == pytest.approx(float(np.linalg.norm(np.asarray(ref.g, float))))
    (f,) = _evaluate_alone(lambda task, theta: None, None, inst).failures
    assert f.check == "output" and f.measured == math.inf and f.allowed == 0.0
    assert f.diagnosis.name == f"the implementation {f.error}"


def test_checks_run_on_one_blas_and_torch_thread():
    import torch

    seen = []

    def fn(task, theta):
        seen.append(torch.get_num_threads())
        return np.asarray(exact_meta_gradient(task, theta).g, float)

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        report = core.check_meta_gradient(fn, max_examples=1, corners=False)
        cg_report = core.check_cg(lambda mv, rhs, m: np.asarray(krylov_iterate(
            np.eye(1), np.zeros(1), 0)[0]) * 0, max_examples=1, steps=(1,))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert report.passed and set(seen) == {1} and isinstance(cg_report, core.Report)
