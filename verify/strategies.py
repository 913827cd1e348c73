"""Hypothesis strategies for iMAML tasks, reusable in your own tests.

They draw seeds, sizes and spectra (never raw matrices) and build tasks with planted answers::

    from hypothesis import given
    from verify.strategies import quadratic_tasks

    @given(quadratic_tasks(max_dim=8))
    def test_my_meta_gradient(drawn):
        task, spec, theta = drawn
        ...
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from verify.tasks import QUERY_KINDS, planted_spectrum_task, to_array

__all__ = ["task_specs", "quadratic_tasks", "seeds"]

seeds = st.integers(min_value=0, max_value=2**32 - 1)


@st.composite
def task_specs(draw, *, min_dim=2, max_dim=12, min_kappa=1.0, max_kappa=1e3, min_lam=0.1,
               max_lam=10.0, queries=QUERY_KINDS, spectra=("uniform", "log", "random", "endpoints")):
    """Keyword arguments for :func:`verify.tasks.planted_spectrum_task` (κ drawn log-uniformly)."""
    dim = draw(st.integers(min_dim, max_dim))
    log_kappa = draw(st.floats(np.log10(min_kappa), np.log10(max_kappa)))
    kappa = float(10 ** log_kappa) if dim > 1 else 1.0
    lam = float(10 ** draw(st.floats(np.log10(min_lam), np.log10(max_lam))))
    return dict(dim=dim, kappa=max(kappa, 1.0), lam=lam, seed=draw(seeds),
                query=draw(st.sampled_from(queries)), spectrum=draw(st.sampled_from(spectra)))


@st.composite
def quadratic_tasks(draw, *, array="numpy", dtype="float64", device="cpu", theta_scale=1.0,
                    **spec_kwargs):
    """(task, spec, theta): a planted-spectrum quadratic task and a meta-parameter θ."""
    kwargs = draw(task_specs(**spec_kwargs))
    task, spec = planted_spectrum_task(**kwargs, array=array, dtype=dtype, device=device)
    rng = np.random.default_rng(draw(seeds))
    theta = to_array(theta_scale * rng.standard_normal(spec.dim), array=array, dtype=dtype,
                     device=device)
    return task, spec, theta
