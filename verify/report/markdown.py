"""REPORT.md, rendered from the results document alone (so it always says what results.json says)."""
from __future__ import annotations

import json
import re

__all__ = ["render_report", "summary_table", "fmt", "section_links"]


def fmt(x, digits=3) -> str:
    """A number for a table: 3 significant digits (more near 1, so that 1.000005 does not read
    as 1), '—' for None, strings ('inf') as they are."""
    if x is None:
        return "—"
    if isinstance(x, str):
        return x
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return str(x)
    if x != 1 and abs(x - 1) < 10 ** -digits:   # near 1: show on which side of 1 it lies
        return f"1{'+' if x > 1 else '-'}{abs(x - 1):.2g}"
    return f"{x:.{digits}g}"


#: where docs/mathematics.md is, relative to the REPORT.md being rendered (set per render)
_DOCS = {"base": "../docs"}


def section_links(section: str, base: str = "../docs") -> str:
    """'§5, §9' as links to the anchors of docs/mathematics.md (ids s5, s9) from a page whose path
    to the docs folder is ``base``; any other words are kept after them."""
    parts = re.findall(r"§\s*(\d+[a-z]?)", section)
    rest = re.sub(r"§\s*\d+[a-z]?[,\s]*", "", section).strip(" ,()")
    links = ", ".join(f"[§{p}]({base}/mathematics.md#s{p})" for p in parts)
    return (links or section) + (f" ({rest})" if rest and parts else "")


def _section(section: str) -> str:
    return section_links(section, _DOCS["base"])


def _verdict(status: str) -> str:
    return {"PASS": "PASS", "FAIL": "**FAIL**", "ERROR": "**ERROR**"}[status]


def _gt(x) -> str:
    return "—" if x is None else f"{fmt(x)} (> 1 needed)"


