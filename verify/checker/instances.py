"""The instances the checker draws: everything that reproduces one task and one θ.

An :class:`Instance` is a small frozen record (family, d, κ, λ, query kind, spectrum, scales of b
and θ, the direction of θ, a seed). :func:`build` turns it into ``(task, theta)`` in the requested
array library, dtype and device; :func:`draw` is the checker's seeded stream of them (instance i
of seed s depends on (s, i) alone), :func:`shrink` simplifies a failing one, and
:func:`instances` offers the same distribution as a Hypothesis strategy. The distribution is chosen so that defects which show only in part of the space become
visible: λ away from 1 (0.03 to 40), d from 1 to 40 (and the paper's d = 50), κ from 1 to 1e5,
b and b_query zero or of norms 1e-3 to 1e3, ‖θ‖ from 0 to 1e4, query losses that share A's
eigenvectors, reverse them, have their own, or equal the inner loss, θ along A's extreme
eigenvectors or placed so that ∇L(Alg*(θ)) nearly cancels (docs/mathematics.md §2, §9).
"""
from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, fields, replace

import numpy as np

from theory.quadratic import QuadraticTask
from verify.tasks import logistic_task, paper_synthetic_task, planted_spectrum, to_array

__all__ = ["Instance", "build", "draw", "instances", "simpler", "shrink", "corner_instances",
           "diagnostic_instances", "sample", "FAMILIES", "THETA_KINDS"]

FAMILIES = ("planted", "paper", "logistic")
# the options of each field, the plainest first (shrinking moves towards the front)
THETA_KINDS = ("random", "bottom", "top", "cancel", "zero")
LAMBDAS = (0.37, 1.0, 2.5, 0.05, 7.0, 40.0, 0.03, 13.0)
SCALES = (1.0, 0.0, 1e-3, 30.0, 1e3)
QUERIES = ("independent", "shared", "reversed", "same")
SPECTRA = ("uniform", "log", "random", "endpoints")
FLOORS = (0.0, 0.5, 3.0)
THETA_SCALES = (1.0, 0.0, 1e-2, 1e2, 1e4)
PAPER_THETA_SCALES = (1.0, 0.0, 1e2)
PAPER_THETA_KINDS = ("random", "bottom", "top", "cancel")
LOGISTIC_LAMBDAS = LAMBDAS[:6]
LOGISTIC_THETA_SCALES = (1.0, 0.0, 10.0)
LOGISTIC_THETA_KINDS = ("random", "bottom", "top", "zero")
DATA_SCALES = (1.0, 3.0, 0.3)


@dataclass(frozen=True)
class Instance:
    """One checker instance. ``floor``: λmin(A) as a multiple of λ (0: A singular); ``b_scale``
    and ``query_b_scale``: the norms of b and b_query relative to a standard normal draw;
    ``theta_scale``: ‖θ‖ (for ``theta_kind`` 'random', 'bottom', 'top'); ``theta_kind``: 'random',
    'bottom'/'top' (θ along A's bottom / top eigenvector), 'cancel' (θ puts Alg*(θ) near the
    query loss's minimiser, so the meta-gradient is a small difference of large terms) or
    'zero'. ``n`` and ``n_query``: data sizes of the logistic family (``data_scale`` ≈ ‖xⱼ‖)."""

    family: str = "planted"
    dim: int = 4
    kappa: float = 10.0
    lam: float = 1.0
    query: str = "independent"
    spectrum: str = "uniform"
    floor: float = 0.0
    b_scale: float = 1.0
    query_b_scale: float = 1.0
    theta_scale: float = 1.0
    theta_kind: str = "random"
    seed: int = 0
    n: int = 0
    n_query: int = 0
    data_scale: float = 1.0

    def as_dict(self) -> dict:
        """The fields that matter for this family (the others keep their defaults)."""
        out = asdict(self)
        if self.family != "logistic":
            for k in ("n", "n_query", "data_scale"):
                out.pop(k)
        if self.family != "planted":
            for k in ("kappa", "query", "spectrum", "floor", "b_scale", "query_b_scale"):
                out.pop(k)
        return out

    def __repr__(self) -> str:
        defaults = Instance()
        shown = {k: v for k, v in self.as_dict().items()
                 if k in ("family", "dim", "lam", "seed") or v != getattr(defaults, k)}
        return "Instance(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"

    @classmethod
    def from_dict(cls, d: dict) -> "Instance":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _orthogonal(rng, dim):
    q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
    return q * np.sign(np.diag(r))


