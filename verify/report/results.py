"""results.json: everything one run found, in the documented schema (results.schema.json)."""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import re
import sys
from dataclasses import asdict, is_dataclass
from enum import Enum
from importlib import metadata
from pathlib import Path

__all__ = ["SCHEMA_PATH", "SCHEMA_VERSION", "jsonable", "claim_record", "above_rounding", "environment",
           "summary", "load_schema", "validate", "dumps", "compact", "tool_version",
           "split_timing", "VOLATILE"]

SCHEMA_PATH = Path(__file__).with_name("results.schema.json")
SCHEMA_VERSION = 1
PACKAGES = ("imaml-verify", "numpy", "scipy", "torch", "array-api-compat", "matplotlib",
            "tqdm", "PEPit", "cvxpy", "clarabel")


def jsonable(obj):
    """Plain JSON data from results: NumPy/torch scalars and arrays become numbers and lists,
    dataclasses and enums their fields and values, non-finite floats the strings 'inf'/'nan'."""
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, Enum):
        return jsonable(obj.value)
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        if math.isfinite(obj):
            return obj
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [jsonable(v) for v in obj]
    if is_dataclass(obj) and not isinstance(obj, type):
        return jsonable(asdict(obj))
    if hasattr(obj, "detach"):                       # torch tensor
        obj = obj.detach().cpu().numpy()
    if hasattr(obj, "tolist"):                       # NumPy array or scalar
        return jsonable(obj.tolist())
    if hasattr(obj, "item"):
        return jsonable(obj.item())
    return str(obj)


def _margin(check) -> float:
    """How close a check is to failing, on one scale (> 1 fails): measured/(bound + allowance)
    for an upper bound, bound/measured for a negative control."""
    if check.relation == "<=":
        return _with_allowance(check)
    r = check.ratio
    return math.inf if r == 0 else 1.0 / r


def above_rounding(check) -> bool:
    """An upper-bound check whose bound is larger than its rounding allowance: its ratio
    measured/bound says something about the bound. (Where the bound is below the allowance,
    e.g. an equality to rounding or a bound that has decayed to 1e-30, the verdict rests on the
    allowance and measured/bound is a ratio of rounding errors.)"""
    return check.relation == "<=" and check.bound > check.allowance


def _with_allowance(check) -> float:
    """measured / (bound + allowance): how close an upper-bound check came to failing (> 1
    fails). Finite where the plain ratio is not (equalities checked to rounding: bound 0)."""
    edge = check.bound + check.allowance
    if edge == 0:
        return 0.0 if check.measured == 0 else math.inf
    return check.measured / edge


def claim_record(claim, results, *, elapsed_s: float, error: str | None = None) -> dict:
    """The results.json record of one claim from its CheckResults (or the error it raised)."""
    results = list(results or [])
    bound_checks = [r for r in results if r.relation == "<="]
    controls = [r for r in results if r.relation == ">"]
    planted = [r for r in controls if getattr(r, "kind", "claim") == "control"]
    findings = [r for r in controls if getattr(r, "kind", "claim") == "finding"]
    failed = [r for r in results if not r.passed]
    if error is not None:
        status = "ERROR"
    elif failed or not results:
        status = "FAIL"
    else:
        status = "PASS"
    if failed:
        worst = max(failed, key=_margin)
    elif results:
        worst = max(results, key=_margin)
    else:
        worst = None
    return jsonable({
        "name": claim.name, "title": claim.title, "section": claim.section,
        "statement": claim.statement, "loose": claim.loose, "status": status,
        "instances": len(results), "failed": len(failed),
        "bound_checks": len(bound_checks), "controls": len(controls),
        "worst_ratio": max((r.ratio for r in bound_checks if above_rounding(r)), default=None),
        "rounding_level_checks": sum(not above_rounding(r) for r in bound_checks),
        "worst_ratio_with_allowance": max((_with_allowance(r) for r in bound_checks), default=None),
        "weakest_control_ratio": min((r.ratio for r in planted), default=None),
        "weakest_finding_ratio": min((r.ratio for r in findings), default=None),
        "strict_claim_ratio": min((r.ratio for r in controls if r not in planted + findings),
                                  default=None),
        "worst": worst.as_dict() if worst is not None else None,
        "checks": [r.as_dict() for r in results],
        "elapsed_s": float(elapsed_s),
        "error": error if error is not None else ("no check ran" if not results else None),
    })


