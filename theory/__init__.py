"""What is TRUE: closed-form references and the bounds of the iMAML appendix, as pure functions.

theory imports neither solvers nor verify."""
from theory import bounds, maml
from theory.bounds import (
    Certificate,
    aposteriori_bound,
    certify,
    cg_error_bound,
    corollary1_calls,
    lemma2_steps,
    lemma3_bound,
    lemma3_bound_sharp,
    theorem2_steps,
)
from theory.constants import Constants
from theory.logistic import LogisticTask
from theory.quadratic import QuadraticTask
from theory._arrays import to_numpy64
from theory.tolerances import machine_epsilon, rounding_allowance

__all__ = [
    "bounds",
    "Certificate",
    "Constants",
    "LogisticTask",
    "QuadraticTask",
    "aposteriori_bound",
    "certify",
    "cg_error_bound",
    "corollary1_calls",
    "lemma2_steps",
    "lemma3_bound",
    "lemma3_bound_sharp",
    "machine_epsilon",
    "maml",
    "rounding_allowance",
    "theorem2_steps",
    "to_numpy64",
]