def _quadratic_data(inst: Instance):
    """(A, b, A_query, b_query) in float64 for the 'planted' family."""
    rng = np.random.default_rng(inst.seed)
    d = inst.dim
    kappa = inst.kappa if d > 1 else 1.0
    # λmin(A) = f: the spectrum of A − fI planted for λ + f has the same κ and starts at 0
    f = inst.floor * inst.lam
    s = f + planted_spectrum(d, kappa, inst.lam + f, kind=inst.spectrum, rng=rng)
    Q = _orthogonal(rng, d)
    A = (Q * s) @ Q.T
    b = inst.b_scale * rng.standard_normal(d)
    t = np.sort(rng.uniform(0.1, 1.0, d)) * (s[-1] + inst.lam)
    if inst.query == "same":
        Aq, bq = A, b
    else:
        bq = inst.query_b_scale * rng.standard_normal(d)
        if inst.query == "independent":
            Q2 = _orthogonal(rng, d)
            Aq = (Q2 * t) @ Q2.T
        else:
            Aq = (Q * (t if inst.query == "shared" else t[::-1])) @ Q.T
    sym = lambda M: (M + M.T) / 2  # noqa: E731
    return sym(A), b, sym(Aq), bq


def _theta(inst: Instance, task64, rng):
    d = task64.dim
    if inst.theta_kind == "zero":
        return np.zeros(d)
    if inst.theta_kind == "cancel":
        # Alg*(θ) = φ_t where φ_t nearly minimises the query loss: ∇L(φ*) is then a small
        # difference of large terms (Aₜφ* against bₜ), the hardest case for rounding
        Aq, bq = _np(task64.A_query), _np(task64.b_query)
        phi_t = -np.linalg.lstsq(Aq, bq, rcond=None)[0]
        phi_t = phi_t + 1e-3 * np.linalg.norm(phi_t) * rng.standard_normal(d) / math.sqrt(d)
        if inst.theta_scale > 0:
            phi_t = phi_t + inst.theta_scale * rng.standard_normal(d) / math.sqrt(d) * 1e-3
        A, b = _np(task64.A), _np(task64.b)
        return (A @ phi_t + inst.lam * phi_t + b) / inst.lam
    if inst.theta_kind in ("bottom", "top"):
        w, V = np.linalg.eigh(_hessian_at(task64, np.zeros(d)))
        u = V[:, 0 if inst.theta_kind == "bottom" else -1]
        return inst.theta_scale * u
    u = rng.standard_normal(d)
    return inst.theta_scale * u / max(np.linalg.norm(u), 1e-300)


def _np(x):
    return np.asarray(x, dtype=np.float64)


def _hessian_at(task64, phi):
    return _np(task64.A) if isinstance(task64, QuadraticTask) else task64.hessian(phi)


def build(inst: Instance, *, backend: str = "numpy", device: str = "cpu", dtype: str = "float64"):
    """(task, theta) of an instance: a :class:`theory.QuadraticTask` ('planted', 'paper') or a
    :class:`theory.LogisticTask` ('logistic'), with θ, as NumPy arrays or torch tensors of
    ``dtype`` on ``device``. The same instance gives the same numbers in every library."""
    if backend not in ("numpy", "torch"):
        raise ValueError(f"backend must be 'numpy' or 'torch', got {backend!r}")
    task64 = build64(inst)
    rng = np.random.default_rng([inst.seed, 1])
    theta = _theta(inst, task64, rng)
    conv = lambda x: to_array(x, array=backend, dtype=dtype, device=device)  # noqa: E731
    if inst.family == "logistic":
        from theory.logistic import LogisticTask

        task = LogisticTask(*(conv(a) for a in (task64._X64, task64._y64, task64._Xq64,
                                                task64._yq64)), inst.lam)
    else:
        task = QuadraticTask(*(conv(_np(a)) for a in (task64.A, task64.b, task64.A_query,
                                                      task64.b_query)), inst.lam,
                             psd_rtol=task64.psd_rtol if dtype == "float64" else None)
    return task, conv(theta)


