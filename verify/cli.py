"""The `imaml-verify` command: verify every claim, draw the figures, write the report.

    imaml-verify [run] [--quick] [--seed N] [--out DIR] [--json] [--device cpu|cuda]
                       [--dtype float64|float32] [--claim NAME ...] [--figure ID ...]
    imaml-verify claim NAME [NAME ...]     run only these claims (no figures)
    imaml-verify figure ID [ID ...]        compute and draw only these figures (fig1 / 1 / cg-error)
    imaml-verify list                      list the claims and figures
    imaml-verify fewshot ...               the few-shot experiment (when verify.fewshot is present)
    imaml-verify check module:function     check your own meta-gradient (docs/checker.md)

Exit status: 0 when every claim that ran holds, 1 when a claim fails (or raises, or a figure
cannot be drawn), 2 for a usage error. A full run writes REPORT.md, results.json,
results.schema.json and figures/ into ``--out`` (default ``reports/``); a partial selection
defaults to ``reports/partial/`` so it never overwrites the full report.
"""
from __future__ import annotations

import argparse
import sys
import time
import traceback
from importlib import metadata

__all__ = ["main", "build_parser"]

COMMANDS = ("run", "claim", "figure", "list", "fewshot", "check")


def _fewshot_cli():
    try:
        from verify.fewshot import cli as fewshot_cli
    except ImportError:
        return None
    return fewshot_cli


def _checker_cli():
    try:
        from verify.checker import cli as checker_cli
    except ImportError:
        return None
    return checker_cli


def _add_run_options(p):
    p.add_argument("--quick", action="store_true", help="small sweeps: about a minute in all")
    p.add_argument("--seed", type=int, default=0, help="root seed of every instance (default 0)")
    p.add_argument("--out", default=None,
                   help="output folder (default reports/, or reports/partial/ for a selection)")
    p.add_argument("--json", action="store_true",
                   help="print results.json to stdout instead of the summary table")
    p.add_argument("--device", default="cpu", help="cpu or cuda (cuda implies --array torch)")
    p.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    p.add_argument("--array", default=None, choices=["numpy", "torch"],
                   help="array library of the checks (default numpy on cpu, torch on cuda)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imaml-verify",
        description="Verify the claims of the iMAML appendix and write the report.")
    sub = parser.add_subparsers(dest="command", metavar="{run,claim,figure,list,fewshot,check}")
    run = sub.add_parser("run", help="every claim and figure, then the report (the default)")
    _add_run_options(run)
    run.add_argument("--claim", action="append", default=None, metavar="NAME",
                     help="run only this claim (repeatable)")
    run.add_argument("--figure", action="append", default=None, metavar="ID",
                     help="draw only this figure (repeatable)")
    run.add_argument("--no-figures", action="store_true", help="skip every figure")
    claim = sub.add_parser("claim", help="run only the named claims")
    claim.add_argument("names", nargs="+", metavar="NAME")
    _add_run_options(claim)
    figure = sub.add_parser("figure", help="compute and draw only the named figures")
    figure.add_argument("ids", nargs="+", metavar="ID")
    _add_run_options(figure)
    sub.add_parser("list", help="list the claims and figures")
    fewshot = _fewshot_cli()
    if fewshot is not None:
        fewshot.add_parser(sub)
    checker = _checker_cli()
    if checker is not None:
        checker.add_parser(sub)
    return parser


def _normalize(argv):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help")):
        argv = ["run", *argv]
    return argv


# -- list ---------------------------------------------------------------------------------------
def _list() -> int:
    from verify.figures import FIGURES
    from verify.registry import all_claims

    print("claims:")
    for name, c in all_claims().items():
        print(f"  {name:<24} {c.section:<14} {c.title}")
    print("figures:")
    for f in FIGURES.values():
        print(f"  {f.id:<5} {f.name:<15} {f.title}")
    return 0


