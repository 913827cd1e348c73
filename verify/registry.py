"""The registry of claims: each claim is a function from a run context to check results.

Claims register themselves with :func:`claim` when their module is imported; the command line
(`imaml-verify`) and the tests read the same registry. Importing :mod:`verify.checks` imports
every check module.

A claim is run in **units of work**. A claim registered with ``units=`` says which instances it
checks (``units(ctx) -> list[Unit]``, cheap: no instance is built) and checks one of them at a
time (the decorated function, ``fn(ctx, key) -> list[CheckResult]``); every other claim is one
unit. The claim's results are those of its units in their order, whoever ran them and in what
order (``Claim.run`` runs them here, one after another: the same list), so ``--jobs`` and
``--dask`` spread one claim's grid over every worker (verify.runner)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

__all__ = ["RunContext", "Claim", "Unit", "CLAIMS", "claim", "all_claims"]


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
class Unit:
    """One unit of work of a claim. ``key``: what the claim's unit function needs to rebuild and
    check its instances (small and picklable: numbers and strings, never a task); ``size``: a
    rough cost (the runner starts the largest first, so that no large unit is left for the end
    of a parallel run); ``shares``: the instance it builds, when other claims' units build the
    same one (the runner runs such units together, in one process, where the instance is built
    once: verify.checks._common.shared_instances); ``label``: what the progress bar says."""

    key: tuple | None = None
    size: float = 1.0
    shares: tuple | None = None
    label: str = ""


@dataclass(frozen=True)
class Claim:
    """name: short id; title; section: where it is stated in docs/mathematics.md ("§5"); statement: the claim in one or two lines;
    loose: what the appendix gets loose or wrong here (None when nothing); run: the sweep
    (``run(ctx) -> list[CheckResult]``, every unit here in order); units / run_unit: the claim's
    units of work and the function checking one (None: the claim is one unit)."""

    name: str
    title: str
    section: str
    statement: str
    run: Callable
    loose: str | None = None
    units: Callable | None = None
    run_unit: Callable | None = None

    #: the size of a claim that is one unit (unknown: started before every grid instance)
    WHOLE_SIZE = 1e10

    def plan(self, ctx) -> list:
        """The claim's units of work for ``ctx`` (one :class:`Unit` for a claim without units)."""
        if self.units is None:
            return [Unit(None, size=self.WHOLE_SIZE, label=self.name)]
        return list(self.units(ctx))

    def execute(self, ctx, key) -> list:
        """The results of one unit (``key`` from :meth:`plan`)."""
        return self.run(ctx) if self.units is None else self.run_unit(ctx, key)


CLAIMS: dict[str, Claim] = {}


def claim(name: str, *, title: str, section: str, statement: str, loose: str | None = None,
          units: Callable | None = None):
    """Decorator registering a claim: ``fn(ctx: RunContext) -> list[CheckResult]``, or, with
    ``units`` (``units(ctx) -> list[Unit]``), ``fn(ctx, key) -> list[CheckResult]`` checking the
    unit whose :attr:`Unit.key` is ``key``."""

    def register(fn):
        if name in CLAIMS:
            raise ValueError(f"claim {name!r} is registered twice")
        if units is None:
            CLAIMS[name] = Claim(name, title, section, statement, fn, loose)
        else:
            def run(ctx):
                return [r for u in units(ctx) for r in fn(ctx, u.key)]

            run.__name__, run.__qualname__, run.__module__ = "run", f"{name}.run", fn.__module__
            run.__doc__ = fn.__doc__
            CLAIMS[name] = Claim(name, title, section, statement, run, loose, units, fn)
        return fn

    return register


def all_claims() -> dict[str, Claim]:
    import verify.checks  # noqa: F401  (registers every claim)

    return dict(CLAIMS)
