"""``imaml-verify gpu``: every piece of GPU evidence in one command, within a time budget.

    imaml-verify gpu [--out DIR] [--budget SECONDS] [--dry-run] [--stage NAME ...] [--claim NAME ...]

Stages, in this order, each in a subprocess with a timeout:

- ``tests``: ``pytest -m gpu`` (the tests marked gpu; each must stay under 60 s on a GPU);
- ``claims``: every claim in quick mode on CUDA tensors, in float64 and in float32
  (``imaml-verify run --quick --device cuda --dtype ... --no-figures``; each run writes its own
  REPORT.md and results.json under DIR/claims-<dtype>/);
- ``fewshot``: the paper-size few-shot checks (:mod:`verify.fewshot.gpu_check`: 64 filters,
  28×28, λ = 2, 16 GD steps, 5 CG steps; iMAML-GD in three CG modes and iMAML-HF against MAML,
  first-order MAML, Reptile and no meta-learning, training shortened to the time it is given);
  writes DIR/fewshot_gpu.json, DIR/fewshot.md and DIR/fewshot_memory.png;
- ``bandwidth``: batched CG bytes per second of solvers.cg against a sync-free torch loop and a
  device copy (:mod:`verify.gpu.bandwidth`).

DIR/summary.json is rewritten atomically whenever a stage starts (status "running", so a run
killed from outside shows where it died) and the moment it ends, with its status ("pass",
"fail", "timeout" or "skipped" with a reason), its seconds and its figures. The budget (default
420 s) counts from this process's start (Python start-up included): each stage gets a share of
what is left, proportional to its planned share, as its subprocess timeout; a stage whose share
is below its minimum is skipped. At the end DIR/REPORT.md is written from the summary, with the
few-shot section. ``--dry-run``: every stage at tiny sizes on the CPU (claims on torch CPU
tensors), default DIR reports/gpu-dry; a GPU's figures are never judged from it.
``--stage``: run only these stages, keeping the other stages of an existing DIR/summary.json (to
rerun one that failed). Exit status 0 when every stage run passes, 1 otherwise, 2 when there is no
CUDA device and no --dry-run.
"""
from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from verify.options import to_argv
from verify.report._atomic import atomic_write_json

__all__ = ["Stage", "STAGE_TABLE", "STAGES", "SHARES", "add_parser", "run", "main", "run_gpu",
           "allot", "seconds_since_process_start"]

DEFAULT_BUDGET_S = 420.0  #: the budget of a device run (a dry run has none unless given one)
RESERVE_S = 5.0        #: kept back for the final summary and REPORT.md
KILL_GRACE_S = 3.0     #: SIGTERM, then SIGKILL this long after
MAX_TEST_SECONDS = 60.0  #: no single gpu test may take longer on a GPU
CLAIM_DTYPES = (("float64", 0.6), ("float32", 0.4))  #: claims runs and their part of the stage

REPO = Path(__file__).resolve().parents[2]


# -- small tools ----------------------------------------------------------------------------------
def seconds_since_process_start() -> float:
    """Seconds since this Python process started (Linux: /proc/self/stat against the system's
    uptime), so that a budget covers the interpreter's start-up; 0.0 where unknown."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])          # field 22 of proc(5): starttime, clock ticks
        with open("/proc/uptime", encoding="ascii") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


def allot(stage, remaining, pending, *, shares=None) -> float:
    """Seconds for ``stage`` out of ``remaining``, shared in proportion to the planned shares of
    the stages still to run (``pending``, ``stage`` included)."""
    shares = SHARES if shares is None else shares
    total = sum(shares[s] for s in pending)
    return max(0.0, remaining) * shares[stage] / total


def _device_info(dry_run):
    import numpy
    import torch

    info = {"torch": torch.__version__, "cuda": torch.version.cuda, "numpy": numpy.__version__,
            "python": platform.python_version(), "host": platform.node()}
    if torch.cuda.is_available() and not dry_run:
        info["device"] = torch.cuda.get_device_name(0)
        props = torch.cuda.get_device_properties(0)
        info["device_memory_bytes"] = int(props.total_memory)
    else:
        info["device"] = (f"cpu ({platform.processor() or platform.machine()}, "
                          f"{os.cpu_count()} cores)")
    return info


def _run_process(argv, *, timeout, log, env=None):
    """Run argv (cwd: the repository) with stdout and stderr to ``log``; (returncode or None on
    timeout, seconds). On timeout the whole process group gets SIGTERM, then SIGKILL."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log, "ab") as out:
        out.write(("$ " + " ".join(map(str, argv)) + "\n").encode())
        out.flush()
        proc = subprocess.Popen([str(a) for a in argv], cwd=REPO, stdout=out,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            rc = proc.wait(timeout=None if timeout is None else max(timeout, 0.1))
        except subprocess.TimeoutExpired:
            rc = None
            for sig, wait in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, None)):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
            proc.wait()
    return rc, time.perf_counter() - t0


