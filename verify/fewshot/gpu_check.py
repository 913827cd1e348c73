"""The few-shot checks at paper size on a GPU (the ``fewshot`` stage of ``imaml-verify gpu``)::

    python -m verify.fewshot.gpu_check --out DIR [--size full|cpu|dry] [--device cuda]
                                       [--deadline EPOCH | --budget-seconds S]

On the paper's ConvNet (64 filters, 4 layers, 28×28 embedded glyphs — NOT Omniglot —, 5-way
1-shot, λ = 2, 16 GD steps, 5 CG steps; iMAML-HF: 3 Newton-CG iterations of 5 CG steps) it runs,
in this order, the integration checks of :mod:`verify.fewshot.integration`:

1. ``cg_modes``: the ways of solving iMAML's system (CG: stop and fall back, the paper code's
   fixed CG steps, the paper script's damped system; and MINRES) against float64 references;
2. ``cg_convergence``: float32 CG against a float64 reference where the system is positive
   definite, and the indefinite system reported (judged: within the Chebyshev bound);
3. ``memory``: bytes saved for backward against inner steps (judged: iMAML flat, MAML linear);
   on CUDA the allocator's peak after warm-ups, recorded;
4. ``hvp_time``: one HVP's time and memory over one gradient's (recorded);
5. ``training``: iMAML-GD in each CG mode and with MINRES, iMAML-HF, MAML, first-order MAML, Reptile and
   joint training, equal wall-clock each out of what the deadline leaves, evaluated on held-out
   classes beside the untrained network; whether iMAML-GD ≥ MAML (the paper's ordering).

DIR/fewshot_gpu.json is rewritten (atomically) after every part and every trained method, with
``parts_done`` and ``complete``, so a run stopped from outside keeps what it finished; at the end
(and after the memory part) DIR/fewshot.md (the report section) and DIR/fewshot_memory.png.
A complete result is never replaced by a partial one: when DIR/NAME already holds a complete
run, this run's progress goes to DIR/NAME with ``.partial`` before its suffix (e.g.
``results.partial.json``), and only a run that completes replaces DIR/NAME, fewshot.md and
fewshot_memory.png (then the ``.partial`` file is removed); a run that does not complete says
which file kept the complete result.
``--size cpu``: 16×16 glyphs, 16 filters, for a CPU; ``--dry-run``/``--size dry``: tiny sizes on
the CPU in seconds, to show the script runs as written. Exit status 0 when every part ran and
its verdicts hold, 1 otherwise, 2 without the CUDA device asked for.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch

from verify._threads import single_thread
from verify.fewshot.episodes import EpisodeSampler
from verify.fewshot.glyphs import glyph_splits
from verify.fewshot.integration import (
    cg_convergence,
    cg_mode_errors,
    converged_to_reference,
    flat_for_imaml_linear_for_maml,
    hvp_time_ratio,
    memory_profile,
    short_training,
)
from verify.fewshot.report import memory_figure, render_markdown
from verify.fewshot.train import paper_config

__all__ = ["main", "run_checks", "SIZES", "PARTS", "TRAIN_METHODS", "OUTPUT_NAME"]

OUTPUT_NAME = "fewshot_gpu.json"
PARTS = ("cg_modes", "cg_convergence", "memory", "hvp_time", "training")

#: the methods trained, most telling first (a run short of time drops the last ones)
TRAIN_METHODS = ("imaml_gd", "maml", "imaml_gd:fixed", "imaml_gd:damped", "imaml_gd:minres",
                 "fomaml", "imaml_hf",
                 "reptile", "pretrain")

#: sizes of a GPU run, a CPU run and a dry run. ``budget_s``: the run's time when no deadline is
#: given (None: no deadline); ``train_seconds``: a cap per method (None: the fair share of what is
#: left); ``meta_steps`` (dry run): a fixed number of meta-steps per method instead of a time, so
#: that a dry run does the same work however busy the machine is
SIZES = {
    "full": dict(image_size=28, filters=64, layers=4, train_classes=120, test_classes=60,
                 samples=10, k_query=5, meta_batch=4, eval_episodes=100, memory_steps=(16, 64),
                 max_cg_steps=20, lanczos_steps=30, reference_steps=300, hvp_repeats=30,
                 mode_episodes=(0, 1, 2), mode_reference_steps=300, budget_s=240.0,
                 train_seconds=None),
    "cpu": dict(image_size=16, filters=16, layers=4, train_classes=200, test_classes=100,
                samples=20, k_query=5, meta_batch=4, eval_episodes=100, memory_steps=(16, 64),
                max_cg_steps=20, lanczos_steps=30, reference_steps=1000, hvp_repeats=20,
                mode_episodes=(0, 1, 2), mode_reference_steps=300, budget_s=1200.0,
                train_seconds=None),
    "dry": dict(image_size=8, filters=4, layers=3, train_classes=20, test_classes=10,
                samples=8, k_query=3, meta_batch=2, eval_episodes=10, memory_steps=(4, 16),
                max_cg_steps=10, lanczos_steps=20, reference_steps=200, hvp_repeats=5,
                mode_episodes=(0,), mode_reference_steps=100, budget_s=None,
                train_seconds=None, meta_steps=3),
}
META_STEPS_CAP = 100_000  #: training is bounded by time; this only bounds the checkpoint config


def run_checks(*, device: str, size: str = "full", seed: int = 0, progress: bool = False,
               train_seconds: float | None = None, deadline: float | None = None,
               on_update=None) -> dict:
    """Every part at ``size`` on ``device`` until ``deadline`` (time.time() epoch; default now +
    the size's ``budget_s``); returns the JSON-able results. ``on_update(doc)`` after each part
    and each trained method. A part that finds the deadline passed is recorded as skipped."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {tuple(SIZES)}, got {size!r}")
    t_start = time.perf_counter()
    s = dict(SIZES[size])
    if train_seconds is not None:
        s["train_seconds"] = float(train_seconds)
    if deadline is None:
        deadline = math.inf if s["budget_s"] is None else time.time() + s["budget_s"]
    train, test = glyph_splits(s["train_classes"], s["test_classes"], samples=s["samples"],
                               image_size=s["image_size"], seed=seed)
    train_sampler = EpisodeSampler(train, 5, 1, s["k_query"], seed=seed)
    test_sampler = EpisodeSampler(test, 5, 1, s["k_query"], seed=seed + 1)
    cfg = paper_config("omniglot", n_way=5, k_shot=1, k_query=s["k_query"],
                       filters=s["filters"], layers=s["layers"], meta_batch=s["meta_batch"],
                       meta_steps=META_STEPS_CAP, device=device, seed=seed)
    if size == "dry":
        from dataclasses import replace

        cfg = replace(cfg, inner_steps=4, meta_steps=s["meta_steps"])
    out = {"device": _device_name(device), "dry_run": size == "dry", "size": size, "seed": seed,
           "torch": torch.__version__, "python": platform.python_version(),
           "tf32": {"cudnn": torch.backends.cudnn.allow_tf32,
                    "matmul": torch.backends.cuda.matmul.allow_tf32},
           "data": f"embedded glyphs (NOT Omniglot), {s['image_size']}x{s['image_size']}, "
                   f"{s['train_classes']} training / {s['test_classes']} held-out classes",
           "config": cfg.as_dict(), "sizes": {k: list(v) if isinstance(v, tuple) else v
                                               for k, v in s.items()},
           "deadline_s": None if deadline == math.inf else deadline - time.time(), "parts_done": [], "parts_skipped": [],
           "complete": False, "verdicts": {}}
    timings = {"data": time.perf_counter() - t_start}
    out["seconds"] = timings

    def update():
        timings["total"] = time.perf_counter() - t_start
        if on_update:
            on_update(out)

    parts = {
        "cg_modes": lambda: cg_mode_errors(cfg, train_sampler, episodes=s["mode_episodes"],
                                           reference_steps=s["mode_reference_steps"],
                                           lanczos_steps=s["lanczos_steps"]),
        "cg_convergence": lambda: cg_convergence(cfg, train_sampler,
                                                 max_cg_steps=s["max_cg_steps"],
                                                 lanczos_steps=s["lanczos_steps"],
                                                 reference_steps=s["reference_steps"]),
        "memory": lambda: memory_profile(cfg, train_sampler, inner_steps=s["memory_steps"]),
        "hvp_time": lambda: hvp_time_ratio(cfg, train_sampler, repeats=s["hvp_repeats"]),
        "training": lambda: short_training(cfg, train_sampler, test_sampler,
                                           methods=TRAIN_METHODS,
                                           eval_episodes=s["eval_episodes"],
                                           time_limit_s=s["train_seconds"],
                                           deadline=None if deadline == math.inf else deadline,
                                           progress=progress,
                                           on_method=lambda tr: (out.__setitem__("training", tr),
                                                                 update())),
    }
    for name in PARTS:
        if time.time() >= deadline:
            out["parts_skipped"].append(name)
            update()
            continue
        t0 = time.perf_counter()
        out[name] = parts[name]()
        timings[name] = time.perf_counter() - t0
        out["parts_done"].append(name)
        out["verdicts"].update(_verdicts(name, out[name]))
        update()
    out["complete"] = not out["parts_skipped"]
    update()
    return out


