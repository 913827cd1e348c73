"""What is CHECKED: task families, Hypothesis strategies, one check per claim, the figures, the
report, and the `imaml-verify` command. verify imports theory and solvers.

``verify.run(...)`` runs a verification and returns its results document (see
:func:`verify.runner.run`)."""
from verify.checks._result import CheckResult, compare
from verify.registry import CLAIMS, RunContext, all_claims, claim
from verify.runner import UsageError, run
from verify.tasks import TaskSpec, paper_synthetic_task, planted_spectrum_task

__all__ = [
    "CLAIMS",
    "CheckResult",
    "RunContext",
    "TaskSpec",
    "UsageError",
    "all_claims",
    "claim",
    "compare",
    "paper_synthetic_task",
    "planted_spectrum_task",
    "run",
]
