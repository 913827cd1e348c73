"""The integration checks of the few-shot issue: tiny CPU smoke versions (default run), the
same checks on CUDA at small sizes (marked gpu; each sized to well under 60 s on a GPU — the
paper-size runs belong to the fewshot stage of `imaml-verify gpu`, not to unit tests), and the
few-shot stage's dry run."""
from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch

from solvers import SolverBreakdown, cg, inner_solve
from theory.tolerances import rounding_allowance
from verify._threads import single_thread
from verify.fewshot import EpisodeSampler, TrainConfig, glyph_splits
from verify.fewshot.gpu_check import main as gpu_check_main
from verify.fewshot.integration import (
    _task_at,
    cg_convergence,
    cg_mode_errors,
    converged_to_reference,
    flat_for_imaml_linear_for_maml,
    hvp_time_ratio,
    memory_profile,
    paper_ordering,
    short_training,
)
from verify.fewshot.lanczos import lanczos_ritz_values

CUDA = torch.cuda.is_available()


@pytest.fixture(autouse=True)
def one_thread():
    with single_thread():
        yield


def _samplers(size, image_size, n_way=5, k_query=3):
    train, test = glyph_splits(size[0], size[1], samples=8, image_size=image_size, seed=0)
    return (EpisodeSampler(train, n_way, 1, k_query, seed=0),
            EpisodeSampler(test, n_way, 1, k_query, seed=1))


@pytest.fixture(scope="module")
def tiny():
    train, test = _samplers((20, 10), 8)
    cfg = TrainConfig(filters=4, layers=3, inner_steps=4, inner_lr=0.1, lam=2.0)
    return cfg, train, test


# ---------------------------------------------------------------- check 1: CG convergence
def test_cg_meta_gradient_converges_to_float64_reference(tiny):
    cfg, train, _ = tiny
    r = cg_convergence(cfg, train, max_cg_steps=12, lanczos_steps=20, reference_steps=200)
    assert converged_to_reference(r), r["relative_errors"]
    assert r["relative_errors"][5] < r["relative_errors"][1] < r["relative_errors"][0]
    # indefinite I + H/λ at a small λ: certified by Lanczos and reported by CG as a breakdown
    assert r["indefinite"]["certified_by_lanczos"]
    assert r["indefinite"]["cg_status"] == "breakdown"


@pytest.mark.parametrize("defect", ["missing_lambda", "wrong_sign"])
def test_cg_convergence_check_fails_on_planted_defects(tiny, defect):
    cfg, train, _ = tiny
    r = cg_convergence(cfg, train, max_cg_steps=12, lanczos_steps=20, reference_steps=200,
                       matvec_defect=defect)
    assert not converged_to_reference(r)


def test_indefinite_system_raises_by_default(tiny):
    """solvers.cg with its default on_breakdown='raise' refuses the indefinite system."""
    cfg, train, _ = tiny
    task, theta = _task_at(cfg, train, 0)
    phi = inner_solve(task, theta, inner_steps=cfg.inner_steps, inner="gd",
                      inner_step_size=cfg.inner_lr).x
    ritz = lanczos_ritz_values(lambda w: task.inner_hvp(phi, w),
                               torch.ones_like(phi), 20)
    lam = -float(ritz[0]) / 4  # I + H/λ has an eigenvalue ≤ 1 + 4·λ_min/|λ_min| < 0
    with pytest.raises(SolverBreakdown):
        cg(lambda w: w + task.inner_hvp(phi, w) / lam, task.outer_grad(phi), max_steps=100,
           rtol=0.0, atol=0.0)


def test_lanczos_ritz_values_lie_inside_the_spectrum():
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(30, 30, generator=g, dtype=torch.float64))
    eig = torch.linspace(-3.0, 5.0, 30, dtype=torch.float64)
    a = q @ torch.diag(eig) @ q.T
    ritz = lanczos_ritz_values(lambda v: a @ v, torch.randn(30, generator=g, dtype=torch.float64), 8)
    allow = rounding_allowance("float64", dim=30, scale=5.0)
    assert ritz[0] >= -3.0 - allow and ritz[-1] <= 5.0 + allow
    full = lanczos_ritz_values(lambda v: a @ v, torch.ones(30, dtype=torch.float64), 30)
    assert abs(full[0] + 3.0) <= allow * 30 and abs(full[-1] - 5.0) <= allow * 30
    with pytest.raises(ValueError, match="v0"):
        lanczos_ritz_values(lambda v: v, torch.zeros(3, dtype=torch.float64), 2)


