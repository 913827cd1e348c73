"""Exact products of a float64 matrix with exact (dyadic) vectors, on floating-point BLAS.

Every float64 is an integer times a power of two, so a float64 matrix M is an integer matrix
N·2^E (E the smallest exponent among its entries) and a dyadic vector x an integer vector X·2^F.
The product N·X is computed exactly by splitting both into signed *limbs* of w bits,
N = Σₐ Nₐ·2^(wa), X = Σ_b X_b·2^(wb), |Nₐ|, |X_b| < 2^w, with w chosen from the inner length n
so that 2w + ⌈log₂ n⌉ ≤ 52: each limb product Nₐ·X_b is then a float64 matrix product whose every
partial sum is an integer below 2^52 in magnitude, hence exact whatever order or fused
multiply-adds the BLAS uses. The limb products are recombined with Python integers. At d = 2000
that is a few float64 products of the matrix with a handful of columns instead of d² Python-
integer multiplications (about 50× faster, :func:`ExactMatrix.times`), with the same exact result
(tests/test_enclosures.py checks it against the Python-integer product on wide exponent ranges).

A matrix whose entries span so many binades that it needs more than :data:`MAX_LIMBS` limbs (a
few entries near 1e-300 next to entries near 1) is multiplied with Python integers instead:
exact either way.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["ExactMatrix", "limb_width", "MAX_LIMBS"]

#: beyond this many limbs of the matrix the Python-integer product is used (still exact)
MAX_LIMBS = 12


def limb_width(n: int) -> tuple[int, int]:
    """(bits per limb of the matrix, bits per limb of the vector) for products of inner length
    n: w_M + w_x + ⌈log₂ max(n, 2)⌉ ≤ 52, so that every partial sum of a limb product stays an
    integer of magnitude below 2^52 (exact in float64). The matrix gets about two thirds of the
    bits: it is read once per limb, and it has fewer bits than a refined vector."""
    room = 52 - math.ceil(math.log2(max(int(n), 2)))
    w = room * 2 // 3
    return w, room - w


def _int_limbs(values: np.ndarray, w: int) -> tuple[np.ndarray, int]:
    """Signed w-bit limbs of an object array of Python integers: (L × len) float64, limb a
    carrying weight 2^(wa), and L."""
    flat = values.reshape(-1)
    signs = np.array([1.0 if v >= 0 else -1.0 for v in flat])
    mags = np.array([abs(int(v)) for v in flat], dtype=object)
    top = max((int(v).bit_length() for v in mags), default=0)
    count = max(1, -(-top // w))
    mask = (1 << w) - 1
    out = np.empty((count, flat.size), dtype=np.float64)
    for a in range(count):
        out[a] = ((mags >> (w * a)) & mask).astype(np.float64) * signs
    return out, count


class ExactMatrix:
    """A float64 matrix (2-D, finite) held as w-bit limbs for exact products with dyadic vectors.

    ``times(X, F)`` returns (Y, G) with Y an object array of Python integers and Y·2^G = M·(X·2^F)
    exactly. ``integers()`` gives the matrix itself as (N, E), N an object array of Python
    integers with N·2^E = M (built on demand: what the Python-integer path needs)."""

    def __init__(self, M):
        a = np.asarray(M, dtype=np.float64)
        if a.ndim != 2:
            raise ValueError(f"an exact matrix must be 2-D, got shape {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError("a dyadic (exact) value needs finite entries")
        self.shape = a.shape
        self._a = a
        absa = np.abs(a)
        big = float(absa.max()) if a.size else 0.0
        # every float64 x is an integer multiple of its own ulp 2^(e(x) − 53), e(x) = frexp's
        # exponent; the smallest nonzero |entry| has the smallest: E, and |M|·2^-E < 2^top
        small = float(np.min(absa, where=absa > 0, initial=math.inf)) if big > 0 else 0.0
        self.E = math.frexp(small)[1] - 53 if big > 0 else 0
        top = math.frexp(big)[1] - self.E if big > 0 else 0
        self.w, self.wx = limb_width(a.shape[1])
        count = max(1, -(-top // self.w))
        self._integers = None
        if count > MAX_LIMBS:
            self._limbs = None                                # Python integers (exact)
            return
        # |M|·2^-E: integers below 2^(w·count) ≤ 2^(w·MAX_LIMBS); every step below is exact in
        # float64 (products with powers of two that neither overflow nor underflow, floors,
        # differences of integers below 2^53)
        limbs = np.empty((count,) + a.shape, dtype=np.float64)
        above, here, tmp = np.zeros(a.shape), np.empty(a.shape), np.empty(a.shape)
        for k in range(count - 1, -1, -1):
            shift = -self.E - self.w * k
            p = min(max(shift, -1022), 1023)
            np.multiply(absa, 2.0 ** p, out=here)
            if shift != p:
                here *= 2.0 ** (shift - p)
            np.floor(here, out=here)                          # ⌊|M|·2^-(E + wk)⌋
            np.multiply(above, 2.0 ** self.w, out=tmp)
            np.subtract(here, tmp, out=limbs[k])              # bits [wk, wk + w)
            above, here = here, above
        np.copysign(limbs, a, out=limbs)
        self._limbs = limbs

    @property
    def limbs(self) -> int:
        """How many limbs the matrix is held in (0: Python integers)."""
        return 0 if self._limbs is None else self._limbs.shape[0]

    def integers(self) -> tuple[np.ndarray, int]:
        """(N, E): the matrix as Python integers with one power of two, N·2^E = M exactly."""
        if self._integers is None:
            mant, exp = np.frexp(self._a.reshape(-1))
            N = (mant * 2.0 ** 53).astype(np.int64)            # exact: 53-bit mantissas
            e = exp.astype(np.int64) - 53
            shifts = np.where(N != 0, e - self.E, 0).astype(object)
            self._integers = ((N.astype(object) << shifts).reshape(self.shape), self.E)
        return self._integers

    def times(self, X: np.ndarray, F: int) -> tuple[np.ndarray, int]:
        """(Y, G) with Y·2^G = M·(X·2^F) exactly (X: an object array of Python integers, 1-D)."""
        X = np.asarray(X, dtype=object)
        if X.shape != (self.shape[1],):
            raise ValueError(f"an exact product needs a vector of length {self.shape[1]}, "
                             f"got shape {X.shape}")
        if self._limbs is None:
            N, E = self.integers()
            return N.dot(X), E + F
        xl, count = _int_limbs(X, self.wx)                      # (count × n)
        R = np.matmul(self._limbs, xl.T)                       # (L × m × count): exact integers
        R = R.astype(np.int64).astype(object)                # exact: |R| < 2^52
        out = np.zeros(self.shape[0], dtype=object)
        for a in range(R.shape[0]):
            for b in range(count):                             # weight 2^(w·a + w_x·b)
                out = out + (R[a, :, b] << (self.w * a + self.wx * b))
        return out, self.E + F
