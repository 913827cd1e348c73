"""Every registered claim holds: in quick mode on a seed other than the report's (the CLI test
runs seed 0), in full mode on the report's seed 0 (marker `mutation`: `make mutate` and
`make test-slow` run it, `make test` does not), and in full mode on seed 7 under
`make test-slow`. The quick and full plans (which instances, which statements) are pinned
(tools/claim_plans.py); the full plans' digests, made with the report's pinned numerical kernels,
are compared in a pinned process (make mutate and make test-slow start pytest so). Claim-specific properties and negative controls live in the test
module of each claim."""
from __future__ import annotations

import pytest

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
from claim_plans import MODES, pinned, summary  # noqa: E402
from verify._numerics import state  # noqa: E402
from verify.registry import RunContext, all_claims  # noqa: E402

NAMES = sorted(all_claims())
PLANS = pinned()


def _failures(results):
    return [str(r) for r in results if not r.passed][:3]


def test_every_claim_module_registered_something():
    assert len(NAMES) >= 20, NAMES


def _plan_is_pinned(name, mode, results):
    want = PLANS.get(mode, {}).get(name)
    got = summary(results)
    assert want is not None, f"{name} has no pinned {mode} plan: run tools/claim_plans.py --write"
    assert got["results"] == want["results"] and got["statements"] == want["statements"], (
        f"{name} ({mode}): {got['results']} results, statements {got['statements']}; pinned "
        f"{want['results']}, {want['statements']} (if intended: tools/claim_plans.py --write)")
    if mode == "full" and state() == "native":
        return   # full-mode step counts at a threshold follow the BLAS threads: pinned runs only
    assert got["digest"] == want["digest"], (
        f"{name} ({mode}): the same statements on other instances than pinned (if intended: "
        f"tools/claim_plans.py --write)")


def test_every_claim_has_a_pinned_plan():
    for mode in MODES:
        assert sorted(PLANS.get(mode, {})) == NAMES, mode


@pytest.mark.parametrize("name", NAMES)
def test_claim_holds_in_quick_mode(name):
    results = all_claims()[name].run(RunContext(**MODES["quick"]))
    assert results and all(r.passed for r in results), _failures(results)
    _plan_is_pinned(name, "quick", results)


@pytest.mark.mutation        # about a minute for all claims: make mutate and make test-slow
@pytest.mark.parametrize("name", NAMES)
def test_claim_holds_in_full_mode_on_the_reports_seed(name):
    results = all_claims()[name].run(RunContext(**MODES["full"]))
    assert results and all(r.passed for r in results), _failures(results)
    _plan_is_pinned(name, "full", results)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_claim_holds_in_full_mode(name):
    results = all_claims()[name].run(RunContext(quick=False, seed=7))
    assert results and all(r.passed for r in results), _failures(results)
