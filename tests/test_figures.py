"""The figures are drawn from the numbers stored in results.json (checked on the artists'
data, not on pixels), with labelled axes and log scales, and their data says what the captions
claim. Uses the session's one quick run (the quick_run fixture of tests/conftest.py)."""
from __future__ import annotations

import copy

import numpy as np
import pytest

from verify import figures

DRAWN = [f for f in figures.FIGURES]
LOG_AXES = {"fig1": "y", "fig2": "y", "fig3": "xy", "fig4": "xy", "fig5": "xy", "fig6": "x",
            "fig7": "y", "fig8": "xy"}


def _positive_pairs(x, y):
    """What a log-scale plot can show: the pairs whose y is a positive number."""
    if not isinstance(x, list):
        x = [x] * len(y)
    return [(a, b) for a, b in zip(x, y) if b is not None and b > 0]


def tagged_series(fig):
    """(gid, plotted x, plotted y) for every artist tagged with its data path."""
    out = []
    for ax in fig.axes:
        for line in ax.get_lines():
            if line.get_gid():
                out.append((line.get_gid(), list(line.get_xdata()), list(line.get_ydata())))
        for coll in ax.collections:
            if coll.get_gid():
                xy = coll.get_offsets()
                out.append((coll.get_gid(), list(xy[:, 0]), list(xy[:, 1])))
    return out


def mismatches(fig, data) -> list[str]:
    """Tagged series whose plotted numbers differ from the data at their paths."""
    bad = []
    for gid, px, py in tagged_series(fig):
        paths = dict(part.split(":", 1) for part in gid.split("|"))
        if "y" in paths:
            want = _positive_pairs(figures.resolve(data, paths["x"]),
                                   figures.resolve(data, paths["y"]))
            got = list(zip(px, py))
        else:                              # strip plot: only x carries data (y is jitter)
            want = [v for v in figures.resolve(data, paths["x"])]
            got = px
        if not np.array_equal(np.asarray(got, dtype=float), np.asarray(want, dtype=float)):
            bad.append(gid)
    return bad


def _drawn(quick_run, fig_id):
    _, out, doc, _ = quick_run
    entry = doc["figures"][fig_id]
    if entry["status"] == "skipped":
        pytest.skip(f"{fig_id} skipped in this environment: {entry['reason']}")
    assert entry["status"] == "drawn", entry["reason"]
    return out, entry


@pytest.mark.parametrize("fig_id", DRAWN)
def test_figure_is_drawn_from_the_stored_numbers(quick_run, fig_id):
    out, entry = _drawn(quick_run, fig_id)
    for rel in entry["files"]:
        head = (out / rel).read_bytes()[:8]
        assert head.startswith(b"\x89PNG") if rel.endswith(".png") else b"<svg" in (out / rel).read_bytes()[:2000]
    fig = figures.draw(fig_id, entry["data"])
    series = tagged_series(fig)
    assert series, "no plotted series is tagged with its data"
    assert all(len(x) > 0 for _, x, _ in series)
    assert mismatches(fig, entry["data"]) == []
    for ax in fig.axes:
        assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title()
        for axis in LOG_AXES[fig_id]:
            assert getattr(ax, f"get_{axis}scale")() == "log"
    assert entry["caption"] == figures.caption(fig_id, entry["data"])


@pytest.mark.parametrize("fig_id", DRAWN)
def test_mismatch_detector_catches_altered_numbers(quick_run, fig_id):
    """Negative control of the test above: a figure drawn from other numbers is caught."""
    _, entry = _drawn(quick_run, fig_id)
    altered = copy.deepcopy(entry["data"])
    gid = tagged_series(figures.draw(fig_id, entry["data"]))[0][0]
    paths = dict(part.split(":", 1) for part in gid.split("|"))
    path = paths.get("y", paths["x"]).replace("*", "0", 1)    # first number of the series
    if isinstance(figures.resolve(altered, path), list):
        path += "/0"
    parent, key = path.rsplit("/", 1)
    node = figures.resolve(altered, parent)
    node[int(key) if isinstance(node, list) else key] = 3 * node[int(key) if isinstance(node, list) else key] + 1
    assert mismatches(figures.draw(fig_id, altered), entry["data"])


def test_figure_data_agree_with_the_bounds_they_show(quick_run):
    """The numbers behind figures 1, 3 and 7 respect the bounds drawn beside them."""
    _, _, doc, _ = quick_run
    fig1 = doc["figures"]["fig1"]["data"]
    for c in fig1["curves"]:
        assert c["violations"] == 0
        assert all(e <= b + c["rounding_allowance"] for e, b in zip(c["relative_error"], c["bound"]))
    for row in doc["figures"]["fig3"]["data"]["rows"]:
        assert row["needed_inner"] <= row["T_inner"] and row["needed_cg"] <= row["T_cg"]
        # the proof's split asks more of the inner solve than the meta-gradient error does
        assert row["needed_inner"] <= row["needed_inner_proof_split"] <= row["T_inner"]
        assert row["achieved_error"] <= row["eps"]
    fig7 = doc["figures"]["fig7"]
    if fig7["status"] == "drawn":
        d = fig7["data"]
        for pep, quad, implied in zip(d["pep"], d["quadratic"], d["lemma2_implied"]):
            assert pep <= implied
            assert quad <= pep   # quadratics are among the functions PEP maximizes over