# ---------------------------------------------------------------- check 2: memory
def test_memory_flat_for_imaml_growing_linearly_for_maml(tiny):
    cfg, train, _ = tiny
    r = memory_profile(cfg, train, inner_steps=(4, 8, 16))
    verdict = flat_for_imaml_linear_for_maml(r)
    assert verdict["imaml_gd"]["flat"]
    assert verdict["maml"]["linear"]
    # negative control: the predicate that passes iMAML fails MAML, and vice versa
    assert not verdict["maml"]["flat"] and not verdict["imaml_gd"]["linear"]
    assert r["growth"]["maml"] > 3.0 and r["growth"]["imaml_gd"] == 1.0


# ---------------------------------------------------------------- check 3: short training
def beats(entry, baseline, chance) -> bool:
    """Meta-learned accuracy separated from the baseline (95% intervals disjoint) and at least
    twice chance."""
    return (entry["mean"] - entry["ci95"] > baseline["mean"] + baseline["ci95"]
            and entry["mean"] >= 2 * chance)


def test_short_meta_training_beats_no_meta_learning(tiny):
    cfg, train, test = tiny
    c = replace(cfg, filters=4, inner_steps=3, meta_batch=4, meta_steps=8, outer_lr=0.03)
    r = short_training(c, train, test, methods=("imaml_gd", "imaml_hf"), eval_episodes=30)
    base = r["methods"]["no_meta_learning"]
    for m in ("imaml_gd", "imaml_hf"):
        assert beats(r["methods"][m], base, r["chance"]), (m, r["methods"][m], base)
    # negative control: the untrained network does not beat itself
    assert not beats(base, base, r["chance"])


@pytest.mark.slow
def test_longer_meta_training_all_methods(tiny):
    cfg, train, test = tiny
    c = replace(cfg, filters=8, inner_steps=5, meta_batch=4, meta_steps=30, outer_lr=0.01)
    r = short_training(c, train, test, methods=("imaml_gd", "imaml_hf", "maml", "fomaml"),
                       eval_episodes=60)
    base = r["methods"]["no_meta_learning"]
    for m in ("imaml_gd", "imaml_hf", "maml", "fomaml"):
        assert beats(r["methods"][m], base, r["chance"]), (m, r["methods"][m], base)


# ---------------------------------------------------------------- check 4: HVP / gradient time
def test_hvp_time_ratio_is_recorded(tiny):
    cfg, train, _ = tiny
    r = hvp_time_ratio(cfg, train, repeats=3)
    for key in ("grad_seconds", "hvp_seconds", "time_ratio", "memory_ratio"):
        assert math.isfinite(r[key]) and r[key] > 0, key
    # deterministic part: an HVP (double backward) saves more for backward than a gradient
    assert r["hvp_saved_bytes"] > r["grad_saved_bytes"]


# ---------------------------------------------------------------- check 5: CG modes
def test_cg_mode_errors_against_both_references(tiny):
    cfg, train, _ = tiny
    r = cg_mode_errors(cfg, train, episodes=(0, 1), reference_steps=300, lanczos_steps=20)
    assert r["indefinite_tasks"] == 2      # I + H/λ indefinite at λ = 2 on this network
    for row in r["tasks"]:
        assert row["reference"]["exists"], row["reference"]   # MINRES converged at d = 385
        assert row["implicit_vs_backprop"]["relative_error"] == 0.0
        fallback, fixed = row["modes"]["fallback"], row["modes"]["fixed"]
        assert fallback["cg_status"] == "breakdown"          # the safeguard stopped
        assert fixed["cg_steps"] == cfg.cg_steps and fixed["nonpositive_curvature_steps"] >= 1
        for m in row["modes"].values():
            assert 0 <= m["relative_error"] and -1 <= m["cosine"] <= 1 + 1e-12
            assert 0 <= m["relative_error_vs_backprop"]
    assert r["summary"]["fixed"]["tasks_with_reference"] == 2


def test_paper_ordering_reads_intervals():
    m = {"maml": {"mean": 0.8, "ci95": 0.02},
         "imaml_gd": {"mean": 0.85, "ci95": 0.02},
         "imaml_gd:fixed": {"mean": 0.79, "ci95": 0.05},
         "fomaml": {"mean": 0.9, "ci95": 0.01}}
    o = paper_ordering(m)
    assert set(o) == {"imaml_gd", "imaml_gd:fixed"}
    assert o["imaml_gd"]["holds"] and o["imaml_gd"]["separated"]
    assert not o["imaml_gd:fixed"]["holds"] and not o["imaml_gd:fixed"]["separated"]
    assert paper_ordering({"imaml_gd": m["imaml_gd"]}) == {}


