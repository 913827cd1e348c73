"""``imaml-verify check package.module:function``: check a user's meta-gradient from the shell.

    imaml-verify check mypkg.grads:meta_gradient
    imaml-verify check mypkg.grads:algorithm2 --budget 20,5
    imaml-verify check mypkg.grads:meta_gradient --backend torch --device cuda --json
    imaml-verify check mypkg.cg:my_cg --cg 1,2,3,5

Exit status 0 when the implementation passes, 1 when it fails, 2 for a usage error (a name that
cannot be imported, a malformed budget, a device that is not there). The report goes to stdout
(``--json``: the report as JSON).
"""
from __future__ import annotations

import importlib
import sys

__all__ = ["add_parser", "run", "load"]


def add_parser(subparsers):
    """Register the ``check`` command on an argparse sub-parsers object."""
    p = subparsers.add_parser(
        "check", help="check your meta-gradient (or CG) implementation: module:function",
        description="Check an implementation of iMAML's meta-gradient against exact answers "
                    "(docs/checker.md). fn(task, theta) claims the converged meta-gradient; "
                    "with --budget K,M, fn(task, theta, inner_steps=K, cg_steps=M) claims "
                    "Algorithm 2; with --cg, fn(matvec, rhs, m) claims m CG steps from 0.")
    p.add_argument("target", metavar="module:function",
                   help="the implementation, e.g. mypkg.grads:meta_gradient (importable from the "
                        "current directory)")
    p.add_argument("--budget", default=None, metavar="K,M",
                   help="budget mode: K inner steps from theta and M CG steps from 0")
    p.add_argument("--cg", default=None, metavar="M1,M2,...",
                   help="check a CG routine cg(matvec, rhs, m) at these step counts instead")
    p.add_argument("--backend", default="numpy", choices=["numpy", "torch"])
    p.add_argument("--device", default="cpu", help="cpu or cuda (needs --backend torch)")
    p.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    p.add_argument("--family", action="append", default=None, choices=["planted", "paper", "logistic"],
                   help="task families to draw (repeatable; default planted and paper, plus "
                        "logistic with --backend torch)")
    p.add_argument("--inner", default="any", choices=["any", "nesterov", "gd"],
                   help="budget mode: the inner method whose rate bounds the inner error")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-examples", type=int, default=None,
                   help="instances drawn after the fixed corners (default 100; 25 with --budget)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    return p


def load(target: str):
    """The callable named by 'package.module:function' (or 'package.module:Class.method');
    the current directory is importable, as with ``python -m``."""
    if ":" not in target:
        raise ValueError(f"expected module:function, got {target!r}")
    module_name, _, attr = target.partition(":")
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {module_name!r}: {exc}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"{module_name!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise ValueError(f"{target!r} is not callable")
    return obj


def _ints(text, what, n=None):
    try:
        values = [int(x) for x in text.split(",")]
    except ValueError:
        raise ValueError(f"{what} must be comma-separated integers, got {text!r}") from None
    if (n is not None and len(values) != n) or any(v < 0 for v in values):
        raise ValueError(f"{what} must be {n or 'some'} non-negative integers, got {text!r}")
    return values


def run(args) -> int:
    """Run the ``check`` command; returns the exit status (0 pass, 1 fail, 2 usage error)."""
    from verify.checker import check_cg, check_meta_gradient

    try:
        fn = load(args.target)
        if args.budget and args.cg:
            raise ValueError("--budget and --cg exclude each other")
        if args.cg:
            report = check_cg(fn, _ints(args.cg, "--cg"), backend=args.backend,
                              device=args.device, dtype=args.dtype, seed=args.seed,
                              **({"max_examples": args.max_examples} if args.max_examples is not None else {}))
        else:
            budget = _ints(args.budget, "--budget", 2) if args.budget else (None, None)
            report = check_meta_gradient(fn, inner_steps=budget[0], cg_steps=budget[1],
                                         backend=args.backend, device=args.device,
                                         dtype=args.dtype, seed=args.seed,
                                         max_examples=args.max_examples, families=args.family,
                                         inner=args.inner)
    except ValueError as exc:
        print(f"imaml-verify check: error: {exc}", file=sys.stderr)
        return 2
    print(report.to_json() if args.json else str(report))
    return 0 if report.passed else 1
