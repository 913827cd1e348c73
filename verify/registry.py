"""The registry of claims: each claim is a function from a run context to check results.

Claims register themselves with :func:`claim` when their module is imported; the command line
(`imaml-verify`) and the tests read the same registry. Importing :mod:`verify.checks` imports
every check module."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

__all__ = ["RunContext", "Claim", "CLAIMS", "claim", "all_claims"]


@dataclass
class RunContext:
    """How a claim should run: ``quick`` selects a small grid (seconds for everything);
    ``scale`` a wide one for a cluster (the planted grid with d up to 2000, κ up to 1e6 and
    ``SCALE_REPEATS`` seeds per grid point); ``array`` is 'numpy' or 'torch'; ``dtype`` 'float64'
    or 'float32'; ``device`` 'cpu'/'cuda'."""

    seed: int = 0
    quick: bool = False
    scale: bool = False
    dtype: str = "float64"
    device: str = "cpu"
    array: str = "numpy"
    extra: dict = field(default_factory=dict)

    def rng_seed(self, *salt: int) -> int:
        """A deterministic seed for one instance of a sweep."""
        import numpy as np

        return int(np.random.SeedSequence([self.seed, *salt]).generate_state(1)[0])


@dataclass(frozen=True)
class Claim:
    """name: short id; title; section: where it is stated in docs/mathematics.md ("§5"); statement: the claim in one or two lines;
    loose: what the appendix gets loose or wrong here (None when nothing); run: the sweep."""

    name: str
    title: str
    section: str
    statement: str
    run: Callable
    loose: str | None = None


CLAIMS: dict[str, Claim] = {}


def claim(name: str, *, title: str, section: str, statement: str, loose: str | None = None):
    """Decorator registering ``fn(ctx: RunContext) -> list[CheckResult]`` as a claim."""

    def register(fn):
        if name in CLAIMS:
            raise ValueError(f"claim {name!r} is registered twice")
        CLAIMS[name] = Claim(name, title, section, statement, fn, loose)
        return fn

    return register


def all_claims() -> dict[str, Claim]:
    import verify.checks  # noqa: F401  (registers every claim)

    return dict(CLAIMS)
