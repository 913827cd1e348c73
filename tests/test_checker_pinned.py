"""Pinned tests of the checker (verify/checker/), written from its surviving mutants and from
issue 18's hand mutants: each test fails on a change that no other fast test saw."""
from __future__ import annotations

import numpy as np

import solvers
from verify.checker import check_meta_gradient
from verify.checker.reference import converged_allowance, exact_meta_gradient


def _off_by(factor):
    """Algorithm 2 (our solver) plus an error of ``factor`` × the converged rounding allowance
    of the instance, along e₁: a defect just above what rounding explains."""
    def fn(task, theta, inner_steps, cg_steps):
        g = np.asarray(solvers.imaml_meta_gradient(task, theta, inner_steps=inner_steps,
                                                   cg_steps=cg_steps).gradient, dtype=float)
        al = converged_allowance(task, theta, exact_meta_gradient(task, theta)).total
        return g + factor * al * np.eye(g.shape[0])[0]
    fn.__name__ = fn.__qualname__ = f"algorithm2_off_by_{factor:g}_allowances"
    return fn


def test_budget_mode_holds_the_converged_budget_to_the_rounding_allowance():
    """Mutant: the budget mode's allowance ×1e6. At the budget where Lemma 3's bound is at
    rounding level (1e-3 of the allowance), an error of 30 allowances is a failure of the
    budget comparison itself; 1/2 an allowance is not."""
    bad = check_meta_gradient(_off_by(30.0), inner_steps=8, cg_steps=4, max_examples=2,
                              max_kappa=30.0, corners=False)
    assert not bad.passed
    assert any(f.check == "budget" and f.measured > f.allowed for f in bad.failures), bad
    ok = check_meta_gradient(_off_by(0.5), inner_steps=8, cg_steps=4, max_examples=2,
                             max_kappa=30.0, corners=False)
    assert not any(f.check == "budget" for f in ok.failures), ok
