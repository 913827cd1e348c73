"""Check anyone's implicit meta-gradient (docs/checker.md).

    from verify.checker import check_meta_gradient
    report = check_meta_gradient(my_meta_gradient)          # fn(task, theta) -> array
    assert report.passed, report

:func:`check_meta_gradient` holds an implementation to the exact meta-gradient (converged mode) or
to Lemma 2/3 and CG's bounds at given budgets (budget mode) on instances drawn from a seeded stream,
shrinks a failure and names the known wrong answer it matches; :func:`check_cg` holds a CG
routine to the exact m-step Krylov iterate; :mod:`verify.checker.peers` runs both on real
libraries (``make check-peers``)."""
from verify.checker.core import (DEFAULT_TIMEOUT, CheckerArgumentError, Failure, Report,
                                 budget_bound, check_cg, check_meta_gradient, inner_distance_bound)
from verify.checker.diagnosis import Diagnosis, diagnose
from verify.checker.instances import (Instance, build, corner_instances, diagnostic_instances, draw,
                                      instances, sample)
from verify.checker.reference import converged_allowance, exact_meta_gradient, krylov_iterate

__all__ = [
    "DEFAULT_TIMEOUT",
    "CheckerArgumentError",
    "Diagnosis",
    "Failure",
    "Instance",
    "Report",
    "budget_bound",
    "build",
    "check_cg",
    "check_meta_gradient",
    "converged_allowance",
    "corner_instances",
    "diagnose",
    "diagnostic_instances",
    "draw",
    "exact_meta_gradient",
    "inner_distance_bound",
    "instances",
    "krylov_iterate",
    "sample",
]
