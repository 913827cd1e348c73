"""``imaml-verify fewshot ...``: meta-train, evaluate and check few-shot learners.

    imaml-verify fewshot train --method imaml_gd --dataset glyphs --out runs/glyphs-gd
    imaml-verify fewshot train --paper --dataset omniglot --data-root ~/omniglot --n-way 20
    imaml-verify fewshot evaluate --out runs/glyphs-gd --episodes 600
    imaml-verify fewshot check [--dry-run] [--out reports/fewshot]

``train`` checkpoints to OUT/checkpoint.pt and resumes from it when it exists (``--fresh``
starts over); at the end it evaluates on held-out classes and writes OUT/train.json.
``check`` runs the integration checks (``imaml-verify gpu``'s fewshot stage) and writes
OUT/results.json and OUT/fewshot.md (the report's few-shot section); a complete result there is
never replaced by a run that does not complete (its progress goes to OUT/results.partial.json).
"""
from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

__all__ = ["add_parser", "run", "make_samplers"]

DATASETS = ("glyphs", "omniglot", "miniimagenet", "sinusoid")


def add_parser(subparsers):
    """Register the ``fewshot`` command on an argparse sub-parsers object."""
    from verify.fewshot.train import METHODS

    p = subparsers.add_parser("fewshot", help="few-shot meta-training, evaluation, GPU check")
    sub = p.add_subparsers(dest="fewshot_command", metavar="{train,evaluate,check}")
    sub.required = True

    def data_options(q):
        q.add_argument("--dataset", choices=DATASETS, default="glyphs",
                       help="glyphs: embedded, NOT Omniglot (default); omniglot/miniimagenet "
                            "need --data-root")
        q.add_argument("--data-root", default=None, help="local folder of Omniglot/Mini-ImageNet")
        q.add_argument("--image-size", type=int, default=None,
                       help="glyph image size (default 28)")
        q.add_argument("--glyph-classes", type=int, nargs=2, default=(1200, 423),
                       metavar=("TRAIN", "TEST"), help="glyph classes (default 1200 423)")
        q.add_argument("--device", default="cpu")
        q.add_argument("--seed", type=int, default=0)
        q.add_argument("--no-progress", action="store_true")

    t = sub.add_parser("train", help="meta-train (resumable), then evaluate")
    t.add_argument("--method", choices=METHODS, default="imaml_gd")
    t.add_argument("--paper", action="store_true",
                   help="Appendix F.2 settings for the dataset (Omniglot settings for glyphs)")
    for name, typ in (("n-way", int), ("k-shot", int), ("k-query", int), ("inner-steps", int),
                      ("inner-lr", float), ("lam", float), ("cg-steps", int),
                      ("meta-batch", int), ("meta-steps", int), ("outer-lr", float),
                      ("filters", int), ("layers", int)):
        t.add_argument(f"--{name}", type=typ, default=None)
    t.add_argument("--dtype", choices=("float32", "float64"), default=None)
    t.add_argument("--checkpoint-every", type=int, default=None)
    t.add_argument("--eval-episodes", type=int, default=600)
    t.add_argument("--out", required=True, help="run folder (checkpoint.pt, train.json)")
    t.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint")
    data_options(t)

    e = sub.add_parser("evaluate", help="evaluate a run's checkpoint on held-out classes")
    e.add_argument("--out", required=True, help="the run folder given to train")
    e.add_argument("--episodes", type=int, default=600)
    data_options(e)

    c = sub.add_parser("check", help="the few-shot integration checks (imaml-verify gpu's "
                                     "fewshot stage)")
    c.add_argument("--out", default="reports/fewshot")
    c.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU")
    c.add_argument("--size", choices=("full", "cpu", "dry"), default=None,
                   help="full (GPU, default; its budget is 4 minutes), cpu (up to 20 minutes on "
                        "a CPU: its time budget), dry (tiny sizes, a fixed amount of work: "
                        "seconds). A complete result in --out is never replaced by one that did "
                        "not finish (that one goes to results.partial.json)")
    c.add_argument("--device", default=None, help="default cuda (cpu with --dry-run)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--no-progress", action="store_true")
    return p


