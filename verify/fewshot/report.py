"""The few-shot section of REPORT.md, rendered from the JSON that :mod:`verify.fewshot.gpu_check`
(or ``imaml-verify fewshot check``) writes. :func:`render_markdown` is what the report includes."""
from __future__ import annotations

__all__ = ["PAPER_TABLE2", "render_markdown", "memory_figure"]

#: Table 2 of the iMAML paper (Omniglot; mean ± 95% interval, %). MAML and first-order MAML
#: from Finn et al. 2017, Reptile from Nichol et al. 2018, as the paper quotes them.
PAPER_TABLE2 = {
    "columns": ("5-way 1-shot", "5-way 5-shot", "20-way 1-shot", "20-way 5-shot"),
    "rows": {
        "maml": ("MAML", ("98.7 ± 0.4", "99.9 ± 0.1", "95.8 ± 0.3", "98.9 ± 0.2")),
        "fomaml": ("first-order MAML", ("98.3 ± 0.5", "99.2 ± 0.2", "89.4 ± 0.5", "97.9 ± 0.1")),
        "reptile": ("Reptile", ("97.68 ± 0.04", "99.48 ± 0.06", "89.43 ± 0.14", "97.12 ± 0.32")),
        "imaml_gd": ("iMAML, GD", ("99.16 ± 0.35", "99.67 ± 0.12", "94.46 ± 0.42", "98.69 ± 0.1")),
        "imaml_hf": ("iMAML, Hessian-Free",
                     ("99.50 ± 0.26", "99.74 ± 0.11", "96.18 ± 0.36", "99.14 ± 0.1")),
    },
}

_OURS_ONLY = {"imaml_gd:fixed": "iMAML, GD — CG run its fixed steps (the paper's code)",
              "imaml_gd:damped": "iMAML, GD — damped system (the paper's script)",
              "imaml_gd:minres": "iMAML, GD — MINRES on I + H/λ (indefinite allowed)",
              "imaml_hf:fixed": "iMAML, Hessian-Free — CG run its fixed steps",
              "imaml_hf:damped": "iMAML, Hessian-Free — damped system",
              "pretrain": "joint training, no inner loop (no meta-learning)",
              "no_meta_learning": "initial θ₀, adapted only (no meta-learning)"}
_MODE_NAMES = {"fallback": "stop at non-positive curvature, fall back to ∇L(φ) (ours)",
               "fixed": "fixed CG steps regardless (the paper's code)",
               "damped": "damped system (1+d)·I + H/(λ+λ_d) (the paper's script)",
               "minres": "MINRES on I + H/λ (symmetric, indefinite allowed)",
               "first_order": "first-order direction ∇L(φ) (first-order MAML)"}


def _pct(entry):
    return f"{100 * entry['mean']:.1f} ± {100 * entry['ci95']:.1f}"


def _mib(b):
    return f"{b / 2**20:.2f} MiB"


def _num(x, fmt=".2g"):
    return "—" if x is None else format(x, fmt)