def summary_table(doc) -> str:
    """The summary table: one row per claim. Planted-defect controls and findings about the
    appendix ('>' checks) have separate columns."""
    lines = ["| claim | § | instances | worst ratio | w/ allowance | at rounding | "
             "weakest control | finding margin | result |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for c in doc["claims"]:
        lines.append(f"| `{c['name']}` | {_section(c['section'])} | {c['instances']} | {fmt(c['worst_ratio'])} | "
                     f"{fmt(c['worst_ratio_with_allowance'])} | {c['rounding_level_checks']} | "
                     f"{_gt(c['weakest_control_ratio'])} | {_gt(c.get('weakest_finding_ratio'))} | "
                     f"{_verdict(c['status'])} |")
    return "\n".join(lines)


def _compact(obj, items=6):
    """Long lists shortened to their first items and a count (results.json has them whole)."""
    if isinstance(obj, dict):
        return {k: _compact(v, items) for k, v in obj.items()}
    if isinstance(obj, list):
        head = [_compact(v, items) for v in obj[:items]]
        return head + [f"… {len(obj)} items"] if len(obj) > items else head
    if isinstance(obj, float):
        return float(f"{obj:.6g}")
    return obj


def _json_inline(obj) -> str:
    text = json.dumps(_compact(obj), ensure_ascii=False, sort_keys=True)
    return text if len(text) <= 600 else text[:600] + " …"


def _check_line(c) -> str:
    return (f"measured {fmt(c['measured'], 6)} {c['relation']} bound {fmt(c['bound'], 6)} "
            f"(+ allowance {fmt(c['allowance'], 2)}), ratio {fmt(c['ratio'], 4)}, "
            f"{'passed' if c['passed'] else '**failed**'}")


def _claim_section(c) -> str:
    out = [f"### `{c['name']}` — {c['title']}", "",
           f"*{_section(c['section'])}.* {c['statement']}", "",
           f"- **Result:** {_verdict(c['status'])} — {c['instances']} instances "
           f"({c['bound_checks']} bound checks, {c['controls']} negative controls), "
           f"{c['failed']} failed.",
           f"- **Worst ratio measured/bound:** {fmt(c['worst_ratio'], 4)} (bounds above rounding); "
           f"closest to failing, measured/(bound + allowance): "
           f"{fmt(c['worst_ratio_with_allowance'], 4)}; {c['rounding_level_checks']} checks at "
           f"rounding level"
           + (f"; weakest planted-defect control {fmt(c['weakest_control_ratio'], 4)} (must exceed 1)"
              if c["weakest_control_ratio"] is not None else "")
           + (f"; finding about the appendix at {fmt(c['weakest_finding_ratio'], 4)} (must exceed 1)"
              if c.get("weakest_finding_ratio") is not None else "") + "."]
    w = c["worst"]
    if w is not None:
        out.append(f"- **{'Worst failing' if not w['passed'] else 'Worst'} instance:** {_check_line(w)}."
                   + (f" {w['statement']}" if w["statement"] != c["statement"] else ""))
        out.append(f"  - instance: `{_json_inline(w['instance'])}`")
        if w["details"]:
            out.append(f"  - details: `{_json_inline(w['details'])}`")
    if c["failed"]:
        fails = [x for x in c["checks"] if not x["passed"]]
        out.append(f"- **Failures ({len(fails)}):**")
        for x in fails[:10]:
            out.append(f"  - {_check_line(x)} on `{_json_inline(x['instance'])}`")
        if len(fails) > 10:
            out.append(f"  - … and {len(fails) - 10} more (results.json has all)")
    if c["error"]:
        out += ["- **Error:**", "", "```", c["error"].rstrip(), "```"]
    if c["loose"]:
        out.append(f"- **Loose in the appendix:** {c['loose']}")
    return "\n".join(out)


def _iteration_table(rows) -> str:
    lines = ["| d | κ | target | Nesterov steps | Lemma 2 | ratio | GD steps | GD / Lemma 2 | "
             "CG steps | CG bound | ratio |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['dim']} | {fmt(r['kappa'])} | {fmt(r['target'])} | {fmt(r['nesterov_steps'])} | "
            f"{r['lemma2_steps']} | {fmt(r['nesterov_over_lemma2'], 2)} | {fmt(r['gd_steps'])} | "
            f"{fmt(r['gd_over_lemma2'], 2)} | {fmt(r['cg_steps'])} | {r['cg_bound_steps']} | "
            f"{fmt(r['cg_over_bound'], 2)} |")
    return "\n".join(lines)


def _found(c) -> str:
    """What the run measured for a claim, in one phrase."""
    parts = [f"{c['instances']} instances, {_verdict(c['status'])}"]
    if c["worst_ratio"] is not None:
        parts.append(f"worst ratio {fmt(c['worst_ratio'])}")
    if c["weakest_control_ratio"] is not None:
        parts.append(f"planted-defect control at {fmt(c['weakest_control_ratio'])}× its bound")
    if c.get("weakest_finding_ratio") is not None:
        parts.append(f"finding at {fmt(c['weakest_finding_ratio'])}× the appendix's count")
    return f"`{c['name']}` " + ", ".join(parts)


def render_report(doc: dict, *, fewshot_markdown: str | None = None,
                  third_party_markdown: str | None = None, docs_base: str = "../docs") -> str:
    """REPORT.md from the results document alone. ``docs_base``: the path from the report's
    folder to the project's docs/ folder (links to the mathematics of each claim)."""
    _DOCS["base"] = docs_base
    s = doc["summary"]
    st = doc["settings"]
    verdict = ("**No claim was run** (a selection of figures only): this report holds no "
               "verdict on the claims." if s["claims"] == 0 else
               f"**All {s['claims']} claims hold** ({s['checks']} checks)." if s["passed"] else
               f"**{len(s['failed_claims'])} of {s['claims']} claims FAIL**: "
               + ", ".join(f"`{n}`" for n in s["failed_claims"])
               + f" ({s['failed_checks']} of {s['checks']} checks failed).")
    pk = doc["environment"]["packages"]
    out = [
        "# imaml-verify report", "",
        "Numerical verification of the appendix of *Meta-Learning with Implicit Gradients* "
        "(Rajeswaran, Finn, Kakade, Levine, NeurIPS 2019) against the statements of "
        f"[docs/mathematics.md]({docs_base}/mathematics.md); each claim links to its section.", "",
        verdict, "",
        f"- run: `{' '.join(doc['command'])}` — {'quick' if st['quick'] else 'full'} mode, seed "
        f"{st['seed']}, {st['dtype']} on {st['array']}/{st['device']} (date and timings: "
        f"`run.json`)",
        f"- versions: imaml-verify {doc['tool']['version']}, Python {doc['environment']['python']}, "
        + ", ".join(f"{k} {v}" for k, v in pk.items() if v and k != "imaml-verify")
        + f"; numerical kernels {doc['environment'].get('numerics', 'native')} "
        f"([why]({docs_base}/architecture.md#reproducible-numbers))",
        "- everything below is in `results.json` (schema: `results.schema.json`).", "",
        "## Summary", "",
        "A bound check passes when measured ≤ bound + a rounding allowance derived from the dtype, "
        "κ and the scale (theory.tolerances), i.e. when measured/(bound + allowance) ≤ 1 (column "
        "*w/ allowance*). *Worst ratio* is the largest measured/bound over the checks whose bound "
        "is above its allowance (the others — equalities to rounding, bounds that have decayed "
        "below 1e-15 — are counted in *at rounding* and decided by the allowance alone). A "
        "planted-defect control (*weakest control*) passes when measured > bound: it shows the "
        "check can fail. A *finding* is a statement of the appendix as written that the run shows "
        "wrong (measured > the appendix's count, > 1 needed).", "",
        summary_table(doc), "",
    ]
    if doc["figures"]:
        out += ["## Figures", ""]
        for i, f in enumerate(doc["figures"].values(), 1):
            out += [f"### Figure {f['id'][3:]} — {f['title']}", ""]
            if f["status"] == "drawn":
                png = next(p for p in f["files"] if p.endswith(".png"))
                svg = next((p for p in f["files"] if p.endswith(".svg")), None)
                out += [f"![{f['title']}]({png})", "",
                        f"*Figure {f['id'][3:]}.* {f['caption']}"
                        + (f" ([SVG]({svg}))" if svg else ""), ""]
            else:
                out += [f"*Not drawn ({f['status']}):* {f['reason']}", ""]
    if doc.get("iteration_counts"):
        out += ["## Iteration counts: steps taken against the bounds", "",
                "Planted quadratics (uniform spectrum, φ₀ = θ, λ = 1). Steps after which the error "
                "stays below target × initial error (inner solvers: ‖φₖ − φ*‖; CG at the exact inner "
                "solution: ‖gₖ − g*‖, from g₀ = 0) against Lemma 2's count and the smallest k with "
                "2√κ qᵏ ≤ target. A ratio above 1 for gradient descent is the negative control: "
                "without acceleration Lemma 2's count is not enough. `make bench` records the same "
                "rows in pytest-benchmark's `extra_info`.", "",
                _iteration_table(doc["iteration_counts"]["rows"]), ""]
    out += ["## Claims", ""]
    for c in doc["claims"]:
        out += [_claim_section(c), ""]
    loose = [c for c in doc["claims"] if c["loose"]]
    if loose:
        out += ["## Loose places of the appendix, as found", ""]
        groups: dict[str, list] = {}
        for c in loose:                      # claims sharing one remark are listed together
            groups.setdefault(c["loose"], []).append(c)
        out += [", ".join(f"- `{c['name']}`" if i == 0 else f"`{c['name']}`"
                          for i, c in enumerate(cs))
                + f" ({_section(cs[0]['section'])}): {text.rstrip('.')}. *Found:* "
                + "; ".join(_found(c) for c in cs) + "." for text, cs in groups.items()]
        out.append("")
    if third_party_markdown:
        out += [third_party_markdown.rstrip(), ""]
    if fewshot_markdown:
        out += [fewshot_markdown.rstrip(), ""]
    out += ["## Reproduce", "", "```sh", f"imaml-verify run --seed {st['seed']}"
            + (" --quick" if st["quick"] else "") + f" --dtype {st['dtype']} --device {st['device']}",
            "```", ""]
    return "\n".join(out)
