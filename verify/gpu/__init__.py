"""``imaml-verify gpu``: all GPU evidence in one budgeted run (:mod:`verify.gpu.command`), the
batched-CG bandwidth measurement (:mod:`verify.gpu.bandwidth`) and the run's REPORT.md
(:mod:`verify.gpu.report`)."""
from verify.gpu.command import STAGES, add_parser, run, run_gpu

__all__ = ["STAGES", "add_parser", "run", "run_gpu"]
