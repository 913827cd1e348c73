"""Input validation shared by ``theory`` and ``solvers``.

A leaf package (it imports neither) so that the rule "solvers never see theory" holds while both
reject bad input with the same clear, argument-naming errors.
"""
from validation._checks import (
    MAX_SEED,
    check_array,
    check_finite,
    check_kappa,
    check_lam,
    check_positive,
    check_same_namespace,
    check_seed,
    check_steps,
    check_symmetric_psd,
    check_tolerances,
    dtype_name,
    real_number,
    symmetry_tolerance,
)

__all__ = [
    "MAX_SEED",
    "check_array",
    "check_finite",
    "check_kappa",
    "check_lam",
    "check_positive",
    "check_same_namespace",
    "check_seed",
    "check_steps",
    "check_symmetric_psd",
    "check_tolerances",
    "dtype_name",
    "real_number",
    "symmetry_tolerance",
]
