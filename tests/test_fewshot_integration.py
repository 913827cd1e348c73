"""The four integration checks of the few-shot issue: tiny CPU smoke versions (default run),
the same checks at paper sizes on CUDA (marked gpu), and the GPU script's dry run."""
from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch

from solvers import SolverBreakdown, cg, inner_solve
from theory.tolerances import rounding_allowance
from verify.fewshot._threads import single_thread
from verify.fewshot import EpisodeSampler, TrainConfig, glyph_splits
from verify.fewshot.gpu_check import SIZES, main as gpu_check_main
from verify.fewshot.integration import (
    _task_at,
    cg_convergence,
    hvp_time_ratio,
    memory_profile,
    short_training,
)
from verify.fewshot.lanczos import lanczos_ritz_values
from verify.fewshot.report import render_markdown

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
def converged_to_reference(result) -> bool:
    """CG's iterates stay within the (estimated-κ) Chebyshev bound plus the rounding allowance
    of cfg.dtype, and the last one reaches the float64 reference to that allowance."""
    allow = rounding_allowance(result["dtype"], kappa=result["kappa_estimate"], dim=result["dim"])
    errs, bounds = result["relative_errors"], result["chebyshev_bound_estimate"]
    return (result["reference"]["status"] == "converged"
            and all(e <= b + allow for e, b in zip(errs, bounds))
            and len(errs) == len(bounds) and errs[-1] <= allow)


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
def flat_for_imaml_linear_for_maml(result) -> dict:
    """iMAML: the same peak at every K; MAML: peak affine in K with a positive slope."""
    measure = result["growth_measure"]
    ks = result["inner_steps"]
    out = {}
    for m, rows in result["methods"].items():
        b = [rows[str(k)][measure] for k in ks]
        slopes = [(b[i + 1] - b[i]) / (ks[i + 1] - ks[i]) for i in range(len(ks) - 1)]
        out[m] = {"flat": len(set(b)) == 1,
                  "linear": min(slopes) > 0 and max(slopes) - min(slopes) <= 0.1 * max(slopes)}
    return out


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


# ---------------------------------------------------------------- the GPU script
def test_gpu_check_dry_run_writes_its_json(tmp_path):
    assert gpu_check_main(["--out", str(tmp_path), "--dry-run"]) == 0
    doc = json.loads((tmp_path / "fewshot_gpu.json").read_text())
    assert doc["dry_run"] and doc["device"].startswith("cpu")
    assert set(doc) >= {"cg_convergence", "memory", "hvp_time", "training", "seconds"}
    assert set(doc["training"]["methods"]) == {"no_meta_learning", "imaml_gd", "imaml_hf",
                                               "maml", "fomaml", "reptile", "pretrain"}
    assert flat_for_imaml_linear_for_maml(doc["memory"])["imaml_gd"]["flat"]
    md = (tmp_path / "fewshot.md").read_text()
    assert md == render_markdown(doc, figure_path="fewshot_memory.png")
    assert "![memory" not in render_markdown(doc)  # the report links the GPU run's figure only
    assert "not Omniglot" in md and "99.16 ± 0.35" in md and "CPU dry run" in md
    assert "not run" not in md  # every row of Table 2 has our number
    assert (tmp_path / "fewshot_memory.png").stat().st_size > 0
    # rendered as a GPU run would be: peak CUDA memory, and the report links the figure
    gpu_doc = json.loads(json.dumps(doc))
    gpu_doc.update(device="NVIDIA H100 80GB HBM3", dry_run=False, memory_figure="gpu/m.png")
    for rows in gpu_doc["memory"]["methods"].values():
        for row in rows.values():
            row["cuda_peak_bytes"] = row["saved_bytes"]
    gpu_doc["memory"]["growth_measure"] = "cuda_peak_bytes"
    gpu_md = render_markdown(gpu_doc)
    assert "GPU run" in gpu_md and "peak CUDA memory" in gpu_md and "](gpu/m.png)" in gpu_md


def test_gpu_check_without_cuda_says_so(tmp_path, capsys):
    if CUDA:
        pytest.skip("a CUDA device is present")
    assert gpu_check_main(["--out", str(tmp_path)]) == 2
    assert "no CUDA device" in capsys.readouterr().err


# ---------------------------------------------------------------- the same checks on CUDA
@pytest.fixture(scope="module")
def paper_size():
    s = SIZES["full"]
    train, test = _samplers((s["train_classes"] // 4, s["test_classes"] // 4), s["image_size"],
                            k_query=s["k_query"])
    cfg = TrainConfig(filters=s["filters"], layers=s["layers"], inner_steps=16, lam=2.0,
                      device="cuda", meta_batch=s["meta_batch"])
    return cfg, train, test


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="no CUDA device on this machine")
def test_gpu_cg_convergence(paper_size):
    cfg, train, _ = paper_size
    r = cg_convergence(cfg, train, max_cg_steps=20, lanczos_steps=40, reference_steps=1000)
    assert converged_to_reference(r), r["relative_errors"]
    assert r["indefinite"]["certified_by_lanczos"] and r["indefinite"]["cg_status"] == "breakdown"


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="no CUDA device on this machine")
def test_gpu_memory_flat_for_imaml(paper_size):
    cfg, train, _ = paper_size
    r = memory_profile(cfg, train, inner_steps=(16, 32, 64))
    assert r["growth_measure"] == "cuda_peak_bytes"
    peaks = {m: [r["methods"][m][str(k)]["cuda_peak_bytes"] for k in (16, 32, 64)]
             for m in r["methods"]}
    # the allocator rounds to blocks: iMAML's peak may move by a block, never by a step's worth
    maml_per_step = (peaks["maml"][2] - peaks["maml"][0]) / 48
    assert maml_per_step > 0
    assert max(peaks["imaml_gd"]) - min(peaks["imaml_gd"]) < maml_per_step
    assert flat_for_imaml_linear_for_maml({**r, "growth_measure": "saved_bytes"})["imaml_gd"]["flat"]


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="no CUDA device on this machine")
def test_gpu_short_training(paper_size):
    cfg, train, test = paper_size
    c = replace(cfg, meta_steps=150)
    r = short_training(c, train, test, methods=("imaml_gd", "imaml_hf"), eval_episodes=100)
    base = r["methods"]["no_meta_learning"]
    for m in ("imaml_gd", "imaml_hf"):
        assert beats(r["methods"][m], base, r["chance"]), (m, r["methods"][m], base)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="no CUDA device on this machine")
def test_gpu_hvp_time_ratio_recorded(paper_size):
    cfg, train, _ = paper_size
    r = hvp_time_ratio(cfg, train, repeats=50)
    assert math.isfinite(r["time_ratio"]) and r["time_ratio"] > 0
    assert r["hvp_saved_bytes"] > r["grad_saved_bytes"]