# -- the stages -------------------------------------------------------------------------------------
class _Stage:
    """What a stage runs and how its figures are read back; ``run`` returns the stage entry."""

    def __init__(self, out, dry_run, python, claims):
        self.out, self.dry_run, self.python, self.claims = out, dry_run, python, claims
        self.device = "cpu" if dry_run else "cuda"

    def log(self, name):
        return self.out / "logs" / f"{name}.log"


def _stage_tests(st, seconds):
    tests = REPO / "tests"
    if not tests.is_dir():
        return {"status": "skipped", "reason": f"no tests folder at {tests} (an installed copy "
                                               f"without its sources)"}
    junit = st.out / "tests" / "junit.xml"
    if junit.exists():
        junit.unlink()
    argv = [st.python, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
            "--junitxml", junit, "-o", "junit_family=xunit1", str(tests)]
    rc, secs = _run_process(argv, timeout=seconds, log=st.log("tests"))
    entry = {"command": [str(a) for a in argv[1:]], "returncode": rc}
    if junit.is_file():
        entry.update(_junit_figures(junit))
    if rc is None:
        entry.update(status="timeout", reason=f"pytest -m gpu still running after {seconds:.0f} s")
    elif rc not in (0, 5):
        entry.update(status="fail", reason=f"pytest exited {rc} (see logs/tests.log)")
    elif st.dry_run:
        entry.update(status="pass", note="dry run: gpu tests skip without CUDA; this shows the "
                                         "stage runs, not that they pass")
    elif entry.get("passed", 0) == 0:
        entry.update(status="fail", reason="no gpu test ran (is CUDA visible to pytest?)")
    elif entry.get("over_limit"):
        entry.update(status="fail", reason=f"gpu tests over {MAX_TEST_SECONDS:.0f} s: "
                                           + ", ".join(entry["over_limit"]))
    else:
        entry["status"] = "pass"
    return entry


def _junit_figures(path) -> dict:
    """Counts and per-test seconds from a pytest junit XML file."""
    root = ET.parse(path).getroot()
    cases = []
    for case in root.iter("testcase"):
        kind = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                kind = {"failure": "failed", "error": "errors", "skipped": "skipped"}[child.tag]
        name = f"{case.get('file') or case.get('classname')}::{case.get('name')}"
        cases.append((name, float(case.get("time") or 0.0), kind))
    counts = {k: sum(c[2] == k for c in cases) for k in ("passed", "failed", "errors", "skipped")}
    ran = sorted((c for c in cases if c[2] != "skipped"), key=lambda c: -c[1])
    return {**counts, "tests": len(cases), "test_seconds": sum(c[1] for c in cases),
            "slowest": [{"test": n, "seconds": s} for n, s, _ in ran[:5]],
            "failures": [n for n, _, k in cases if k in ("failed", "errors")],
            "over_limit": [n for n, s, _ in ran if s > MAX_TEST_SECONDS]}


def _stage_claims(st, seconds):
    entry = {"runs": {}}
    deadline = None if seconds is None else time.monotonic() + seconds
    for i, (dtype, share) in enumerate(CLAIM_DTYPES):
        rest = sum(s for _, s in CLAIM_DTYPES[i:])
        budget = None if deadline is None else (deadline - time.monotonic()) * share / rest
        folder = st.out / f"claims-{dtype}"
        argv = [st.python, "-m", "verify", "run", "--no-figures",
                *to_argv(quick=True, device=st.device, dtype=dtype, array="torch",
                         progress=False, full_results=True, out=folder)]
        for name in st.claims or ():
            argv += ["--claim", name]
        results = folder / "results.json"
        if results.exists():
            results.unlink()
        rc, secs = _run_process(argv, timeout=budget, log=st.log(f"claims-{dtype}"))
        run = {"command": [str(a) for a in argv[1:]], "returncode": rc, "seconds": secs,
               "report": f"claims-{dtype}/REPORT.md"}
        if results.is_file():
            run.update(_claims_figures(json.loads(results.read_text(encoding="utf-8"))))
        if rc is None:
            run.update(status="timeout", reason=f"still running after {budget:.0f} s")
        elif rc == 0 and run.get("claims_failed") == []:
            run["status"] = "pass"
        else:
            run.update(status="fail", reason=f"exit {rc}; failing claims: "
                       f"{', '.join(run.get('claims_failed', [])) or '(no results.json)'}")
        entry["runs"][dtype] = run
    statuses = [r["status"] for r in entry["runs"].values()]
    entry["status"] = ("pass" if all(s == "pass" for s in statuses) else
                       "timeout" if "timeout" in statuses else "fail")
    if entry["status"] != "pass":
        entry["reason"] = "; ".join(f"{d}: {r.get('reason')}" for d, r in entry["runs"].items()
                                    if r["status"] != "pass")
    return entry


