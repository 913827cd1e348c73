"""Batched CG at the hardware's pace: bytes per second of :func:`solvers.cg` against two peers in
the same process, as fractions (the ``bandwidth`` stage of ``imaml-verify gpu``).

    python -m verify.gpu.bandwidth --out FILE.json [--size full|dry] [--device cuda]

The problem: n tasks of dimension d, row i solving M_i x = b_i with its own dense symmetric
positive definite M_i (spectrum in [0.1, 1.9], κ ≤ 19), matvec one batched matrix product; 30
CG steps with rtol = atol = 0 (so every step is taken). At d = 512 one step reads the n·d² matrix
entries and O(n·d) vector entries, so the matrix read is ≥ 97 % of the traffic and a step's
bytes are counted as ``M.nbytes``. Peers:

- ``plain``: :func:`verify.fewshot.cg_modes.plain_cg`, CG written plainly in torch with no
  host synchronisation (the loop a user would write; what the solver must keep pace with);
- ``copy``: ``dst.copy_(M)``, bytes read plus bytes written: what the memory system can do.

Figures: bytes/s of each, ``solver / plain`` and ``solver / copy``; one small task (d = 50,
float64) as time per CG step of the solver over the plain loop's; and the two solutions' relative
difference (the same algorithm: it must agree to rounding, ``theory.tolerances``). Timings are
medians of ``repeats`` runs after a warm-up, synchronised before and after each. Targets (the
issue's): solver ≥ 85 % of the plain loop at 2048 × 512 float32, and the small task within 2× of
the plain loop per step; judged on a GPU only (a CPU dry run records its fractions, unjudged).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

__all__ = ["SIZES", "TARGETS", "measure", "main"]

SIZES = {
    "full": dict(batched=((2048, 512, "float32"), (1024, 512, "float64")), small=(50, "float64"),
                 steps=30, repeats=5, small_repeats=20),
    "dry": dict(batched=((64, 32, "float32"), (32, 32, "float64")), small=(50, "float64"),
                steps=30, repeats=3, small_repeats=5),
}
#: fraction of the plain loop's bytes/s at the first batched size, per-step time ratio of the
#: small task: the targets of the issue
TARGETS = {"min_fraction_of_plain": 0.85, "max_small_step_ratio": 2.0}
KAPPA = 19.0  #: spectrum of every M_i in [0.1, 1.9]


def _sync(device):
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device, repeats):
    """(median seconds of ``repeats`` calls after one warm-up, last result)."""
    out = fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        out = fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def spd_batch(n, d, dtype, device, seed=0):
    """n symmetric matrices d × d with eigenvalues in [0.1, 1.9]: I + S_i with S_i symmetric,
    orthogonally similar to diag(linspace(−0.9, 0.9, d)) (shape (n, d, d) when n > 0, (d, d) for
    n = 0)."""
    import torch

    gen = torch.Generator(device="cpu").manual_seed(seed)
    eig = torch.linspace(0.1, 1.9, d, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    base = (q * eig) @ q.T                       # one matrix with the wanted spectrum
    base = base.to(dtype=getattr(torch, dtype), device=device)
    if n == 0:
        return base
    # n different matrices of the same spectrum: permutation similarity P M Pᵀ per task
    perms = torch.stack([torch.randperm(d, generator=gen) for _ in range(min(n, 8))])
    mats = torch.stack([base[p][:, p] for p in perms.to(device)])
    return mats.repeat((n + mats.shape[0] - 1) // mats.shape[0], 1, 1)[:n].contiguous()


def _agree(a, b):
    return float((a - b).norm() / b.norm())


def measure_batched(n, d, dtype, device, *, steps=30, repeats=5, seed=0) -> dict:
    """Bytes/s of solvers.cg, the plain loop and a copy on n × d tasks (see the module
    docstring)."""
    import torch

    from solvers import cg
    from theory.tolerances import relative_tolerance
    from verify.fewshot.cg_modes import plain_cg

    M = spd_batch(n, d, dtype, device, seed)
    gen = torch.Generator(device="cpu").manual_seed(seed + 1)
    b = torch.randn(n, d, generator=gen, dtype=torch.float64).to(dtype=M.dtype, device=device)

    def matvec(x):
        return torch.bmm(M, x.unsqueeze(-1)).squeeze(-1)

    t_solver, res = _timed(lambda: cg(matvec, b, max_steps=steps, rtol=0.0, atol=0.0), device,
                           repeats)
    t_plain, (x_plain, info) = _timed(lambda: plain_cg(matvec, b, steps), device, repeats)
    dst = torch.empty_like(M)
    t_copy, _ = _timed(lambda: dst.copy_(M), device, repeats)
    step_bytes = M.numel() * M.element_size()
    solver_bps = res.steps * step_bytes / t_solver
    plain_bps = info["steps"] * step_bytes / t_plain
    copy_bps = 2 * step_bytes / t_copy
    diff = _agree(res.x, x_plain)
    allowed = relative_tolerance(dtype, kappa=KAPPA, dim=d)
    return {"n_tasks": n, "dim": d, "dtype": dtype, "steps": {"solver": res.steps,
                                                              "plain": info["steps"]},
            "bytes_per_step": step_bytes, "seconds": {"solver": t_solver, "plain": t_plain,
                                                      "copy": t_copy},
            "bytes_per_second": {"solver": solver_bps, "plain": plain_bps, "copy": copy_bps},
            "fraction_of_plain": solver_bps / plain_bps, "fraction_of_copy": solver_bps / copy_bps,
            "plain_fraction_of_copy": plain_bps / copy_bps,
            "relative_difference": diff, "allowed_difference": allowed,
            "agree": diff <= allowed}


def measure_small(d, dtype, device, *, steps=30, repeats=20, seed=0) -> dict:
    """Seconds per CG step of solvers.cg and of the plain loop on one task of dimension d."""
    import torch

    from solvers import cg
    from theory.tolerances import relative_tolerance
    from verify.fewshot.cg_modes import plain_cg

    M = spd_batch(0, d, dtype, device, seed)
    gen = torch.Generator(device="cpu").manual_seed(seed + 1)
    b = torch.randn(d, generator=gen, dtype=torch.float64).to(dtype=M.dtype, device=device)

    def matvec(x):
        return M @ x

    t_solver, res = _timed(lambda: cg(matvec, b, max_steps=steps, rtol=0.0, atol=0.0), device,
                           repeats)
    t_plain, (x_plain, info) = _timed(lambda: plain_cg(matvec, b, steps), device, repeats)
    per_solver, per_plain = t_solver / max(res.steps, 1), t_plain / info["steps"]
    diff = _agree(res.x, x_plain)
    allowed = relative_tolerance(dtype, kappa=KAPPA, dim=d)
    return {"dim": d, "dtype": dtype, "steps": {"solver": res.steps, "plain": info["steps"]},
            "seconds_per_step": {"solver": per_solver, "plain": per_plain},
            "step_time_ratio": per_solver / per_plain, "relative_difference": diff,
            "allowed_difference": allowed, "agree": diff <= allowed}


def measure(*, size="full", device="cuda", on_result=None) -> dict:
    """Every measurement of ``size`` on ``device``; ``on_result(doc)`` after each one (the
    stage writes its file there, so a killed run keeps what it measured). The verdict
    (``passed``) is judged against :data:`TARGETS` on CUDA only; on a CPU it is None."""
    import torch

    if size not in SIZES:
        raise ValueError(f"size must be one of {tuple(SIZES)}, got {size!r}")
    s = SIZES[size]
    judged = torch.device(device).type == "cuda"
    doc = {"size": size, "device": device, "targets": TARGETS, "judged": judged,
           "batched": [], "small": None, "passed": None}
    for n, d, dtype in s["batched"]:
        doc["batched"].append(measure_batched(n, d, dtype, device, steps=s["steps"],
                                              repeats=s["repeats"]))
        if on_result:
            on_result(doc)
    doc["small"] = measure_small(*s["small"], device, steps=s["steps"],
                                 repeats=s["small_repeats"])
    agree = all(r["agree"] for r in doc["batched"]) and doc["small"]["agree"]
    doc["agree"] = agree
    if judged:
        doc["passed"] = bool(agree and doc["batched"][0]["fraction_of_plain"]
                             >= TARGETS["min_fraction_of_plain"]
                             and doc["small"]["step_time_ratio"] <= TARGETS["max_small_step_ratio"])
    if on_result:
        on_result(doc)
    return doc


def main(argv=None) -> int:
    from verify.report._atomic import atomic_write_json

    parser = argparse.ArgumentParser(prog="python -m verify.gpu.bandwidth",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--size", choices=tuple(SIZES), default="full")
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args(argv)
    import torch

    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        print("bandwidth: no CUDA device on this machine", file=sys.stderr)
        return 2
    out = Path(args.out)
    doc = measure(size=args.size, device=args.device, on_result=lambda d: atomic_write_json(out, d))
    for r in doc["batched"]:
        print(f"bandwidth: {r['n_tasks']}x{r['dim']} {r['dtype']}: solver "
              f"{r['bytes_per_second']['solver'] / 1e9:.1f} GB/s = "
              f"{100 * r['fraction_of_plain']:.0f}% of the plain loop, "
              f"{100 * r['fraction_of_copy']:.0f}% of a copy")
    sm = doc["small"]
    print(f"bandwidth: d = {sm['dim']} {sm['dtype']}: {1e6 * sm['seconds_per_step']['solver']:.0f}"
          f" us per step, {sm['step_time_ratio']:.2f}x the plain loop")
    if not doc["agree"]:
        print("bandwidth: solver and plain loop disagree beyond rounding", file=sys.stderr)
        return 1
    return 0 if doc["passed"] in (None, True) else 1


if __name__ == "__main__":
    sys.exit(main())
