"""The `imaml-verify` command: parse, call :func:`verify.run`, print.

    imaml-verify [run] [--quick] [--seed N] [--out DIR] [--json] [--device cpu|cuda]
                       [--dtype float64|float32] [--claim NAME ...] [--figure ID ...]
                       [--no-figures] [--full-results] [--scale] [--jobs N | --dask ADDRESS]
    imaml-verify claim NAME [NAME ...]     run only these claims (no figures)
    imaml-verify figure ID [ID ...]        compute and draw only these figures (fig1 / 1 / cg-error)
    imaml-verify list                      list the claims and figures
    imaml-verify fewshot ...               the few-shot experiment
    imaml-verify gpu [--out DIR] [--budget S] [--dry-run]   all GPU evidence
    imaml-verify check module:function     check your own meta-gradient (docs/checker.md)

Exit status: 0 when every claim that ran holds, 1 when a claim fails (or raises, or a figure
cannot be drawn, or the report cannot be written: one line naming the path, the previous report
kept), 2 for a usage error (nothing is run or written; another run writing the same ``--out``
is one), 130 when interrupted (the previous report is kept). A full run writes REPORT.md,
results.json, results.schema.json and figures/ into ``--out`` (default ``reports/``; a
``--quick`` run ``reports/quick/``, a ``--scale`` run ``reports/scale/``) as one set; a quick
run or a selection never overwrites the full report, nor another command's selection: ``claim``
writes ``reports/claim/``, ``figure`` writes ``reports/figure/``, ``run`` with ``--claim``,
``--figure`` or ``--no-figures`` writes ``reports/partial/`` (each unless ``--out`` says
otherwise).
"""
from __future__ import annotations

import argparse
import sys

__all__ = ["main", "build_parser"]

COMMANDS = ("run", "claim", "figure", "list", "fewshot", "gpu", "check")
#: where each command writes unless --out says otherwise: never the full report's folder, and
#: never another command's
DEFAULT_OUT = {"full": "reports", "quick": "reports/quick", "scale": "reports/scale",
               "run": "reports/partial", "claim": "reports/claim", "figure": "reports/figure"}


def _add_run_options(p):
    from verify import options

    options.add_arguments(p)   # every option of verify.run (verify/options.py), and --json