def make_samplers(args, cfg):
    """(meta-training sampler, held-out sampler) for ``args.dataset``."""
    from verify.fewshot.data import load_miniimagenet, load_omniglot
    from verify.fewshot.episodes import EpisodeSampler
    from verify.fewshot.glyphs import glyph_splits
    from verify.fewshot.sinusoid import SinusoidSampler

    if args.dataset == "sinusoid":
        return (SinusoidSampler(cfg.k_shot, cfg.k_query, seed=args.seed),
                SinusoidSampler(cfg.k_shot, cfg.k_query, seed=args.seed + 1))
    if args.dataset in ("omniglot", "miniimagenet") and not args.data_root:
        raise SystemExit(f"imaml-verify fewshot: --data-root is required for {args.dataset} "
                         f"(nothing is downloaded)")
    if args.dataset == "glyphs":
        n_train, n_test = args.glyph_classes
        train, test = glyph_splits(n_train, n_test, image_size=args.image_size or 28,
                                   seed=args.seed)
    elif args.dataset == "omniglot":
        train, test = load_omniglot(args.data_root, seed=args.seed)
    else:
        train = load_miniimagenet(args.data_root, split="train")
        test = load_miniimagenet(args.data_root, split="test")
    return (EpisodeSampler(train, cfg.n_way, cfg.k_shot, cfg.k_query, seed=args.seed),
            EpisodeSampler(test, cfg.n_way, cfg.k_shot, cfg.k_query, seed=args.seed + 1))


def _config(args):
    from verify.fewshot.train import TrainConfig, paper_config

    over = {k: getattr(args, k) for k in ("n_way", "k_shot", "k_query", "inner_steps",
                                           "inner_lr", "lam", "cg_steps", "meta_batch",
                                           "meta_steps", "outer_lr", "filters", "layers",
                                           "dtype", "checkpoint_every")
            if getattr(args, k) is not None}
    over.update(method=args.method, seed=args.seed, device=args.device)
    if args.paper:
        ds = "miniimagenet" if args.dataset == "miniimagenet" else "omniglot"
        return paper_config(ds, **over)
    if args.dataset == "sinusoid":
        over.setdefault("n_way", 1)
        over.setdefault("k_shot", 10)
        over.setdefault("k_query", 10)
        over.setdefault("inner_lr", 0.01)
    return TrainConfig(**over)


def _train(args) -> int:
    from verify.fewshot.train import evaluate, meta_train

    cfg = _config(args)
    out = Path(args.out)
    ckpt = out / "checkpoint.pt"
    if args.fresh and ckpt.exists():
        ckpt.unlink()
    train_s, test_s = make_samplers(args, cfg)
    run = meta_train(cfg, train_s, checkpoint=ckpt, progress=not args.no_progress)
    ev = evaluate(cfg, run.theta, test_s, episodes=args.eval_episodes,
                  progress=not args.no_progress)
    doc = {"config": cfg.as_dict(), "dataset": args.dataset, "resumed_from": run.resumed_from,
           "evaluation": ev.as_dict(), "history": run.history}
    (out / "train.json").write_text(json.dumps(doc, indent=2))
    print(f"{cfg.method}: held-out {ev.metric} {ev.mean:.4f} ± {ev.ci95:.4f} over {ev.n} "
          f"episodes ({len(run.history)} meta-steps; {out / 'train.json'})")
    return 0


def _evaluate(args) -> int:
    import torch

    from verify.fewshot.train import TrainConfig, evaluate

    ckpt = Path(args.out) / "checkpoint.pt"
    if not ckpt.exists():
        raise SystemExit(f"imaml-verify fewshot: no checkpoint at {ckpt}")
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    cfg = replace(TrainConfig.from_dict(state["config"]), device=args.device)
    _, test_s = make_samplers(args, cfg)
    ev = evaluate(cfg, state["theta"], test_s, episodes=args.episodes,
                  progress=not args.no_progress)
    print(json.dumps({**ev.as_dict(), "step": state["step"]}))
    return 0


def _check(args) -> int:
    from verify.fewshot import gpu_check

    argv = ["--out", args.out, "--seed", str(args.seed), "--name", "results.json"]
    argv += ["--dry-run"] if args.dry_run else []
    argv += ["--size", args.size] if args.size else []
    argv += ["--device", args.device] if args.device else []
    argv += [] if args.no_progress else ["--progress"]
    return gpu_check.main(argv)


def run(args) -> int:
    """Run the ``fewshot`` command parsed by :func:`add_parser` (a seed outside 0..2**32 - 1 is
    a usage error: exit 2, nothing run)."""
    from validation import check_seed

    try:
        check_seed(args.seed, "--seed")
    except (TypeError, ValueError) as exc:
        print(f"imaml-verify fewshot: error: {exc}", file=sys.stderr)
        return 2
    handler = {"train": _train, "evaluate": _evaluate, "check": _check}[args.fewshot_command]
    try:
        return handler(args)
    except KeyboardInterrupt:
        print(f"imaml-verify fewshot {args.fewshot_command}: interrupted; what was complete "
              f"before is kept (an unfinished check is in results.partial.json)", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    import argparse

    parser = argparse.ArgumentParser(prog="fewshot")
    add_parser(parser.add_subparsers(dest="command"))
    sys.exit(run(parser.parse_args(["fewshot", *sys.argv[1:]])))