def test_render_formats():
    fig = figures.draw("fig6", {"ratios": {"a": [0.5, 0.1], "b": [1.0]}})
    assert figures.render(fig, "png").startswith(b"\x89PNG")
    assert b"<svg" in figures.render(fig, "svg")[:2000]
    with pytest.raises(ValueError, match="fmt"):
        figures.render(fig, "jpeg")
    with pytest.raises(KeyError, match="fig99"):
        figures.lookup("fig99")


def test_figure1_counts_violations_of_a_planted_too_small_bound(monkeypatch):
    """Negative control of figure 1's data: with the CG bound planted 1000× too small, the
    sweep reports steps above it."""
    from theory import bounds
    from verify.figures import cg_error
    from verify.registry import RunContext

    honest = cg_error.compute(RunContext(quick=True))
    assert all(c["violations"] == 0 for c in honest["curves"])
    true_bound = bounds.cg_error_bound
    monkeypatch.setattr(cg_error.bounds, "cg_error_bound",
                        lambda *a, **k: true_bound(*a, **k) / 1000)
    planted = cg_error.compute(RunContext(quick=True))
    assert sum(c["violations"] for c in planted["curves"]) > 0


def test_pep_cache_is_read_as_made_and_recomputed_in_another_environment(monkeypatch):
    """Figure 7 reads the committed PEP values without recomputing any when the cache was made
    with this environment (PEPit, cvxpy, Clarabel, problem source); in another it recomputes
    every k and says why."""
    pytest.importorskip("PEPit", reason="the optional 'pep' extra is not installed")
    from verify.figures import pep

    calls = []
    real, real_env = pep._pep_worst_case, pep.made_with()
    monkeypatch.setattr(pep, "_pep_worst_case", lambda k, kappa: calls.append(k) or real(k, kappa))
    values, _, provenance = pep.worst_cases(pep.FULL_STEPS)
    assert provenance["source"] == "cache" and calls == []
    assert provenance["made_with"] == real_env and real_env["PEPit"]
    monkeypatch.setattr(pep, "made_with", lambda: {**real_env, "PEPit": "0.0.1"})
    again, _, provenance = pep.worst_cases([1, 2, 3])
    assert provenance["source"] == "computed" and calls == [1, 2, 3]
    assert "PEPit" in provenance["why"] and "0.0.1 here" in provenance["why"]
    from theory.tolerances import sdp_allowance

    assert all(abs(a - v) <= sdp_allowance(v) for a, v in zip(again, values[:3]))


def test_pep_cache_is_not_used_when_a_number_the_problem_takes_from_theory_changes(monkeypatch):
    """The momentum comes from theory.bounds, outside the problem's source: a changed
    cg_contraction must invalidate the cache (here it would have kept 0.763 at k = 2 where a
    fresh solve gives 0.787)."""
    pytest.importorskip("PEPit", reason="the optional 'pep' extra is not installed")
    from verify.figures import pep

    real = pep.bounds.cg_contraction
    monkeypatch.setattr(pep.bounds, "cg_contraction", lambda kappa: real(kappa) * 0.9)
    monkeypatch.setattr(pep, "_pep_worst_case", lambda k, kappa: (0.5, True))
    _, _, provenance = pep.worst_cases([1, 2])
    assert provenance["source"] == "computed" and "momentum" in provenance["why"]


def test_pep_cache_agrees_with_a_recomputation_within_the_solvers_accuracy(tmp_path, monkeypatch):
    """The cache's own test: k = 1…3 recomputed agree with it within the SDP solver's accuracy
    (theory.tolerances.sdp_allowance); negative control: a cache planted 1e-4 off disagrees."""
    pytest.importorskip("PEPit", reason="the optional 'pep' extra is not installed")
    import json

    from verify.figures import pep

    rows = pep.recheck([1, 2, 3])
    assert all(r["accurate"] and r["agree"] for r in rows), rows
    cached = json.loads(pep.CACHE.read_text())
    cached["pep"][1] *= 1 + 1e-4                             # planted: k = 2 off by 1e-4
    planted = tmp_path / "pep_cache.json"
    planted.write_text(json.dumps(cached))
    monkeypatch.setattr(pep, "CACHE", planted)
    rows = pep.recheck([1, 2, 3])
    assert [r["agree"] for r in rows] == [True, False, True]


def test_fig8_says_which_solver_survives_an_indefinite_system(quick_run):
    """Figure 8's numbers: on the definite task every solver reaches rounding level; on the
    indefinite system CG breaks down, the Neumann series and the fixed point diverge, and only
    MINRES reaches rounding level."""
    _, _, doc, _ = quick_run
    data = doc["figures"]["fig8"]["data"]
    for c in data["definite"]["curves"]:
        assert c["relative_error"][-1] <= data["floor"], c["solver"]
    ind = {c["solver"]: c for c in data["indefinite"]["curves"]}
    assert ind["cg"]["status"] == "breakdown"
    assert ind["neumann"]["status"] == ind["fixed_point"]["status"] == "diverged"
    assert ind["neumann"]["final_error"] > 1 and ind["fixed_point"]["final_error"] > 1
    assert ind["minres"]["relative_error"][-1] <= data["floor"]


def test_fig7_says_which_extra_is_missing_without_importing_it(monkeypatch):
    """Figure 7 finds PEPit and cvxpy (it imports neither when the cache serves): with PEPit
    not installed it returns the 'missing' record naming it, and draws nothing from PEPit."""
    import importlib.util

    from verify.figures import pep
    from verify.registry import RunContext

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "PEPit" else real(name, *a))
    data = pep.compute(RunContext(quick=True))
    assert data["missing"] is not None and "PEPit" in data["missing"] and "pep" in data["missing"]
    assert "steps" not in data