def compact(record: dict) -> dict:
    """A claim record for a reviewable results.json: the failing checks only (``worst`` keeps the
    one closest to failing) and the count of the others in ``checks_omitted``."""
    kept = [c for c in record["checks"] if not c["passed"]]
    return dict(record, checks=kept, checks_omitted=len(record["checks"]) - len(kept))


#: what differs between two runs of the same code with the same seed on the same machine
VOLATILE = ("created", "elapsed_s", "machine", "execution")


def split_timing(doc: dict) -> tuple[dict, dict]:
    """(the document without dates and timings, those dates and timings). The first is what
    results.json and REPORT.md hold, so that regenerating a report changes them only when the
    findings change; the second is written to run.json beside them."""
    stable = {k: v for k, v in doc.items() if k not in VOLATILE}
    timing = {k: doc[k] for k in VOLATILE if k in doc}
    stable["claims"] = [{k: v for k, v in c.items() if k != "elapsed_s"}
                        for c in doc.get("claims", [])]
    stable["figures"] = {i: {k: v for k, v in f.items() if k != "elapsed_s"}
                         for i, f in doc.get("figures", {}).items()}
    timing["claims_s"] = {c["name"]: c["elapsed_s"] for c in doc.get("claims", [])
                          if "elapsed_s" in c}
    timing["figures_s"] = {i: f["elapsed_s"] for i, f in doc.get("figures", {}).items()
                           if "elapsed_s" in f}
    return stable, timing


def summary(claim_records) -> dict:
    failed = [c["name"] for c in claim_records if c["status"] != "PASS"]
    return {"passed": not failed, "claims": len(claim_records), "failed_claims": failed,
            "checks": sum(c["instances"] for c in claim_records),
            "failed_checks": sum(c["failed"] for c in claim_records)}


def _version(name):
    if name == "imaml-verify":
        return tool_version()
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def tool_version() -> str:
    """This project's version: the installed distribution's, or, run from a source tree that was
    never installed, the version in that tree's pyproject.toml (else '0+unknown')."""
    try:
        return metadata.version("imaml-verify")
    except metadata.PackageNotFoundError:
        pass
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    try:
        text = pyproject.read_text(encoding="utf-8")
    except OSError:
        return "0+unknown"
    found = re.search(r'^version\s*=\s*"([^"]+)"', text, flags=re.M)
    return found.group(1) if found else "0+unknown"


def environment() -> dict:
    """What the numbers depend on and the lock fixes (results.json): Python's minor version, the
    package versions and whether the numerical kernels were pinned (verify._numerics)."""
    from verify._numerics import state

    return {"python": ".".join(platform.python_version_tuple()[:2]),
            "packages": {p: _version(p) for p in PACKAGES}, "numerics": state()}


def machine() -> dict:
    """What differs from machine to machine and not the numbers (run.json only)."""
    from verify._numerics import VARIABLES

    pinned = {k: os.environ.get(k) for k in VARIABLES}
    return {"python": sys.version.split()[0], "platform": platform.platform(),
            "processor": _processor(), "cpu_count": os.cpu_count(),
            "numerics_environment": {k: v for k, v in pinned.items() if v is not None}}


def _processor() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def now_utc() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def load_schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def validate(doc: dict) -> None:
    """Raise jsonschema.ValidationError when ``doc`` does not follow results.schema.json."""
    import jsonschema

    jsonschema.validate(doc, load_schema())


def dumps(doc: dict) -> str:
    return json.dumps(jsonable(doc), indent=1, ensure_ascii=False, allow_nan=False) + "\n"