# -- run ----------------------------------------------------------------------------------------
def _select(args):
    """(claim names, figure ids, iteration counts?, partial?) from the parsed options."""
    from verify.figures import FIGURES, lookup
    from verify.registry import all_claims

    claims = all_claims()
    if args.command == "claim":
        wanted, figures = args.names, []
    elif args.command == "figure":
        figures = [lookup(i).id for i in args.ids]
        wanted = list(claims) if "fig6" in figures else []   # tightness is drawn from the claims
    else:
        wanted = args.claim if args.claim else list(claims)
        if args.no_figures:
            figures = []
        elif args.figure:
            figures = [lookup(i).id for i in args.figure]
        else:
            figures = list(FIGURES)
    unknown = [n for n in wanted if n not in claims]
    if unknown:
        raise KeyError(f"no claim {', '.join(map(repr, unknown))}; known: {', '.join(claims)}")
    partial = args.command != "run" or bool(args.claim or args.figure or args.no_figures)
    return [claims[n] for n in wanted], figures, not partial, partial


def _context(args):
    from verify.registry import RunContext

    device = args.device
    array = args.array or ("torch" if device != "cpu" else "numpy")
    if device != "cpu":
        if array != "torch":
            raise ValueError(f"--device {device} needs --array torch, got --array {array}")
        import torch

        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"--device {device}: no CUDA device here (torch.cuda.is_available() "
                             f"is False)")
    return RunContext(seed=args.seed, quick=args.quick, dtype=args.dtype, device=device,
                      array=array)


def _run_claim(claim, ctx):
    from verify.report import claim_record

    start = time.perf_counter()
    try:
        results, error = claim.run(ctx), None
    except Exception:  # a claim that crashes is reported, and the run fails
        results, error = [], traceback.format_exc()
    return claim_record(claim, results, elapsed_s=time.perf_counter() - start, error=error)


def _run_figure(fig_id, ctx, records):
    from verify import figures

    spec = figures.FIGURES[fig_id]
    start = time.perf_counter()
    entry = {"id": fig_id, "name": spec.name, "title": spec.title, "files": [], "data": None,
             "reason": None, "caption": ""}
    files = {}
    try:
        data = figures.compute(fig_id, ctx, records)
        entry["data"] = data
        reason = figures.unavailable(fig_id, data)
        if reason:
            entry.update(status="skipped", reason=reason, caption=figures.caption(fig_id, data))
        else:
            fig = figures.draw(fig_id, data)
            for fmt in ("png", "svg"):
                rel = f"figures/{fig_id}-{spec.name}.{fmt}"
                files[rel] = figures.render(fig, fmt)
                entry["files"].append(rel)
            entry.update(status="drawn", caption=figures.caption(fig_id, data))
    except Exception:  # a figure that crashes is reported, and the run fails
        entry.update(status="error", reason=traceback.format_exc(), files=[])
        files = {}
    entry["elapsed_s"] = time.perf_counter() - start
    return entry, files


def _fewshot_markdown(out_dir):
    """The few-shot section and its document, when the few-shot experiment has left
    results in the output folder: ``gpu/fewshot_gpu.json`` (`make gpu-check`, preferred) or
    ``fewshot/results.json`` (its CPU run); else (None, None)."""
    try:
        from verify.fewshot import report as fewshot_report
        from verify.fewshot.gpu_check import OUTPUT_NAME
    except ImportError:
        return None, None
    import json
    from pathlib import Path

    for path in (Path(out_dir) / "gpu" / OUTPUT_NAME, Path(out_dir) / "fewshot" / "results.json"):
        if path.is_file():
            doc = json.loads(path.read_text(encoding="utf-8"))
            return fewshot_report.render_markdown(doc), doc
    return None, None