def _verdicts(part, result) -> dict:
    """What each part judges (the rest is recorded): CG within its bound to the float64
    reference; iMAML's saved bytes flat in K and MAML's linear; every trained method evaluated
    to a finite accuracy."""
    if part == "cg_convergence":
        return {"cg_converges_to_float64_reference": converged_to_reference(result)}
    if part == "memory":
        v = flat_for_imaml_linear_for_maml(result)
        return {"imaml_saved_bytes_flat_in_K": v["imaml_gd"]["flat"],
                "maml_saved_bytes_linear_in_K": v["maml"]["linear"]}
    if part == "training":
        trained = [m for k, m in result["methods"].items() if "skipped" not in m]
        return {"every_method_evaluated": all(0.0 <= m["mean"] <= 1.0 for m in trained)
                and len(trained) == len(result["methods"])}
    return {}


def _device_name(device: str) -> str:
    d = torch.device(device)
    if d.type == "cuda":
        return torch.cuda.get_device_name(d)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _write(out_dir: Path, name: str, results: dict, *, final: bool) -> None:
    """DIR/NAME, and (with the memory part, and at the end) fewshot_memory.png and fewshot.md;
    each file atomically, the JSON last (what the report reads)."""
    from verify.report._atomic import atomic_write_json, atomic_write_text

    if final or ("memory" in results and results.get("memory_figure") is None):
        figure = memory_figure(results, out_dir / "fewshot_memory.png")
        # relative to the folder above (reports/, where REPORT.md is written)
        results["memory_figure"] = f"{out_dir.resolve().name}/fewshot_memory.png" if figure else None
    md = render_markdown(results, figure_path="fewshot_memory.png"
                         if results.get("memory_figure") else None)
    atomic_write_text(out_dir / "fewshot.md", md)
    atomic_write_json(out_dir / name, results)