def render_markdown(doc: dict, *, figure_path: str | None = None) -> str:
    """Markdown for the few-shot section from a results document (the gpu_check JSON).
    ``figure_path``: link to the memory figure; by default the document's ``memory_figure``
    (relative to the folder above the JSON's, i.e. to reports/ for REPORT.md) for a GPU run."""
    run = ("CPU dry run (tiny sizes)" if doc.get("dry_run") else
           "CPU run (reduced sizes)" if str(doc.get("device", "cpu")).startswith("cpu")
           else "GPU run")
    cfg = doc.get("config", {})
    tr = doc.get("training", {})
    col = f"{tr.get('n_way', cfg.get('n_way', 5))}-way {tr.get('k_shot', cfg.get('k_shot', 1))}-shot"
    out = ["## Few-shot integration", "",
           f"Device: **{doc.get('device', '?')}** — {run}; torch {doc.get('torch', '?')}; "
           f"seed {doc.get('seed', 0)}; {doc.get('seconds', {}).get('total', float('nan')):.0f} s."
           + ("" if doc.get("complete", True) else
              f" **Partial run**: parts done: {', '.join(doc.get('parts_done', [])) or 'none'}"
              + (f"; skipped for lack of time: {', '.join(doc['parts_skipped'])}"
                 if doc.get("parts_skipped") else "") + "."),
           "",
           f"> **The data is not Omniglot.** Our column is the embedded procedurally generated "
           f"glyph dataset ({doc.get('data', 'embedded glyphs')}), trained for a few minutes at "
           f"most; the paper's columns are Omniglot after full training. The numbers are side "
           f"by side for layout only: they are not comparable, and ours say only whether each "
           f"method learns at all and beats no meta-learning.", ""]

    cols = PAPER_TABLE2["columns"]
    methods = tr.get("methods", {})
    out += [f"| Algorithm | ours: glyphs {col} (%) | " + " | ".join(f"paper: Omniglot {c}"
                                                               for c in cols) + " |",
            "|---|---:|" + "---:|" * len(cols)]
    def ours(key):
        if key not in methods:
            return "not run"
        return methods[key].get("skipped") or _pct(methods[key])

    for key, (name, paper) in PAPER_TABLE2["rows"].items():
        label = f"{name} (stop at breakdown, fall back)" if key.startswith("imaml") else name
        out.append(f"| {label} | {ours(key)} | " + " | ".join(paper) + " |")
    for key, name in _OURS_ONLY.items():
        if key in methods:
            out.append(f"| {name} | {ours(key)} | " + " | ".join("—" for _ in cols) + " |")
    if methods:
        out += ["", f"Chance is {100 * tr.get('chance', 0.2):.0f}%. Accuracy: mean over "
                f"{tr.get('eval_episodes', '?')} held-out episodes ± 1.96·s/√n. Meta-steps done "
                f"(meta-batch {tr.get('meta_batch', '?')}): "
                + ", ".join(f"{k} {v.get('steps', 0)}" for k, v in methods.items()
                            if k != "no_meta_learning")
                + f" ({tr.get('time_rule', 'equal meta-steps')}). Tasks on which CG met "
                "non-positive curvature (I + H/λ not positive definite) during meta-training: "
                + ", ".join(f"{k} {max(v['cg_breakdowns'], v.get('cg_nonpositive_tasks', 0))} of "
                            f"{v['tasks']}" + (f" ({v['cg_fallbacks']} fell back to ∇L(φ))"
                                               if v.get("cg_fallbacks") else "")
                            for k, v in methods.items() if "cg_breakdowns" in v
                            and k.startswith("imaml") and v.get("cg_mode") != "minres") + "."]
        order = tr.get("paper_ordering") or {}
        if order:
            holds = [k for k, v in order.items() if v["holds"]]
            out += ["", "The paper's ordering on 5-way 1-shot (iMAML-GD ≥ MAML): "
                    + "; ".join(f"`{k}` {100 * v['accuracy']:.1f}% vs MAML "
                                f"{100 * v['maml_accuracy']:.1f}%: "
                                + ("holds" if v["holds"] else "does not hold")
                                + (" (intervals disjoint)" if v["separated"]
                                   else " (within the intervals)") for k, v in order.items())
                    + ". " + (f"Reproduced by: {', '.join(holds)}." if holds
                              else "No iMAML-GD variant reproduces it at this training length.")]

    modes = doc.get("cg_modes")
    if modes:
        n = len(modes["tasks"])
        out += ["", "### How iMAML's linear system is solved: CG's three behaviours and MINRES", "",
                f"On {n} task(s) at the initial θ (d = {modes['dim']} parameters, φ after "
                f"{modes['inner_steps']} GD steps, λ = {modes['lam']:g}, {modes['cg_steps']} CG "
                f"steps in {modes['dtype']}), Lanczos certifies I + H(φ)/λ indefinite on "
                f"**{modes['indefinite_tasks']} of {n}**: a finding about this project's "
                f"batch-normalized ConvNet on glyph data, not a statement about Omniglot or the "
                f"paper's network. Errors are relative, ‖g − g_ref‖/‖g_ref‖, medians over the "
                f"tasks; g* is the float64 MINRES solution of the undamped system (shown where "
                f"MINRES reached float32's epsilon within {modes['reference_steps']} steps: "
                f"{modes['summary']['fallback']['tasks_with_reference']} of {n}), the other "
                f"reference the float64 gradient of the computation actually run "
                f"(backpropagation through the {modes['inner_steps']} GD steps). The damped "
                f"system uses damping {modes['damping']:g} and λ_d = {modes['lam_damping']:g}.", "",
                "| solve | error vs g* | cosine to g* | error vs backprop | cosine to backprop "
                "| residual ‖∇L − (I + H/λ)g‖/‖∇L‖ |",
                "|---|---:|---:|---:|---:|---:|"]
        for mode, row in modes["summary"].items():
            out.append(f"| {_MODE_NAMES.get(mode, mode)} | {_num(row['relative_error'], '.3g')} | "
                       f"{_num(row['cosine'], '.3f')} | "
                       f"{_num(row['relative_error_vs_backprop'], '.3g')} | "
                       f"{_num(row['cosine_vs_backprop'], '.3f')} | "
                       f"{_num(row.get('relative_residual'), '.3g')} |")
        steps = [f"task {r['episode']}: fallback `{r['modes']['fallback']['cg_status']}` after "
                 f"{r['modes']['fallback']['cg_steps']} step(s); fixed "
                 f"{r['modes']['fixed']['nonpositive_curvature_steps']} step(s) along "
                 f"non-positive curvature" for r in modes["tasks"] if "fixed" in r["modes"]]
        if steps:
            out += ["", "What CG met: " + "; ".join(steps) + "."]

    cgc = doc.get("cg_convergence")
    if cgc:
        errs = cgc["relative_errors"]
        picks = sorted({0, 1, 2, 5, 10, len(errs) - 1} & set(range(len(errs))))
        out += ["", "### Meta-gradient against CG steps", "",
                f"ConvNet with d = {cgc['dim']} parameters, φ after {cgc['inner_steps']} GD "
                f"steps, CG in {cgc['dtype']} against a float64 reference at the same φ "
                f"(reference: {cgc['reference']['steps']} CG steps, {cgc['reference']['status']},"
                f" relative residual {cgc['reference']['relative_residual']:.1e}). Lanczos "
                f"({cgc['lanczos_steps']} steps) puts the Hessian's spectrum at least over "
                f"[{cgc['ritz_min']:.3g}, {cgc['ritz_max']:.3g}]; the system is solved at "
                f"λ = {cgc['lam_pd']:.3g} (estimated κ = {cgc['kappa_estimate']:.3g}).", "",
                "| CG steps | " + " | ".join(str(k) for k in picks) + " |",
                "|---|" + "---:|" * len(picks),
                "| ‖g_k − g*‖/‖g*‖ | " + " | ".join(f"{errs[k]:.2e}" for k in picks) + " |",
                "| Chebyshev bound (estimated κ) | "
                + " | ".join(f"{cgc['chebyshev_bound_estimate'][k]:.2e}" for k in picks) + " |"]
        ind, pap = cgc["indefinite"], cgc["paper_lam"]
        out += ["", f"Indefinite systems are detected, not hidden: at λ = {ind['lam']:.3g} "
                f"Lanczos {'certifies' if ind['certified_by_lanczos'] else 'does not certify'} "
                f"that I + H/λ is indefinite (estimated smallest eigenvalue "
                f"{ind['min_eig_estimate_of_system']:.3g}) and CG stops with status "
                f"`{ind['cg_status']}` after {ind['cg_steps_before_stop']} step(s). At the "
                f"paper's λ = {pap['lam']:g} on this batch-normalized network I + H/λ is "
                f"{'certified indefinite' if pap['certified_indefinite'] else 'not certified indefinite'}"
                f" (CG: `{pap['cg_status']}` after {pap['cg_steps']} step(s))"
                + (": the positive definite system that iMAML's CG assumes is not there."
                   if pap["certified_indefinite"] else ".")]

    mem = doc.get("memory")
    if mem:
        ks = [str(k) for k in mem["inner_steps"]]
        measure = mem.get("growth_measure", "saved_bytes")
        label = "peak CUDA memory" if measure == "cuda_peak_bytes" else "bytes saved for backward"
        cuda = "cuda_growth" in mem
        out += ["", "### Memory against inner steps", "",
                f"| method | " + " | ".join(f"{label}, K = {k}" for k in ks) + " | growth |"
                + (" | ".join([""] + [f"allocator peak after warm-up, K = {k}" for k in ks])
                   + " |" if cuda else ""),
                "|---|" + "---:|" * (len(ks) + 1) + ("---:|" * len(ks) if cuda else "")]
        for m, rows in mem["methods"].items():
            out.append(f"| {m} | " + " | ".join(_mib(rows[k][measure]) for k in ks)
                       + f" | ×{mem['growth'][m]:.2f} |"
                       + (" ".join(f" {_mib(rows[k]['cuda_peak_bytes'])} |" for k in ks)
                          if cuda else ""))
        if cuda:
            out += ["", "Judged on the bytes saved for backward (what the memory claim is about); "
                    "the allocator's peak is recorded, every method run once before any "
                    "measurement and each measurement after a warm-up of its own."]
        if figure_path is None and not doc.get("dry_run") and not str(
                doc.get("device", "cpu")).startswith("cpu"):  # the GPU run's figure
            figure_path = doc.get("memory_figure")
        if figure_path:
            out += ["", f"![memory against inner steps]({figure_path})"]

    hv = doc.get("hvp_time")
    if hv:
        out += ["", f"Assumption 1 (recorded, not judged): one Hessian-vector product takes "
                f"{hv['time_ratio']:.2f}× the time of one gradient ({1e3 * hv['hvp_seconds']:.2f}"
                f" ms vs {1e3 * hv['grad_seconds']:.2f} ms, mean of {hv['repeats']}) and saves "
                f"{hv['memory_ratio']:.2f}× the bytes for backward, on {hv['device']}."]
    return "\n".join(out) + "\n"


def memory_figure(doc: dict, path) -> str | None:
    """Draw memory against inner steps per method from ``doc['memory']`` to ``path`` (PNG);
    returns the path, or None when the document has no memory data."""
    mem = doc.get("memory")
    if not mem:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measure = mem.get("growth_measure", "saved_bytes")
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    for m, rows in mem["methods"].items():
        ks = [int(k) for k in mem["inner_steps"]]
        ax.plot(ks, [rows[str(k)][measure] / 2**20 for k in ks], "o-", label=m)
    ax.set_xlabel("inner steps K")
    ax.set_ylabel("peak CUDA MiB" if measure == "cuda_peak_bytes" else "saved for backward, MiB")
    ax.set_title(f"meta-gradient memory ({doc.get('device', '?')})", fontsize=9)
    ax.legend()
    fig.tight_layout()
    import io

    from verify.report._atomic import atomic_write_bytes

    buf = io.BytesIO()   # drawn in memory, written atomically: never half a PNG at ``path``
    fig.savefig(buf, format="png", dpi=120)
    atomic_write_bytes(path, buf.getvalue())
    plt.close(fig)
    return str(path)
