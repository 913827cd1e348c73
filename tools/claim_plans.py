"""The plan of every claim, pinned: which instances it checks and which statements it makes,
in quick mode (seed 1, what tests/test_claims.py runs) and in full mode (seed 0, what
`make report` runs). A claim's plan is the list of its results' (statement, relation, kind,
instance, verdict, and the exact part of its details: the step counts and other integers,
booleans and strings the report shows), the instance's numbers to 9 significant digits; the
pin keeps, per claim and mode,
the number of results, how many results make each statement, and a SHA-256 digest of the whole
list, computed with the report's pinned numerical kernels (verify._numerics: a step count at
a threshold can differ by one with another BLAS thread count). The evidence behind REPORT.md
cannot then change silently — a different grid, seed,
family, or a result dropped — and a deliberate change is one regeneration:

    .venv/bin/python tools/claim_plans.py --write      # rewrites tests/data/claim_plans.json
"""
from __future__ import annotations

import hashlib
import json
import math
import sys
from pathlib import Path

PLANS = Path(__file__).resolve().parent.parent / "tests" / "data" / "claim_plans.json"
MODES = {"quick": dict(quick=True, seed=1), "full": dict(quick=False, seed=0)}


def _canonical(x):
    if isinstance(x, dict):
        return {str(k): _canonical(v) for k, v in sorted(x.items(), key=lambda kv: str(kv[0]))}
    if isinstance(x, (list, tuple)):
        return [_canonical(v) for v in x]
    if isinstance(x, bool) or x is None or isinstance(x, str):
        return x
    if hasattr(x, "item") and not hasattr(x, "__len__"):      # NumPy / torch scalars
        x = x.item()
    if isinstance(x, int):
        return x
    if isinstance(x, float):
        return x if not math.isfinite(x) or x == 0 else float(f"{x:.9g}")
    return str(x)


def _exact_part(x):
    """The parts of a result's details that are exact on every machine: integers (step counts,
    counts), booleans, strings and None, in lists and dicts; floats (which may differ in their
    last bits between processors) are left out."""
    if isinstance(x, dict):
        out = {str(k): _exact_part(v) for k, v in sorted(x.items(), key=lambda kv: str(kv[0]))}
        return {k: v for k, v in out.items() if v is not _FLOAT}
    if isinstance(x, (list, tuple)):
        return [_exact_part(v) for v in x]
    if hasattr(x, "item") and not hasattr(x, "__len__"):
        x = x.item()
    if isinstance(x, bool) or x is None or isinstance(x, (int, str)):
        return x
    return _FLOAT


_FLOAT = "<float>"


def plan(results) -> list:
    """Per result: statement, relation, kind, the instance (numbers to 9 digits), the verdict
    and the exact part of its details (:func:`_exact_part`)."""
    return [[r.statement, r.relation, r.kind, _canonical(r.instance), bool(r.passed),
             _exact_part(r.details)] for r in results]


def summary(results) -> dict:
    p = plan(results)
    statements: dict = {}
    for s, *_ in p:
        statements[s] = statements.get(s, 0) + 1
    digest = hashlib.sha256(json.dumps(p, ensure_ascii=False, sort_keys=True).encode()).hexdigest()
    return {"results": len(p), "statements": statements, "digest": digest}


def pinned() -> dict:
    return json.loads(PLANS.read_text(encoding="utf-8")) if PLANS.is_file() else {}


def write() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from verify.registry import RunContext, all_claims

    out = {}
    for mode, kw in MODES.items():
        out[mode] = {name: summary(c.run(RunContext(**kw))) for name, c in sorted(all_claims().items())}
    PLANS.parent.mkdir(exist_ok=True)
    PLANS.write_text(json.dumps(out, ensure_ascii=False, indent=1, sort_keys=True) + "\n",
                     encoding="utf-8")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        raise SystemExit("usage: python tools/claim_plans.py --write")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from verify._numerics import exec_pinned, state

    if state() == "native":      # the plans of the pinned report: its step counts, its threads
        exec_pinned([sys.executable, *sys.argv])
    write()