def _print_table(doc, out=None):
    out = sys.stdout if out is None else out
    width = max([len("claim")] + [len(c["name"]) for c in doc["claims"]]) + 2
    from verify.report import fmt

    print(f"{'claim':<{width}}{'instances':>10}{'worst ratio':>14}{'w/ allowance':>14}"
          f"{'at rounding':>13}{'weakest control':>17}  result", file=out)
    for c in doc["claims"]:
        print(f"{c['name']:<{width}}{c['instances']:>10}{fmt(c['worst_ratio'], 4):>14}"
              f"{fmt(c['worst_ratio_with_allowance'], 4):>14}{c['rounding_level_checks']:>13}"
              f"{fmt(c['weakest_control_ratio'], 4):>17}  {c['status']}", file=out)
    for f in doc["figures"].values():
        note = ", ".join(f["files"]) if f["status"] == "drawn" else (f["reason"] or "").strip().splitlines()[-1]
        print(f"{f['id']} {f['status']}: {note}", file=out)


def _run(args, argv, ctx, selection) -> int:
    from tqdm import tqdm

    from verify import sweeps
    from verify.report import environment, jsonable, summary, write_outputs
    from verify.report.results import SCHEMA_VERSION, dumps, now_utc

    claims, figure_ids, with_counts, partial = selection
    out_dir = args.out or ("reports/partial" if partial else "reports")
    start = time.perf_counter()
    tasks = len(claims) + len(figure_ids) + int(with_counts)
    bar = tqdm(total=tasks, desc="imaml-verify", unit="step", file=sys.stderr,
               disable=True if args.no_progress else None, leave=False)
    records = []
    for claim in claims:
        bar.set_postfix_str(claim.name)
        records.append(_run_claim(claim, ctx))
        bar.update()
    t_claims = time.perf_counter() - start
    figures, files = {}, {}
    for fig_id in figure_ids:
        bar.set_postfix_str(fig_id)
        entry, fig_files = _run_figure(fig_id, ctx, records)
        figures[fig_id] = entry
        files.update(fig_files)
        bar.update()
    t_figures = time.perf_counter() - start - t_claims
    counts = None
    if with_counts:
        bar.set_postfix_str("iteration counts")
        counts = sweeps.iteration_counts_data(ctx)
        bar.update()
    bar.close()
    fewshot_md, fewshot_doc = _fewshot_markdown(out_dir)
    doc = {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "imaml-verify", "version": metadata.version("imaml-verify")},
        "created": now_utc(),
        "command": ["imaml-verify", *argv],
        "settings": {"seed": ctx.seed, "quick": ctx.quick, "dtype": ctx.dtype,
                     "device": ctx.device, "array": ctx.array,
                     "claims": [c.name for c in claims], "figures": figure_ids},
        "environment": environment(),
        "elapsed_s": {"total": time.perf_counter() - start, "claims": t_claims,
                      "figures": t_figures},
        "summary": summary(records),
        "claims": records,
        "figures": figures,
        "iteration_counts": counts,
        "fewshot": fewshot_doc,
    }
    doc = jsonable(doc)
    write_outputs(out_dir, doc, files, fewshot_markdown=fewshot_md)
    if args.json:
        sys.stdout.write(dumps(doc))
    else:
        _print_table(doc)
        print(f"wrote {out_dir}/REPORT.md, results.json and {len(files)} figure files "
              f"in {doc['elapsed_s']['total']:.1f} s")
    figure_errors = [f["id"] for f in figures.values() if f["status"] == "error"]
    if figure_errors:
        print(f"figures that could not be drawn: {', '.join(figure_errors)}", file=sys.stderr)
    return 0 if doc["summary"]["passed"] and not figure_errors else 1


def main(argv=None) -> int:
    argv = _normalize(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "list":
        return _list()
    if args.command == "fewshot":
        return int(_fewshot_cli().run(args) or 0)
    if args.command == "check":
        return int(_checker_cli().run(args))
    try:
        ctx, selection = _context(args), _select(args)
    except (KeyError, ValueError) as exc:   # a bad claim/figure name, device or dtype
        print(f"imaml-verify: error: {exc.args[0]}", file=sys.stderr)
        return 2
    return _run(args, argv, ctx, selection)


if __name__ == "__main__":
    sys.exit(main())