def partial_name(name: str) -> str:
    """Where a run's progress goes while NAME holds a complete result: results.partial.json."""
    stem, dot, suffix = name.rpartition(".")
    return f"{stem}.partial.{suffix}" if dot else f"{name}.partial"


def holds_complete_result(path: Path) -> bool:
    """Whether ``path`` is a results document of a run that finished every part."""
    try:
        return bool(json.loads(path.read_text(encoding="utf-8")).get("complete"))
    except (OSError, ValueError, AttributeError):
        return False


class _Writer:
    """Writes a run's results without ever replacing a complete result by a partial one."""

    def __init__(self, out_dir: Path, name: str):
        self.out, self.name = out_dir, name
        self.keep = holds_complete_result(out_dir / name)   # a complete result is there
        self.progress = partial_name(name) if self.keep else name

    def update(self, results: dict) -> None:
        from verify.report._atomic import atomic_write_json

        if self.keep:   # only the progress file: fewshot.md and the figure stay the complete run's
            atomic_write_json(self.out / self.progress, results)
        else:
            _write(self.out, self.name, results, final=False)

    def final(self, results: dict) -> str:
        """Write the end result; returns the file it is in."""
        if results.get("complete") or not self.keep:
            _write(self.out, self.name, results, final=True)
            if self.keep:
                (self.out / self.progress).unlink(missing_ok=True)
            return str(self.out / self.name)
        self.update(results)
        return str(self.out / self.progress)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m verify.fewshot.gpu_check",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for fewshot_gpu.json")
    parser.add_argument("--dry-run", action="store_true",
                        help="tiny sizes on the CPU (shows that the script runs as written)")
    parser.add_argument("--size", choices=tuple(SIZES), default=None,
                        help="full (GPU, default; 4 minutes), cpu (up to 20 minutes on a CPU), "
                             "dry (tiny sizes, a fixed amount of work: seconds)")
    parser.add_argument("--device", default=None,
                        help="default: cuda (cpu with --dry-run or --size cpu)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default=OUTPUT_NAME, help=f"JSON file name ({OUTPUT_NAME})")
    parser.add_argument("--progress", action="store_true", help="tqdm progress bars")
    parser.add_argument("--train-seconds", type=float, default=None,
                        help="cap of each meta-training run (default: a fair share of the time)")
    when = parser.add_mutually_exclusive_group()
    when.add_argument("--deadline", type=float, default=None,
                      help="end by this time (seconds since the epoch)")
    when.add_argument("--budget-seconds", type=float, default=None,
                      help="end within this many seconds (default per size: full 240, cpu 1200, "
                           "dry 60)")
    args = parser.parse_args(argv)
    size = args.size or ("dry" if args.dry_run else "full")
    device = args.device or ("cuda" if size == "full" else "cpu")
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device on this machine; use --dry-run for the CPU dry run",
              file=sys.stderr)
        return 2
    deadline = args.deadline
    if args.budget_seconds is not None:
        deadline = time.time() + args.budget_seconds
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # float32 means float32: no TensorFloat-32 in convolutions or matmuls (CUDA enables it for
    # cuDNN convolutions by default, which would put check 1's float32 floor near 1e-3)
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    writer = _Writer(out, args.name)
    kw = dict(device=device, size=size, seed=args.seed, progress=args.progress,
              train_seconds=args.train_seconds, deadline=deadline, on_update=writer.update)
    try:
        if device == "cpu":  # small networks: one thread each is faster and fair on shared cores
            with single_thread():
                results = run_checks(**kw)
        else:
            results = run_checks(**kw)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
    where = writer.final(results)
    failed = [k for k, v in results["verdicts"].items() if not v]
    wrote = (f"wrote {where} and {out / 'fewshot.md'}" if where == str(out / args.name) else
             f"this run did not complete: wrote it to {where}, and kept the complete result "
             f"in {out / args.name} (and its fewshot.md)")
    print(f"gpu_check: {wrote} ({results['seconds']['total']:.0f} s on {results['device']}); "
          + ("every verdict holds" if not failed else f"failed: {', '.join(failed)}")
          + ("" if results["complete"] else f"; skipped: {', '.join(results['parts_skipped'])}"))
    return 0 if results["complete"] and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