def _claims_figures(doc) -> dict:
    claims = doc.get("claims", [])
    failed = [c["name"] for c in claims if c.get("status") != "PASS"]
    out = {"claims_run": len(claims), "claims_passed": len(claims) - len(failed),
           "claims_failed": failed, "device": doc.get("settings", {}).get("device")}
    for c in claims:   # the memory claim's rows on the run's device, with allocator figures
        if c["name"] == "memory":
            out["memory"] = [{"statement": r.get("statement"), "measured": r.get("measured"),
                              "bound": r.get("bound"), "passed": r.get("passed"),
                              "instance": r.get("instance"),
                              **({"allocator": r["details"]["cuda_allocator_peak_bytes_after_warmup"]}
                                 if "cuda_allocator_peak_bytes_after_warmup" in r.get("details", {})
                                 else {})}
                             for r in c.get("checks", []) if "MAML's at K" in str(r.get("statement"))]
    return out


def _stage_fewshot(st, seconds):
    from verify.fewshot.gpu_check import OUTPUT_NAME

    doc_path = st.out / OUTPUT_NAME
    if doc_path.exists():
        doc_path.unlink()
    argv = [st.python, "-m", "verify.fewshot.gpu_check", "--out", st.out,
            "--size", "dry" if st.dry_run else "full", "--device", st.device]
    if seconds is not None:   # the child's own deadline: before the timeout, so it ends by itself
        argv += ["--deadline", f"{time.time() + seconds - KILL_GRACE_S - 2.0:.3f}"]
    rc, secs = _run_process(argv, timeout=seconds, log=st.log("fewshot"))
    entry = {"command": [str(a) for a in argv[1:]], "returncode": rc,
             "section": "fewshot.md"}
    doc = json.loads(doc_path.read_text(encoding="utf-8")) if doc_path.is_file() else None
    if doc is not None:
        entry.update(_fewshot_figures(doc))
    if rc is None:
        entry.update(status="timeout", reason=f"still running after {seconds:.0f} s; parts "
                     f"done: {', '.join((doc or {}).get('parts_done', [])) or 'none'}")
    elif rc != 0 or doc is None:
        entry.update(status="fail", reason=f"exit {rc} (see logs/fewshot.log)")
    elif not doc.get("complete"):
        entry.update(status="fail", reason="the few-shot run did not finish every part")
    elif not all(entry["verdicts"].values()):
        entry.update(status="fail", reason="failed: " + ", ".join(
            k for k, v in entry["verdicts"].items() if not v))
    else:
        entry["status"] = "pass"
    return entry


def _fewshot_figures(doc) -> dict:
    out = {"parts_done": doc.get("parts_done", []), "verdicts": doc.get("verdicts", {}),
           "seconds_by_part": doc.get("seconds", {})}
    tr = doc.get("training") or {}
    out["accuracy"] = {k: {"mean": v["mean"], "ci95": v["ci95"], "steps": v.get("steps")}
                       for k, v in tr.get("methods", {}).items() if "mean" in v}
    if "paper_ordering" in tr:
        out["paper_ordering"] = tr["paper_ordering"]
    modes = doc.get("cg_modes")
    if modes:
        out["cg_modes"] = modes["summary"]
        out["indefinite_tasks"] = f"{modes['indefinite_tasks']} of {len(modes['tasks'])}"
    return out


