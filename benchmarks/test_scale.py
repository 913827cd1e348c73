"""What `--scale` and `make report` cost (`make bench`; issue 21), against the serial baseline
measured before the checks were fitted to the size and the claims split into units of work.
Nothing about time is asserted (it is machine-dependent): the numbers go to ``extra_info``.

- one d = 2000 unit of each claim over the planted grid, in process CPU time (one thread);
- the estimate of a whole `--scale` run from one unit per (claim, d) times the plan's counts,
  and of its wall time on N workers (the total over N, or the largest work item if longer);
- `make report` in CPU time (the child process's user + system time);
- the `--scale --jobs 2` run itself (wall, CPU, peak memory of the process tree), only with
  IMAML_BENCH_SCALE=1 (`make bench-scale`): it takes a quarter of an hour on two cores.
"""
from __future__ import annotations

import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from verify._threads import single_thread
from verify.registry import RunContext, all_claims

ROOT = Path(__file__).resolve().parents[1]
GRID_CLAIMS = ("certificate", "lemma3", "cg-bound", "lemma1")
#: the serial baseline (issue 21, this 2-core machine, one thread, process CPU time): one d = 2000
#: grid point of each claim; a whole --scale run; make report
BASELINE_UNIT_S = {"certificate": 15.2, "lemma3": 23.4, "cg-bound": 11.9, "lemma1": 632.0}
BASELINE_SCALE_CPU_S = 11.6 * 3600
BASELINE_REPORT_CPU_S = 56.0
WORKERS = (2, 8, 32, 128)


def _cpu(fn):
    start = time.process_time()
    out = fn()
    return time.process_time() - start, out


def _unit(name, d, ctx):
    claim = all_claims()[name]
    return next(u for u in claim.plan(ctx) if u.key and u.key[0] == "grid" and u.key[2] == d)


@pytest.mark.parametrize("name", GRID_CLAIMS)
def test_one_d2000_unit(benchmark, name):
    ctx = RunContext(seed=0, scale=True)
    unit = _unit(name, 2000, ctx)
    claim = all_claims()[name]
    with single_thread():
        seconds, results = benchmark.pedantic(lambda: _cpu(lambda: claim.execute(ctx, unit.key)),
                                              rounds=1, iterations=1)
    assert results and all(r.passed for r in results)
    benchmark.extra_info.update(cpu_s=seconds, baseline_s=BASELINE_UNIT_S[name],
                                speedup=BASELINE_UNIT_S[name] / seconds, key=list(unit.key))


def test_scale_estimate(benchmark):
    """One unit per (claim, d) of the grid claims times the plan's counts (each unit building
    its own instance: an upper estimate, a parallel run builds the instance certificate and
    lemma3 share once), the other claims run whole at --scale; the wall time on N workers is
    the total over N or the largest item."""
    ctx = RunContext(seed=0, scale=True)
    claims = all_claims()

    def estimate():
        total, largest, per_claim = 0.0, 0.0, {}
        with single_thread():
            for name, claim in claims.items():
                plan = claim.plan(ctx)
                if name not in GRID_CLAIMS:
                    seconds, _ = _cpu(lambda: claim.run(ctx))
                    per_claim[name] = seconds
                    largest = max(largest, seconds)
                    continue
                by_d = {}
                for u in plan:
                    by_d.setdefault(u.key[2] if u.key[0] == "grid" else "other", []).append(u)
                cost = 0.0
                for d, units in by_d.items():
                    if d == "other":
                        seconds = sum(_cpu(lambda u=u: claim.execute(ctx, u.key))[0] for u in units)
                    else:
                        seconds = _cpu(lambda: claim.execute(ctx, units[0].key))[0] * len(units)
                        largest = max(largest, seconds / len(units))
                    cost += seconds
                per_claim[name] = cost
            total = sum(per_claim.values())
        return total, largest, per_claim

    total, largest, per_claim = benchmark.pedantic(estimate, rounds=1, iterations=1)
    benchmark.extra_info.update(
        cpu_s=total, baseline_cpu_s=BASELINE_SCALE_CPU_S, speedup=BASELINE_SCALE_CPU_S / total,
        largest_item_s=largest, per_claim_cpu_s=per_claim,
        wall_s_on={n: max(total / n, largest) for n in WORKERS})


def _children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _tree_rss(pid) -> int:
    import psutil

    try:
        proc = psutil.Process(pid)
        return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])
    except psutil.Error:
        return 0


def _measured_run(args):
    """(wall s, CPU s of the process tree, peak RSS of the tree in bytes, return code)."""
    cpu0, start, peak = _children_cpu(), time.perf_counter(), [0]
    proc = subprocess.Popen([sys.executable, "-m", "verify", *args, "--no-progress"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stop = threading.Event()

    def sample():
        while not stop.wait(0.5):
            peak[0] = max(peak[0], _tree_rss(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    proc.wait()
    stop.set()
    sampler.join()
    return time.perf_counter() - start, _children_cpu() - cpu0, peak[0], proc.returncode


def test_make_report_cpu(benchmark, tmp_path):
    wall, cpu, peak, rc = benchmark.pedantic(
        lambda: _measured_run(["run", "--out", str(tmp_path / "report")]),
        rounds=1, iterations=1)
    assert rc == 0
    benchmark.extra_info.update(cpu_s=cpu, wall_s=wall, peak_rss_mb=peak / 2 ** 20,
                                baseline_cpu_s=BASELINE_REPORT_CPU_S,
                                speedup=BASELINE_REPORT_CPU_S / cpu, load=os.getloadavg())


@pytest.mark.skipif(os.environ.get("IMAML_BENCH_SCALE") != "1",
                    reason="the whole --scale run takes a quarter of an hour on two cores: "
                           "IMAML_BENCH_SCALE=1 (make bench-scale)")
def test_scale_run_on_two_processes(benchmark, tmp_path):
    load_before = os.getloadavg()
    wall, cpu, peak, rc = benchmark.pedantic(
        lambda: _measured_run(["run", "--scale", "--jobs", "2", "--out", str(tmp_path / "scale")]), rounds=1, iterations=1)
    assert rc == 0
    benchmark.extra_info.update(wall_s=wall, cpu_s=cpu, peak_rss_mb=peak / 2 ** 20,
                                baseline_cpu_s=BASELINE_SCALE_CPU_S,
                                speedup=BASELINE_SCALE_CPU_S / cpu, load_before=load_before,
                                load_after=os.getloadavg())
