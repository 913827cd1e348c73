"""The one GPU script of the few-shot issue (``make gpu-check``)::

    python -m verify.fewshot.gpu_check --out DIR [--dry-run] [--device cuda]

Runs the four integration checks of :mod:`verify.fewshot.integration` on the paper's
ConvNet (64 filters, 4 layers, 28×28 embedded glyphs, 5-way 1-shot, λ = 2, 16 GD steps,
5 CG steps; iMAML-HF: 3 Newton-CG iterations of 5 CG steps) and writes ``DIR/fewshot_gpu.json``.
Sized for under 8 minutes on one GPU: each meta-training run has a wall-time cap (the number of
meta-steps actually done is recorded). ``--dry-run``: tiny sizes (8×8 glyphs, 4 filters,
3 layers) on the CPU, a minute or less, to show the script runs as written; ``--size cpu``:
16×16 glyphs and 16 filters, a few minutes on a CPU. Also writes ``DIR/fewshot.md`` (the
report section) and ``DIR/fewshot_memory.png`` (memory against inner steps).
Exit status 0 when the script ran (the JSON holds the findings; nothing is judged here).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from verify.fewshot._threads import single_thread
from verify.fewshot.episodes import EpisodeSampler
from verify.fewshot.glyphs import glyph_splits
from verify.fewshot.integration import cg_convergence, hvp_time_ratio, memory_profile, short_training
from verify.fewshot.report import memory_figure, render_markdown
from verify.fewshot.train import paper_config

__all__ = ["main", "run_checks", "SIZES"]

OUTPUT_NAME = "fewshot_gpu.json"

#: sizes of a full GPU run and of a CPU dry run
SIZES = {
    "full": dict(image_size=28, filters=64, layers=4, train_classes=400, test_classes=200,
                 samples=20, k_query=5, meta_batch=8, meta_steps=2000, eval_episodes=200,
                 memory_steps=(16, 64), max_cg_steps=20, lanczos_steps=40,
                 reference_steps=1000, hvp_repeats=50, train_seconds=45.0),
    "cpu": dict(image_size=16, filters=16, layers=4, train_classes=200, test_classes=100,
                samples=20, k_query=5, meta_batch=4, meta_steps=300, eval_episodes=100,
                memory_steps=(16, 64), max_cg_steps=20, lanczos_steps=30,
                reference_steps=1000, hvp_repeats=20, train_seconds=45.0),
    "dry": dict(image_size=8, filters=4, layers=3, train_classes=20, test_classes=10,
                samples=8, k_query=3, meta_batch=2, meta_steps=4, eval_episodes=10,
                memory_steps=(4, 16), max_cg_steps=10, lanczos_steps=20, reference_steps=200,
                hvp_repeats=5, train_seconds=20.0),
}

METHODS = ("imaml_gd", "imaml_hf", "maml", "fomaml", "reptile", "pretrain")


def run_checks(*, device: str, size: str = "full", seed: int = 0, progress: bool = False,
               train_seconds: float | None = None) -> dict:
    """All four checks at ``size`` ('full': paper sizes for a GPU; 'cpu': a few minutes on
    a CPU; 'dry': tiny); returns the JSON-able results."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {tuple(SIZES)}, got {size!r}")
    dry_run = size == "dry"
    s = dict(SIZES[size])
    if train_seconds is not None:
        s["train_seconds"] = float(train_seconds)
    t_start = time.perf_counter()
    train, test = glyph_splits(s["train_classes"], s["test_classes"], samples=s["samples"],
                               image_size=s["image_size"], seed=seed)
    train_sampler = EpisodeSampler(train, 5, 1, s["k_query"], seed=seed)
    test_sampler = EpisodeSampler(test, 5, 1, s["k_query"], seed=seed + 1)
    cfg = paper_config("omniglot", n_way=5, k_shot=1, k_query=s["k_query"],
                       filters=s["filters"], layers=s["layers"], meta_batch=s["meta_batch"],
                       meta_steps=s["meta_steps"], device=device, seed=seed)
    if dry_run:
        from dataclasses import replace

        cfg = replace(cfg, inner_steps=4)
    out = {"device": _device_name(device), "dry_run": dry_run, "size": size, "seed": seed,
           "torch": torch.__version__, "python": platform.python_version(),
           "tf32": {"cudnn": torch.backends.cudnn.allow_tf32,
                    "matmul": torch.backends.cuda.matmul.allow_tf32},
           "data": f"embedded glyphs (NOT Omniglot), {s['image_size']}x{s['image_size']}, "
                   f"{s['train_classes']} training / {s['test_classes']} held-out classes",
           "config": cfg.as_dict(), "sizes": {k: list(v) if isinstance(v, tuple) else v
                                               for k, v in s.items()}}
    timings = {}

    t0 = time.perf_counter()
    out["cg_convergence"] = cg_convergence(cfg, train_sampler, max_cg_steps=s["max_cg_steps"],
                                           lanczos_steps=s["lanczos_steps"],
                                           reference_steps=s["reference_steps"])
    timings["cg_convergence"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    out["memory"] = memory_profile(cfg, train_sampler, inner_steps=s["memory_steps"])
    timings["memory"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    out["hvp_time"] = hvp_time_ratio(cfg, train_sampler, repeats=s["hvp_repeats"])
    timings["hvp_time"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    out["training"] = short_training(cfg, train_sampler, test_sampler, methods=METHODS,
                                     eval_episodes=s["eval_episodes"],
                                     time_limit_s=s["train_seconds"], progress=progress)
    timings["training"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start
    out["seconds"] = timings
    return out


def _device_name(device: str) -> str:
    d = torch.device(device)
    if d.type == "cuda":
        return torch.cuda.get_device_name(d)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m verify.fewshot.gpu_check",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for fewshot_gpu.json")
    parser.add_argument("--dry-run", action="store_true",
                        help="tiny sizes on the CPU (shows that the script runs as written)")
    parser.add_argument("--size", choices=tuple(SIZES), default=None,
                        help="full (GPU, default), cpu (a few minutes on a CPU), dry")
    parser.add_argument("--device", default=None,
                        help="default: cuda (cpu with --dry-run or --size cpu)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default=OUTPUT_NAME, help=f"JSON file name ({OUTPUT_NAME})")
    parser.add_argument("--progress", action="store_true", help="tqdm progress bars")
    parser.add_argument("--train-seconds", type=float, default=None,
                        help="wall-time cap of each meta-training run (default per size)")
    args = parser.parse_args(argv)
    size = args.size or ("dry" if args.dry_run else "full")
    device = args.device or ("cuda" if size == "full" else "cpu")
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device on this machine; use --dry-run for the CPU dry run",
              file=sys.stderr)
        return 2
    # float32 means float32: no TensorFloat-32 in convolutions or matmuls (CUDA enables it for
    # cuDNN convolutions by default, which would put check 1's float32 floor near 1e-3)
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        if size == "dry":  # tiny networks run faster on one thread
            with single_thread():
                results = run_checks(device=device, size=size, seed=args.seed,
                                     progress=args.progress, train_seconds=args.train_seconds)
        else:
            results = run_checks(device=device, size=size, seed=args.seed,
                                 progress=args.progress, train_seconds=args.train_seconds)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    figure = memory_figure(results, out / "fewshot_memory.png")
    # relative to the folder above (reports/, where REPORT.md is written)
    results["memory_figure"] = f"{out.resolve().name}/fewshot_memory.png" if figure else None
    path = out / args.name
    path.write_text(json.dumps(results, indent=2))
    (out / "fewshot.md").write_text(render_markdown(
        results, figure_path="fewshot_memory.png" if figure else None))
    print(f"gpu_check: wrote {path} and {out / 'fewshot.md'} "
          f"({results['seconds']['total']:.0f} s on {results['device']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