def _stage_bandwidth(st, seconds):
    path = st.out / "bandwidth.json"
    if path.exists():
        path.unlink()
    argv = [st.python, "-m", "verify.gpu.bandwidth", "--out", path,
            "--size", "dry" if st.dry_run else "full", "--device", st.device]
    rc, secs = _run_process(argv, timeout=seconds, log=st.log("bandwidth"))
    entry = {"command": [str(a) for a in argv[1:]], "returncode": rc}
    doc = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    if doc is not None:
        entry.update(_bandwidth_figures(doc))
    if rc is None:
        entry.update(status="timeout", reason=f"still running after {seconds:.0f} s")
    elif doc is None or doc.get("small") is None:
        entry.update(status="fail", reason=f"exit {rc}; no complete bandwidth.json")
    elif not doc.get("agree"):
        entry.update(status="fail", reason="solvers.cg and the plain loop disagree beyond rounding")
    elif doc.get("passed") is False:
        entry.update(status="fail", reason="below target: solver under "
                     f"{100 * doc['targets']['min_fraction_of_plain']:.0f}% of the plain loop at "
                     f"{doc['batched'][0]['n_tasks']}x{doc['batched'][0]['dim']} "
                     f"{doc['batched'][0]['dtype']}, or the small task over "
                     f"{doc['targets']['max_small_step_ratio']:g}x per step")
    else:
        entry["status"] = "pass"
        if not doc.get("judged"):
            entry["note"] = "not judged: CPU timings say nothing of the GPU targets"
    return entry


def _bandwidth_figures(doc) -> dict:
    rows = [{"size": f"{r['n_tasks']}x{r['dim']} {r['dtype']}",
             "solver_GBps": r["bytes_per_second"]["solver"] / 1e9,
             "plain_GBps": r["bytes_per_second"]["plain"] / 1e9,
             "copy_GBps": r["bytes_per_second"]["copy"] / 1e9,
             "fraction_of_plain": r["fraction_of_plain"], "fraction_of_copy": r["fraction_of_copy"],
             "plain_fraction_of_copy": r["plain_fraction_of_copy"]} for r in doc["batched"]]
    out = {"batched": rows, "judged": doc.get("judged"), "targets": doc.get("targets")}
    if doc.get("small"):
        sm = doc["small"]
        out["small"] = {"size": f"d={sm['dim']} {sm['dtype']}",
                        "solver_us_per_step": 1e6 * sm["seconds_per_step"]["solver"],
                        "plain_us_per_step": 1e6 * sm["seconds_per_step"]["plain"],
                        "step_time_ratio": sm["step_time_ratio"]}
    return out


@dataclass(frozen=True)
class Stage:
    """One stage of the command: its name, its planned share of the budget (what is left is
    re-shared in proportion as stages end), the seconds below which it is skipped rather than
    started on a device (a dry run: 3 s), and what runs it: ``run(stage, seconds)`` returns the
    stage's entry of summary.json (``seconds`` None: no time limit)."""

    name: str
    share: float
    min_seconds: float
    run: Callable


#: the stages, in the order they run: the one table
STAGE_TABLE = (Stage("tests", 0.17, 30.0, _stage_tests),
               Stage("claims", 0.30, 30.0, _stage_claims),
               Stage("fewshot", 0.47, 60.0, _stage_fewshot),
               Stage("bandwidth", 0.06, 12.0, _stage_bandwidth))
STAGES = tuple(s.name for s in STAGE_TABLE)
SHARES = {s.name: s.share for s in STAGE_TABLE}
RUNNERS = {s.name: s.run for s in STAGE_TABLE}


