"""What is CHECKED: task families, Hypothesis strategies, one check per claim, and the
`imaml-verify` command. verify imports theory and solvers."""
from verify.checks._result import CheckResult, compare
from verify.registry import CLAIMS, RunContext, all_claims, claim
from verify.tasks import TaskSpec, paper_synthetic_task, planted_spectrum_task

__all__ = [
    "CLAIMS",
    "CheckResult",
    "RunContext",
    "TaskSpec",
    "all_claims",
    "claim",
    "compare",
    "paper_synthetic_task",
    "planted_spectrum_task",
]
