"""One result type for every check (anchor: PEPit's (pepit_tau, theoretical_tau))."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

__all__ = ["CheckResult", "compare"]


@dataclass
class CheckResult:
    """Outcome of checking one claim on one instance.

    claim: short id ("lemma3"); section: where the claim is stated in docs/mathematics.md; statement: what was checked;
    measured, bound: the two numbers compared; relation: "<=" (a bound that must hold) or ">"
    (a negative control that must exceed the bound); allowance: the rounding allowance added to
    the bound (theory.tolerances); passed; instance: parameters and seed that reproduce it;
    details: anything else worth reporting; kind: what the check is — "claim" (a statement the
    suite verifies), "control" (a planted defect that must be caught: the check can fail) or
    "finding" (a statement of the appendix as written, shown wrong or loose)."""

    claim: str
    section: str
    statement: str
    measured: float
    bound: float
    passed: bool
    relation: str = "<="
    allowance: float = 0.0
    instance: dict = field(default_factory=dict)
    details: dict = field(default_factory=dict)
    kind: str = "claim"

    @property
    def ratio(self) -> float:
        """measured / bound (inf when the bound is 0 and measured is not)."""
        if self.bound == 0:
            return 0.0 if self.measured == 0 else math.inf
        return self.measured / self.bound

    def as_dict(self) -> dict:
        out = asdict(self)
        out["ratio"] = self.ratio
        return out

    def __str__(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        return (f"[{verdict}] {self.claim} ({self.section}): measured {self.measured:.4g} "
                f"{self.relation} bound {self.bound:.4g} (ratio {self.ratio:.4g}, "
                f"allowance {self.allowance:.2g}) on {self.instance}")


KINDS = ("claim", "control", "finding")


def compare(claim, section, statement, measured, bound, *, allowance=0.0, relation="<=",
            instance=None, details=None, kind=None) -> CheckResult:
    """Judge ``measured <= bound + allowance`` (or, for relation '>', ``measured > bound``);
    ``kind`` is "claim", "control" (planted defect) or "finding" (about the appendix); by
    default "control" for relation '>' and "claim" for '<='."""
    if kind is None:
        kind = "control" if relation == ">" else "claim"
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    measured, bound = float(measured), float(bound)
    if relation == "<=":
        passed = math.isfinite(measured) and measured <= bound + allowance
    elif relation == ">":
        passed = math.isfinite(measured) and measured > bound
    else:
        raise ValueError(f"relation must be '<=' or '>', got {relation!r}")
    return CheckResult(claim, section, statement, measured, bound, passed, relation, allowance,
                       dict(instance or {}), dict(details or {}), kind)
