"""The constants of Assumption 2 (docs/mathematics.md §0)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

__all__ = ["Constants"]


@dataclass(frozen=True)
class Constants:
    """Constants of Assumption 2 for one task, on a stated domain.

    beta, mu: mu I <= H + lam I <= beta I (G(., theta) is beta-smooth, mu-strongly convex).
    kappa = beta / mu. L: Lipschitz constant of grad L (outer loss). B: bound on ||grad L||.
    rho: Lipschitz constant of the inner Hessian. D: bound on ||Alg*(theta)||. lam: lambda.
    scope: "instance" (tightest values for one theta) or "uniform" (valid on ||theta|| <= radius).
    """

    beta: float
    mu: float
    kappa: float
    L: float
    B: float
    rho: float
    D: float
    lam: float
    scope: str = "instance"
    radius: float | None = None

    def __post_init__(self):
        for name in ("beta", "mu", "L", "B", "rho", "D", "lam"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"constant {name} must be finite and >= 0, got {value!r}")
        if self.mu <= 0 or self.lam <= 0:
            raise ValueError(f"mu and lam must be > 0, got mu={self.mu!r}, lam={self.lam!r}")
        if self.scope not in ("instance", "uniform"):
            raise ValueError(f"scope must be 'instance' or 'uniform', got {self.scope!r}")

    def as_dict(self) -> dict:
        return asdict(self)