def build64(inst: Instance):
    """The instance's task as float64 NumPy arrays (the reference's copy)."""
    if inst.family == "planted":
        return QuadraticTask(*_quadratic_data(inst), inst.lam)
    if inst.family == "paper":
        return QuadraticTask(*(a.copy() for a in _paper_data(inst.seed)), 5.0)
    if inst.family == "logistic":
        task, _ = logistic_task(max(inst.n, 1), inst.dim, inst.lam, seed=inst.seed,
                                n_query=max(inst.n_query, 1), scale=inst.data_scale)
        return task
    raise ValueError(f"family must be one of {FAMILIES}, got {inst.family!r}")


@functools.lru_cache(maxsize=16)
def _paper_data(seed):
    """(A, b, A_query, b_query) of the paper's synthetic task (a 200 × 200 QR: worth keeping)."""
    task, _ = paper_synthetic_task(seed=seed, fourier=bool(seed % 2))
    return tuple(np.array(a, dtype=np.float64) for a in (task.A, task.b, task.A_query, task.b_query))


# -- the distribution, written once ---------------------------------------------------------------
# Instances are drawn by the checker's own counter-based stream (:func:`draw`): instance i of seed
# s is a function of (s, i) alone — not of the Hypothesis version, of which modules are loaded,
# or of what was drawn before (recent Hypothesis versions mix literal constants mined from loaded
# modules into their draws). The same distribution is also offered as a Hypothesis strategy
# (:func:`instances`) for property tests of your own.
_SEED_MAX = 2**31 - 1
_KAPPA_FAVOURED = (1.0, 10.0, 1e4)
_STREAM_SALT = 0x1A3A1   #: keeps this stream apart from every other use of the same seed


