"""Every registered claim holds: in quick mode on a seed other than the report's (the CLI test
runs seed 0), and in full mode under `make test-slow`. Claim-specific properties and negative
controls live in the test module of each claim."""
from __future__ import annotations

import pytest

from verify.registry import RunContext, all_claims

NAMES = sorted(all_claims())


def _failures(results):
    return [str(r) for r in results if not r.passed][:3]


def test_every_claim_module_registered_something():
    assert len(NAMES) >= 20, NAMES


@pytest.mark.parametrize("name", NAMES)
def test_claim_holds_in_quick_mode(name):
    results = all_claims()[name].run(RunContext(quick=True, seed=1))
    assert results and all(r.passed for r in results), _failures(results)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_claim_holds_in_full_mode(name):
    results = all_claims()[name].run(RunContext(quick=False, seed=7))
    assert results and all(r.passed for r in results), _failures(results)