# -- the command ------------------------------------------------------------------------------------
def run_gpu(out, *, budget=420.0, dry_run=False, stages=None, claims=None, python=None,
            runners=None, started_s_ago=None, echo=print, clock=time.monotonic) -> dict:
    """Run the stages (all, or ``stages``) into ``out`` within ``budget`` seconds counted from
    this process's start (``budget=None``: no time limit, as a dry run has by default); returns
    the summary (also DIR/summary.json, DIR/REPORT.md). ``runners`` replaces stage runners and
    ``clock`` the monotonic clock (tests of the budget logic); ``started_s_ago`` the measured
    start-up time."""
    from verify.gpu.report import write_report

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runners = {**RUNNERS, **(runners or {})}
    chosen = list(STAGES if not stages else [s for s in STAGES if s in stages])
    unknown = set(stages or ()) - set(STAGES)
    if unknown:
        raise ValueError(f"stage must be among {STAGES}, got {sorted(unknown)}")
    age = seconds_since_process_start() if started_s_ago is None else float(started_s_ago)
    t_start = clock() - age
    deadline = None if budget is None else t_start + float(budget)
    path = out / "summary.json"
    summary = {}
    if stages and path.is_file():   # rerun of some stages: keep the others
        summary = json.loads(path.read_text(encoding="utf-8"))
    summary.update({"schema": "imaml-verify-gpu/1", "dry_run": bool(dry_run),
                    **_device_info(dry_run), "budget_s": None if budget is None else float(budget),
                    "startup_s": age, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                               time.gmtime(time.time() - age)),
                    "argv": list(sys.argv), "status": "running"})
    summary.setdefault("stages", {})
    st = _Stage(out, dry_run, python or sys.executable, claims)
    minimum = {t.name: (3.0 if dry_run else t.min_seconds) for t in STAGE_TABLE}

    def save():
        summary["elapsed_s"] = clock() - t_start
        atomic_write_json(path, summary)

    for i, name in enumerate(chosen):
        if deadline is None:   # no budget (a dry run): no stage is timed out or skipped
            seconds = None
        else:
            seconds = allot(name, deadline - clock() - RESERVE_S, chosen[i:])
        if seconds is not None and seconds < minimum[name]:
            summary["stages"][name] = {"status": "skipped", "seconds": 0.0,
                                       "reason": f"{seconds:.0f} s left for it, under its minimum "
                                                 f"{minimum[name]:.0f} s (budget {budget:.0f} s)"}
            save()
            echo(f"gpu: {name}: skipped ({summary['stages'][name]['reason']})")
            continue
        summary["stages"][name] = {"status": "running", "timeout_s": seconds,
                                   "started_at_s": clock() - t_start}
        save()
        echo(f"gpu: {name}: running" + ("" if seconds is None else f" (timeout {seconds:.0f} s)"))
        t0 = clock()
        try:
            entry = runners[name](st, seconds)
        except Exception as exc:  # a stage that crashes in this process is a failed stage
            import traceback

            entry = {"status": "fail", "reason": f"{type(exc).__name__}: {exc}",
                     "traceback": traceback.format_exc()}
        entry.update(seconds=clock() - t0, timeout_s=seconds)
        summary["stages"][name] = entry
        save()
        echo(f"gpu: {name}: {entry['status']} in {entry['seconds']:.1f} s"
             + (f" ({entry['reason']})" if entry.get("reason") else ""))
    ran = [summary["stages"][s]["status"] for s in summary["stages"]]
    summary["status"] = "pass" if ran and all(s == "pass" for s in ran) else "fail"
    save()
    write_report(out, summary)
    summary["elapsed_s"] = clock() - t_start
    atomic_write_json(path, summary)
    return summary


def add_parser(subparsers):
    """Register ``gpu`` on an argparse sub-parsers object."""
    p = subparsers.add_parser("gpu", help="all GPU evidence in one run (tests, claims on CUDA, "
                                          "few-shot, CG bandwidth) within a time budget")
    p.add_argument("--out", default=None,
                   help="output folder (default reports/gpu, reports/gpu-dry with --dry-run)")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds for the whole run, Python start-up included (default 420; a "
                        "dry run has no time limit unless given one)")
    p.add_argument("--dry-run", action="store_true",
                   help="every stage at tiny sizes on the CPU (under 2 minutes)")
    p.add_argument("--stage", action="append", choices=STAGES, default=None,
                   help="run only this stage (repeatable); the others of DIR/summary.json stay")
    p.add_argument("--claim", action="append", default=None, metavar="NAME",
                   help="the claims stage runs only this claim (repeatable)")
    return p


def run(args) -> int:
    """Run the ``gpu`` command parsed by :func:`add_parser`."""
    if args.budget is not None and not args.budget > 0:
        print("imaml-verify gpu: error: --budget must be > 0", file=sys.stderr)
        return 2
    budget = args.budget if args.budget is not None or args.dry_run else DEFAULT_BUDGET_S
    if not args.dry_run:
        import torch

        if not torch.cuda.is_available():
            print("imaml-verify gpu: no CUDA device here; --dry-run runs every stage at tiny "
                  "sizes on the CPU", file=sys.stderr)
            return 2
    out = args.out or ("reports/gpu-dry" if args.dry_run else "reports/gpu")
    summary = run_gpu(out, budget=budget, dry_run=args.dry_run, stages=args.stage,
                      claims=args.claim)
    limit = "no budget" if budget is None else f"budget {budget:.0f} s"
    print(f"gpu: {summary['status']} on {summary['device']} in {summary['elapsed_s']:.0f} s "
          f"({limit}); {out}/summary.json, {out}/REPORT.md")
    return 0 if summary["status"] == "pass" else 1


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="imaml-verify")
    add_parser(parser.add_subparsers(dest="command"))
    return run(parser.parse_args(["gpu", *(sys.argv[1:] if argv is None else argv)]))


if __name__ == "__main__":
    sys.exit(main())