class _Stream:
    """Choices from PCG64's raw 64-bit output (a stream NumPy guarantees), seeded by
    ``SeedSequence([salt, seed, index])``; nothing but integer arithmetic on those bits, so a
    (seed, index) pair gives the same instance on every machine and NumPy version."""

    def __init__(self, seed: int, index: int):
        self._bits = np.random.PCG64(np.random.SeedSequence([_STREAM_SALT, seed, index]))

    def _u64(self) -> int:
        return int(self._bits.random_raw())

    def integer(self, lo: int, hi: int) -> int:
        return lo + self._u64() % (hi - lo + 1)

    def uniform(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * ((self._u64() >> 11) * 2.0 ** -53)

    def choice(self, options):
        return options[self.integer(0, len(options) - 1)]


class _HypothesisDraw:
    """The same choices made by a Hypothesis ``draw`` (for :func:`instances`)."""

    def __init__(self, draw):
        from hypothesis import strategies as st

        self._draw, self._st = draw, st

    def integer(self, lo, hi):
        return self._draw(self._st.integers(lo, hi))

    def uniform(self, lo, hi):
        return self._draw(self._st.floats(lo, hi))

    def choice(self, options):
        return self._draw(self._st.sampled_from(options))


def _planted(c, max_dim, max_kappa):
    dim = c.integer(1, max_dim)
    if c.choice(("favoured", "log-uniform")) == "favoured":
        kappa = c.choice(_KAPPA_FAVOURED)
    else:   # log-uniform, kept to 6 digits (so that no libm's last bit of pow() shows)
        kappa = float(f"{10 ** c.uniform(0.0, 5.0):.6g}")
    kappa = 1.0 if dim == 1 else min(kappa, max_kappa)
    return Instance(
        family="planted", dim=dim, kappa=float(kappa), lam=c.choice(LAMBDAS),
        query=c.choice(QUERIES), spectrum=c.choice(SPECTRA), floor=c.choice(FLOORS),
        b_scale=c.choice(SCALES), query_b_scale=c.choice(SCALES),
        theta_scale=c.choice(THETA_SCALES), theta_kind=c.choice(THETA_KINDS),
        seed=c.integer(0, _SEED_MAX))


def _paper(c):
    return Instance(family="paper", dim=50, kappa=50.0, lam=5.0, query="independent",
                    theta_scale=c.choice(PAPER_THETA_SCALES), theta_kind=c.choice(PAPER_THETA_KINDS),
                    seed=c.integer(0, _SEED_MAX))


def _logistic(c, max_dim):
    dim = c.integer(1, min(max_dim, 12))
    return Instance(family="logistic", dim=dim, lam=c.choice(LOGISTIC_LAMBDAS),
                    theta_scale=c.choice(LOGISTIC_THETA_SCALES),
                    theta_kind=c.choice(LOGISTIC_THETA_KINDS), seed=c.integer(0, _SEED_MAX),
                    n=c.integer(2, 40), n_query=c.integer(1, 30),
                    data_scale=c.choice(DATA_SCALES))


#: weights: planted 8, logistic 4, paper 1 (its d = 50 task is the slowest to build and the
#: least varied)
_WEIGHTS = {"planted": 8, "logistic": 4, "paper": 1}


def _check_families(families) -> tuple:
    families = tuple(families)
    unknown = set(families) - set(FAMILIES)
    if unknown or not families:
        raise ValueError(f"families must be a non-empty subset of {FAMILIES}, got {families!r}")
    return families


def _instance(c, families, max_dim, max_kappa) -> Instance:
    picks = tuple(f for f in FAMILIES if f in families for _ in range(_WEIGHTS[f]))
    family = c.choice(picks)
    if family == "planted":
        return _planted(c, max_dim, max_kappa)
    if family == "logistic":
        return _logistic(c, max_dim)
    return _paper(c)


def draw(seed: int, index: int, *, families=("planted", "paper"), max_dim: int = 40,
         max_kappa: float = 1e5) -> Instance:
    """Instance ``index`` of the stream of ``seed``: a function of its arguments alone (see the
    module docstring for the distribution)."""
    families = _check_families(families)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return _instance(_Stream(int(seed), int(index)), families, max_dim, max_kappa)


def instances(*, families=("planted", "paper"), max_dim: int = 40, max_kappa: float = 1e5):
    """The same distribution as a Hypothesis strategy of :class:`Instance`, for property tests of
    your own ('paper' is the paper's synthetic regression task, d = 50, λ = 5, κ = 50). The
    checker itself draws with :func:`draw`."""
    from hypothesis import strategies as st

    families = _check_families(families)
    return st.composite(lambda d: _instance(_HypothesisDraw(d), families, max_dim, max_kappa))()


# -- shrinking --------------------------------------------------------------------------------------
def _earlier(options, value):
    """The options listed before ``value`` (simplest first), or all of them if it is not listed."""
    options = tuple(options)
    return options[:options.index(value)] if value in options else options


def simpler(inst: Instance, *, max_kappa: float = 1e5) -> list[Instance]:
    """Simpler neighbours of ``inst`` within the distribution, simplest first: smaller d, κ, n;
    and every categorical field moved to an option listed before its own (the first option of
    each is the plainest: random θ of norm 1, λ = 0.37, an independent query, ...); seed 0."""
    out: list[Instance] = []
    add = lambda **kw: out.append(replace(inst, **kw))  # noqa: E731
    if inst.family != "paper":
        for d in sorted({1, 2, inst.dim // 2, inst.dim - 1}):
            if 1 <= d < inst.dim:
                add(dim=d, **({"kappa": 1.0} if d == 1 and inst.family == "planted" else {}))
    if inst.family == "planted":
        for k in (1.0, 10.0):
            if inst.dim > 1 and k < inst.kappa and k <= max_kappa:
                add(kappa=k)
        fields_ = (("lam", LAMBDAS), ("query", QUERIES), ("spectrum", SPECTRA), ("floor", FLOORS),
                   ("b_scale", SCALES), ("query_b_scale", SCALES),
                   ("theta_scale", THETA_SCALES), ("theta_kind", THETA_KINDS))
    elif inst.family == "logistic":
        for name, lo in (("n", 2), ("n_query", 1)):
            v = getattr(inst, name)
            for w in sorted({lo, (v + lo) // 2}):
                if lo <= w < v:
                    add(**{name: w})
        fields_ = (("lam", LOGISTIC_LAMBDAS), ("theta_scale", LOGISTIC_THETA_SCALES),
                   ("theta_kind", LOGISTIC_THETA_KINDS), ("data_scale", DATA_SCALES))
    else:
        fields_ = (("theta_scale", PAPER_THETA_SCALES), ("theta_kind", PAPER_THETA_KINDS))
    for name, options in fields_:
        for v in _earlier(options, getattr(inst, name)):
            add(**{name: v})
    if inst.seed != 0:
        add(seed=0)
    return out


def shrink(inst: Instance, fails, *, budget: int, max_kappa: float = 1e5) -> Instance:
    """Greedy shrinking: move to the first simpler neighbour on which ``fails`` still holds,
    until none does or ``budget`` calls of ``fails`` are spent. Deterministic."""
    spent = 0
    improved = True
    while improved and spent < budget:
        improved = False
        for cand in simpler(inst, max_kappa=max_kappa):
            if spent >= budget:
                break
            spent += 1
            if fails(cand):
                inst, improved = cand, True
                break
    return inst


def corner_instances(*, families=("planted", "paper"), max_dim: int = 40,
                     max_kappa: float = 1e5, seed: int = 0) -> list[Instance]:
    """A fixed list of instances at the corners of the distribution (large d, large κ, λ far
    from 1, b = 0, b ≠ 0, ‖θ‖ = 1e4, every query kind, cancellation), run before the search
    so that a defect confined to a corner is seen whatever the search draws."""
    rng = np.random.default_rng([seed, 7])
    s = lambda: int(rng.integers(2**31 - 1))  # noqa: E731
    dmax = max_dim
    out = []
    if "planted" in families:
        base = Instance(family="planted", dim=min(6, dmax), kappa=30.0, lam=0.37, floor=0.5)
        for kw in (dict(), dict(dim=1, kappa=1.0, lam=2.5), dict(dim=min(2, dmax), lam=7.0),
                   dict(dim=dmax, kappa=100.0), dict(dim=min(25, dmax), kappa=1e4, lam=13.0),
                   dict(kappa=1e5, spectrum="endpoints", floor=0.0),
                   dict(query="shared"), dict(query="reversed", lam=0.05),
                   dict(query="same", lam=2.5), dict(b_scale=0.0, query_b_scale=0.0),
                   dict(b_scale=1e3, query_b_scale=1e-3), dict(theta_scale=1e4),
                   dict(theta_kind="cancel", theta_scale=1e2), dict(theta_kind="bottom", kappa=1e3),
                   dict(theta_kind="top", lam=40.0), dict(theta_kind="zero", floor=3.0),
                   dict(lam=1.0, dim=min(12, dmax)), dict(spectrum="log", kappa=3e3, lam=0.03),
                   dict(dim=min(33, dmax), kappa=7.0, lam=2.5, theta_scale=1e2)):
            inst = replace(base, seed=s(), **kw)
            out.append(replace(inst, kappa=min(inst.kappa, max_kappa) if inst.dim > 1 else 1.0))
    if "paper" in families:
        out.append(Instance(family="paper", dim=50, kappa=50.0, lam=5.0, seed=s()))
    if "logistic" in families:
        out += [Instance(family="logistic", dim=min(5, dmax), lam=0.37, n=20, n_query=15, seed=s()),
                Instance(family="logistic", dim=min(9, dmax), lam=2.5, n=8, n_query=30,
                         data_scale=3.0, theta_scale=10.0, seed=s())]
    return out


def diagnostic_instances(*, family: str = "planted") -> list[Instance]:
    """Generic instances on which the known wrong answers are far apart from each other
    (d = 7, κ = 40, λ ≠ 1, A invertible, a query loss with its own eigenvectors, b ≠ 0): a
    failing implementation is diagnosed here as well as on its own failing instance."""
    if family == "logistic":
        return [Instance(family="logistic", dim=6, lam=0.37, n=25, n_query=20, seed=11,
                         data_scale=3.0),
                Instance(family="logistic", dim=5, lam=2.5, n=30, n_query=12, seed=12,
                         data_scale=3.0, theta_scale=3.0)]
    return [Instance(family="planted", dim=7, kappa=40.0, lam=0.37, floor=0.5, seed=101),
            Instance(family="planted", dim=9, kappa=300.0, lam=3.3, floor=0.5, seed=102,
                     theta_scale=3.0, spectrum="log")]


def sample(n: int, *, seed: int = 0, **draw_kwargs) -> list[Instance]:
    """The first ``n`` instances of the stream of ``seed`` (:func:`draw`): for sweeps and tests
    that want the checker's distribution without its search."""
    return [draw(seed, i, **draw_kwargs) for i in range(n)]
