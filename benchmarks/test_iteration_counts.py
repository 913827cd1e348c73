"""Iteration-count benchmarks (`make bench`, not `make test`): per configuration, the steps
Nesterov, gradient descent and CG actually take to reach a relative accuracy, next to the bound
counts (Lemma 2, the CG bound). pytest-benchmark times the sweep and records every count, the
final residuals and the ratios actual/bound in ``extra_info``; the report's iteration-count table
comes from the same function (verify.sweeps.iteration_count_row)."""
from __future__ import annotations

import pytest

from verify.iteration_counts import iteration_count_configs, iteration_count_row

CONFIGS = iteration_count_configs(quick=False)


@pytest.mark.parametrize("config", CONFIGS,
                         ids=[f"d{c['dim']}-kappa{c['kappa']:g}-target{c['target']:g}" for c in CONFIGS])
def test_iteration_counts(benchmark, config):
    row = benchmark.pedantic(iteration_count_row, args=(config,), kwargs={"seed": 0},
                             rounds=1, iterations=1)
    benchmark.extra_info.update(row)
    # step counts are deterministic: the bounds must hold, and the negative control must show
    assert row["nesterov_steps"] is not None and row["nesterov_steps"] <= row["lemma2_steps"]
    assert row["cg_steps"] is not None and row["cg_steps"] <= row["cg_bound_steps"]
    if config["kappa"] >= 100:   # without acceleration Lemma 2's count is not enough
        assert row["gd_steps"] is None or row["gd_steps"] > row["lemma2_steps"]