# ---------------------------------------------------------------- the fewshot stage
# its dry run's output is checked in tests/test_gpu_command.py (one dry run of the whole command)
def test_gpu_check_past_deadline_keeps_a_partial_record(tmp_path):
    """A run whose time is up writes what it has (here: nothing but the header), says which
    parts it skipped, and fails."""
    import time

    assert gpu_check_main(["--out", str(tmp_path), "--dry-run",
                           "--deadline", str(time.time() - 1)]) == 1
    doc = json.loads((tmp_path / "fewshot_gpu.json").read_text())
    assert not doc["complete"] and doc["parts_done"] == []
    assert doc["parts_skipped"] == ["cg_modes", "cg_convergence", "memory", "hvp_time",
                                    "training"]
    assert "Partial run" in (tmp_path / "fewshot.md").read_text()


def test_gpu_check_without_cuda_says_so(tmp_path, capsys):
    if CUDA:
        pytest.skip("a CUDA device is present")
    assert gpu_check_main(["--out", str(tmp_path)]) == 2
    assert "no CUDA device" in capsys.readouterr().err


# ---------------------------------------------------------------- the same checks on CUDA
# Sizes: every test below is launch-bound on a GPU (5 images of 8×8 or 16×16); its time is about
# that of the same call on one CPU thread at the tiny size (dispatch-bound too). Measured that
# way (tools/device/README.md): cg_convergence ~3 s, memory ~2 s, short training ~10 s, HVP
# ratio ~1 s, CG modes ~2 s; the paper-size runs are the fewshot stage's.
@pytest.fixture(scope="module")
def small_cuda():
    train, test = _samplers((20, 10), 16)
    cfg = TrainConfig(filters=16, layers=4, inner_steps=8, inner_lr=0.1, lam=2.0,
                      device="cuda")
    return cfg, train, test


@pytest.fixture(scope="module")
def tiny_cuda(tiny):
    cfg, train, test = tiny
    return replace(cfg, device="cuda"), train, test


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="no CUDA device on this machine")
def test_gpu_cg_convergence(small_cuda):
    cfg, train, _ = small_cuda
    r = cg_convergence(cfg, train, max_cg_steps=20, lanczos_steps=30, reference_steps=300)
    assert converged_to_reference(r), r["relative_errors"]
    assert r["indefinite"]["certified_by_lanczos"] and r["indefinite"]["cg_status"] == "breakdown"


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="no CUDA device on this machine")
def test_gpu_memory_flat_for_imaml(small_cuda):
    cfg, train, _ = small_cuda
    r = memory_profile(cfg, train, inner_steps=(16, 32, 64))
    assert r["growth_measure"] == "saved_bytes"
    verdict = flat_for_imaml_linear_for_maml(r)
    assert verdict["imaml_gd"]["flat"] and verdict["maml"]["linear"]
    # the allocator's view after warm-ups: iMAML's peak may move by a block, never by a step's
    peaks = {m: [r["methods"][m][str(k)]["cuda_peak_bytes"] for k in (16, 32, 64)]
             for m in r["methods"]}
    maml_per_step = (peaks["maml"][2] - peaks["maml"][0]) / 48
    assert maml_per_step > 0
    assert max(peaks["imaml_gd"]) - min(peaks["imaml_gd"]) < maml_per_step


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="no CUDA device on this machine")
def test_gpu_short_training(tiny_cuda):
    """The CPU test's run (same sizes, seeds and steps) on CUDA."""
    cfg, train, test = tiny_cuda
    c = replace(cfg, filters=4, inner_steps=3, meta_batch=4, meta_steps=8, outer_lr=0.03)
    r = short_training(c, train, test, methods=("imaml_gd", "imaml_hf"), eval_episodes=30)
    base = r["methods"]["no_meta_learning"]
    for m in ("imaml_gd", "imaml_hf"):
        assert beats(r["methods"][m], base, r["chance"]), (m, r["methods"][m], base)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="no CUDA device on this machine")
def test_gpu_hvp_time_ratio_recorded(small_cuda):
    cfg, train, _ = small_cuda
    r = hvp_time_ratio(cfg, train, repeats=20)
    assert math.isfinite(r["time_ratio"]) and r["time_ratio"] > 0
    assert r["hvp_saved_bytes"] > r["grad_saved_bytes"]


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="no CUDA device on this machine")
def test_gpu_cg_modes(tiny_cuda):
    cfg, train, _ = tiny_cuda
    r = cg_mode_errors(cfg, train, episodes=(0,), reference_steps=300, lanczos_steps=20)
    row = r["tasks"][0]
    assert row["reference"]["exists"] and row["certified_indefinite"]
    assert row["modes"]["fallback"]["cg_status"] == "breakdown"
    assert all(m["relative_error_vs_backprop"] >= 0 for m in row["modes"].values())
