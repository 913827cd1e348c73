"""DIR/REPORT.md of ``imaml-verify gpu``: the stage table, each stage's figures, and the
few-shot section (:func:`verify.fewshot.report.render_markdown`), from DIR/summary.json."""
from __future__ import annotations

import json
from pathlib import Path

__all__ = ["render", "write_report"]


def _f(x, fmt=".2f"):
    return "—" if x is None else format(x, fmt)


def _stage_line(name, e) -> str:
    """One sentence of figures per stage."""
    if e.get("status") == "skipped":
        return e.get("reason", "")
    if name == "tests":
        slow = e.get("slowest") or [{}]
        return (f"{e.get('passed', 0)} passed, {e.get('failed', 0)} failed, "
                f"{e.get('errors', 0)} errors, {e.get('skipped', 0)} skipped; slowest "
                f"{_f(slow[0].get('seconds'), '.1f')} s ({slow[0].get('test', '—')})")
    if name == "claims":
        parts = []
        for dtype, r in e.get("runs", {}).items():
            parts.append(f"{dtype}: {r.get('claims_passed', '?')} of {r.get('claims_run', '?')} "
                         f"claims hold ([report]({r.get('report')}))")
        return "; ".join(parts)
    if name == "fewshot":
        acc = e.get("accuracy", {})
        order = e.get("paper_ordering", {})
        held = [k for k, v in order.items() if v.get("holds")]
        return (f"{len(acc)} held-out accuracies; I + H/λ indefinite on "
                f"{e.get('indefinite_tasks', '?')} measured tasks; iMAML-GD ≥ MAML: "
                + (", ".join(held) if held else "none") + " (see the few-shot section)")
    if name == "bandwidth":
        rows = e.get("batched", [])
        if not rows:
            return ""
        r = rows[0]
        sm = e.get("small", {})
        return (f"{r['size']}: solver at {100 * r['fraction_of_plain']:.0f}% of the plain loop, "
                f"{100 * r['fraction_of_copy']:.0f}% of a copy; {sm.get('size', '')}: "
                f"{_f(sm.get('step_time_ratio'))}× the plain loop per step")
    return ""


def render(summary: dict, fewshot_md: str | None = None) -> str:
    """Markdown of a GPU run from its summary (and the few-shot section, if written)."""
    dry = summary.get("dry_run")
    out = [f"# GPU evidence: {summary.get('device', '?')}", ""]
    if dry:
        out += ["> **CPU dry run at tiny sizes.** These numbers show that every stage runs as "
                "written; they are not GPU measurements and judge none of the GPU targets.", ""]
    out += [f"torch {summary.get('torch')} (CUDA {summary.get('cuda')}), numpy "
            f"{summary.get('numpy')}, Python {summary.get('python')}. "
            + ("No time budget (a dry run does the same work however busy the machine is)"
               if summary.get("budget_s") is None else
               f"Budget {summary['budget_s']:.0f} s for the whole run, Python start-up "
               f"({summary.get('startup_s', 0):.1f} s) included")
            + "; took "
            f"{summary.get('elapsed_s', 0):.0f} s. Overall: **{summary.get('status')}**.", "",
            "| stage | status | seconds | timeout | figures |", "|---|---|---:|---:|---|"]
    for name, e in summary.get("stages", {}).items():
        why = f" — {e['reason']}" if e.get("reason") and e.get("status") != "skipped" else ""
        out.append(f"| {name} | {e.get('status')} | {_f(e.get('seconds'), '.1f')} | "
                   f"{_f(e.get('timeout_s'), '.0f')} | {_stage_line(name, e)}{why} |")
    bw = summary.get("stages", {}).get("bandwidth", {})
    if bw.get("batched"):
        out += ["", "## Batched CG bandwidth", "",
                "Bytes per second of `solvers.cg`, of a plain sync-free torch CG loop and of a "
                "device copy, in the same process (30 CG steps; a step counted as the bytes of "
                "the task matrices it reads)."
                + ("" if bw.get("judged") else " Not judged: not a GPU."), "",
                "| tasks × d, dtype | solver GB/s | plain loop GB/s | copy GB/s | solver / plain "
                "| solver / copy | plain / copy |", "|---|---:|---:|---:|---:|---:|---:|"]
        for r in bw["batched"]:
            out.append(f"| {r['size']} | {r['solver_GBps']:.1f} | {r['plain_GBps']:.1f} | "
                       f"{r['copy_GBps']:.1f} | {100 * r['fraction_of_plain']:.0f}% | "
                       f"{100 * r['fraction_of_copy']:.0f}% | "
                       f"{100 * r['plain_fraction_of_copy']:.0f}% |")
        sm = bw.get("small")
        if sm:
            out += ["", f"One small task ({sm['size']}): {sm['solver_us_per_step']:.0f} µs per CG "
                    f"step against {sm['plain_us_per_step']:.0f} µs for the plain loop "
                    f"({sm['step_time_ratio']:.2f}×). Targets: solver ≥ "
                    f"{100 * bw['targets']['min_fraction_of_plain']:.0f}% of the plain loop at the "
                    f"first size, small task within {bw['targets']['max_small_step_ratio']:g}× "
                    f"per step."]
    claims = summary.get("stages", {}).get("claims", {})
    mem = [(d, row) for d, r in claims.get("runs", {}).items() for row in r.get("memory", [])]
    if mem:
        out += ["", "## Memory claim on the run's device", "",
                "Bytes held for the backward pass (the verdict) and, on CUDA, the allocator's "
                "peak after a warm-up of every method (recorded, not judged).", "",
                "| dtype | K | iMAML bytes | MAML bytes | holds | allocator peak iMAML | "
                "allocator peak MAML |", "|---|---:|---:|---:|---|---:|---:|"]
        for d, row in mem:
            alloc = row.get("allocator", {})
            out.append(f"| {d} | {row['instance'].get('inner_steps')} | {row['measured']:.0f} | "
                       f"{row['bound']:.0f} | {'yes' if row['passed'] else 'NO'} | "
                       f"{alloc.get('imaml', '—')} | {alloc.get('maml', '—')} |")
    tests = summary.get("stages", {}).get("tests", {})
    if tests.get("slowest"):
        out += ["", "## Slowest GPU tests", "", "| test | seconds |", "|---|---:|"]
        out += [f"| `{t['test']}` | {t['seconds']:.1f} |" for t in tests["slowest"]]
    if fewshot_md:
        out += ["", fewshot_md]
    return "\n".join(out) + "\n"


def write_report(out, summary: dict) -> Path:
    """Write DIR/REPORT.md (atomically) from ``summary`` and DIR/fewshot.md when present."""
    out = Path(out)
    md_path = out / "fewshot.md"
    fewshot_md = md_path.read_text(encoding="utf-8") if md_path.is_file() else None
    path = out / "REPORT.md"
    tmp = out / ".REPORT.md.tmp"
    tmp.write_text(render(summary, fewshot_md), encoding="utf-8")
    tmp.chmod(0o644)
    tmp.replace(path)
    return path


if __name__ == "__main__":  # pragma: no cover - re-render a summary by hand
    import sys

    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "reports/gpu")
    print(write_report(folder, json.loads((folder / "summary.json").read_text())))
