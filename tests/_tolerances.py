"""Comparisons used by the tests of theory/ and solvers/.

Every allowance here comes from :mod:`theory.tolerances` (eps · dim · κ · scale); nothing in the
tests is a literal tolerance. What the tests choose is the *scale*: the magnitude of the largest
quantity the compared computation passes through, bounded with the task's own (uniform) constants.
"""
from __future__ import annotations

import numpy as np
from array_api_compat import device, is_torch_array

from theory import to_numpy64
from theory.tolerances import machine_epsilon, relative_tolerance, rounding_allowance
from validation import dtype_name

__all__ = ["to_numpy64", "gap", "assert_within_rounding", "assert_like", "dtype_name",
           "solution_scale", "gradient_scale", "machine_epsilon", "relative_tolerance",
           "rounding_allowance"]

def gap(a, b) -> float:
    """‖a − b‖ computed in float64 (arrays of either library, any device)."""
    return float(np.linalg.norm(to_numpy64(a) - to_numpy64(b)))


def assert_within_rounding(actual, expected, *, dtype, kappa=1.0, scale, dim, what="result",
                           roundings=1):
    """‖actual − expected‖ ≤ roundings · rounding_allowance(dtype, kappa, scale, dim).

    ``roundings`` counts the independently rounded computations compared: 1 against an exact
    (float64, better-conditioned) reference, 2 when both sides are rounded in ``dtype``."""
    err = gap(actual, expected)
    allowance = roundings * rounding_allowance(dtype, kappa=max(float(kappa), 1.0),
                                               scale=float(scale), dim=int(dim))
    assert err <= allowance, (f"{what}: ‖actual − expected‖ = {err:.3g} exceeds the rounding "
                              f"allowance {allowance:.3g} ({dtype_name(dtype)}, κ={kappa:.3g}, "
                              f"dim={dim}, scale={scale:.3g})")
    return err


def assert_like(result, like, what="result"):
    """``result`` has the array library, dtype and device of ``like``."""
    assert is_torch_array(result) == is_torch_array(like), (
        f"{what} is a {type(result).__name__}, the input a {type(like).__name__}")
    assert dtype_name(result) == dtype_name(like), (
        f"{what} has dtype {dtype_name(result)}, the input {dtype_name(like)}")
    assert device(result) == device(like), f"{what} is on {device(result)}, the input on {device(like)}"


def solution_scale(task, theta) -> float:
    """A bound on ‖Alg*(θ')‖ for every ‖θ'‖ ≤ ‖θ‖ (uniform D, docs/mathematics.md §2), and on ‖θ‖ itself: the
    size of every inner iterate a contracting solver started at θ or 0 passes through."""
    r = float(np.linalg.norm(to_numpy64(theta)))
    return max(task.constants(theta, radius=r).D, r)


def gradient_scale(task, theta) -> float:
    """A bound on ‖∇L‖ along the way (uniform B at radius ‖θ‖, docs/mathematics.md §2) plus ‖∇L̂‖ at the same
    points: the size of the right-hand side and the products that make a meta-gradient."""
    c = task.constants(theta, radius=float(np.linalg.norm(to_numpy64(theta))))
    inner_grad_bound = (c.beta - c.lam) * c.D + float(np.linalg.norm(to_numpy64(task.b)))
    return c.B + inner_grad_bound