class _Parser(argparse.ArgumentParser):
    """argparse with a usage error in one line (exit 2), as every other usage error of the
    command (its sub-commands' parsers are of this class too)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from verify import gpu
    from verify.checker import cli as checker_cli
    from verify.fewshot import cli as fewshot_cli

    parser = _Parser(
        prog="imaml-verify",
        description="Verify the claims of the iMAML appendix and write the report.")
    sub = parser.add_subparsers(dest="command",
                                metavar="{run,claim,figure,list,fewshot,gpu,check}")
    run = sub.add_parser("run", help="every claim and figure, then the report (the default)")
    _add_run_options(run)
    run.add_argument("--claim", action="append", default=None, metavar="NAME",
                     help="run only this claim (repeatable)")
    run.add_argument("--figure", action="append", default=None, metavar="ID",
                     help="draw only this figure (repeatable)")
    run.add_argument("--no-figures", action="store_true", help="skip every figure")
    claim = sub.add_parser("claim", help="run only the named claims (writes reports/claim/)")
    claim.add_argument("names", nargs="+", metavar="NAME")
    _add_run_options(claim)
    figure = sub.add_parser("figure", help="compute and draw only the named figures (writes "
                                           "reports/figure/)")
    figure.add_argument("ids", nargs="+", metavar="ID")
    _add_run_options(figure)
    sub.add_parser("list", help="list the claims and figures")
    fewshot_cli.add_parser(sub)
    gpu.add_parser(sub)
    checker_cli.add_parser(sub)
    return parser


def _normalize(argv):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help")):
        argv = ["run", *argv]
    return argv


def _list() -> int:
    from verify.figures import FIGURES
    from verify.registry import all_claims

    print("claims:")
    for name, c in all_claims().items():
        print(f"  {name:<24} {c.section:<10} {c.title}")
    print("figures:")
    for f in FIGURES.values():
        print(f"  {f.id:<5} {f.name:<15} {f.title}")
    return 0


def request_from_args(args) -> dict:
    """The keyword arguments of :func:`verify.run` for parsed command-line options."""
    from verify.figures import FIGURES, lookup

    if args.command == "claim":
        claims, figures = args.names, []
    elif args.command == "figure":
        figures = list(args.ids)
        try:   # a figure drawn from the claims' results runs every claim
            needs_claims = any(lookup(i).needs == "claims" for i in figures)
        except KeyError:
            needs_claims = False   # the unknown id is reported by verify.run
        claims = None if needs_claims else []
    else:
        claims = args.claim
        figures = [] if args.no_figures else args.figure
        if claims is not None and figures is None:
            figures = list(FIGURES)
    from verify import options

    partial = args.command != "run" or bool(args.claim or args.figure or args.no_figures)
    values = options.from_args(args)
    values["out"] = values["out"] or DEFAULT_OUT[args.command if partial else
                                                 "quick" if args.quick else
                                                 "scale" if args.scale else "full"]
    return dict(claims=claims, figures=figures, iteration_counts=not partial, **values)


def _print_table(doc, out=None):
    from verify.report import fmt

    out = sys.stdout if out is None else out
    width = max([len("claim")] + [len(c["name"]) for c in doc["claims"]]) + 2
    print(f"{'claim':<{width}}{'instances':>10}{'worst ratio':>14}{'w/ allowance':>14}"
          f"{'at rounding':>13}{'weakest control':>17}  result", file=out)
    for c in doc["claims"]:
        print(f"{c['name']:<{width}}{c['instances']:>10}{fmt(c['worst_ratio'], 4):>14}"
              f"{fmt(c['worst_ratio_with_allowance'], 4):>14}{c['rounding_level_checks']:>13}"
              f"{fmt(c['weakest_control_ratio'], 4):>17}  {c['status']}", file=out)
    for f in doc["figures"].values():
        note = (", ".join(f["files"]) if f["status"] == "drawn"
                else (f["reason"] or "").strip().splitlines()[-1])
        print(f"{f['id']} {f['status']}: {note}", file=out)


def recorded_command(argv) -> list:
    """The command as results.json records it: without the options that only say where the
    report goes, how it is shown or where it is computed (``--out``, ``--json``,
    ``--no-progress``, ``--jobs``, ``--dask``; the kernels are recorded under
    environment.numerics), so that a report written elsewhere, or on N processes, is the same
    file."""
    from verify import options

    not_recorded = options.not_recorded()
    out, skip = ["imaml-verify"], 0
    for a in argv:
        if skip:
            skip -= 1
            continue
        name = a.split("=", 1)[0]
        if name in not_recorded:
            skip = not_recorded[name] if "=" not in a else 0
            continue
        out.append(a)
    return out


def _run(args, argv) -> int:
    from verify import _interrupt
    from verify.report.results import dumps
    from verify.report.writer import ReportWriteError, published
    from verify.runner import UsageError, run

    request = request_from_args(args)
    out = request["out"]
    written_before = published(out)
    try:
        with _interrupt.recorded():
            doc = run(**request, command=recorded_command(argv))
    except UsageError as exc:
        print(f"imaml-verify: error: {exc}", file=sys.stderr)
        return 2
    except ReportWriteError as exc:
        print(f"imaml-verify: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if published(out) > written_before:
            print(f"imaml-verify: interrupted after the new report was written to {out}",
                  file=sys.stderr)
        else:
            print(f"imaml-verify: interrupted; nothing was written, the previous report in "
                  f"{out} is kept", file=sys.stderr)
        return 130
    if args.json:
        sys.stdout.write(dumps(doc))
    else:
        _print_table(doc)
        files = sum(len(f["files"]) for f in doc["figures"].values())
        print(f"wrote {out}/REPORT.md, results.json and {files} figure files "
              f"in {doc['elapsed_s']['total']:.1f} s")
    figure_errors = [f["id"] for f in doc["figures"].values() if f["status"] == "error"]
    if figure_errors:
        print(f"figures that could not be drawn: {', '.join(figure_errors)}", file=sys.stderr)
    return 0 if doc["summary"]["passed"] and not figure_errors else 1


def main(argv=None) -> int:
    from_shell = argv is None
    argv = _normalize(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if from_shell and args.command in ("run", "claim", "figure") and not args.native_kernels:
        from verify._numerics import reexec_pinned

        reexec_pinned(sys.argv[1:])   # returns only where it cannot (or is already pinned)
    if args.command == "list":
        return _list()
    if args.command == "fewshot":
        from verify.fewshot import cli as fewshot_cli

        return int(fewshot_cli.run(args) or 0)
    if args.command == "gpu":
        from verify import gpu

        return gpu.run(args)
    if args.command == "check":
        from verify.checker import cli as checker_cli

        return int(checker_cli.run(args))
    return _run(args, argv)


if __name__ == "__main__":
    sys.exit(main())
