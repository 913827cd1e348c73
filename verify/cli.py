"""Placeholder command line: runs every registered claim and prints a table.
(The full `imaml-verify` command replaces this module.)"""
from __future__ import annotations

import argparse
import sys

from verify.registry import RunContext, all_claims


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="imaml-verify")
    parser.add_argument("command", nargs="?", default="run", choices=["run"])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    ctx = RunContext(seed=args.seed, quick=args.quick)
    failed = 0
    print(f"{'claim':<28}{'instances':>10}{'worst ratio':>14}  result")
    for name, c in all_claims().items():
        results = c.run(ctx)
        worst = max(results, key=lambda r: r.ratio if r.relation == "<=" else -r.ratio)
        ok = all(r.passed for r in results)
        failed += not ok
        print(f"{name:<28}{len(results):>10}{worst.ratio:>14.4g}  {'PASS' if ok else 'FAIL'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
