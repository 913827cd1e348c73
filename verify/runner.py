"""A run is a function: :func:`run` checks the selected claims, computes and draws the selected
figures and the iteration-count table, and returns the results document (results.json). With
``out=`` it also writes the report — REPORT.md, results.json, results.schema.json and figures/ — as
one set (:func:`verify.report.write_report_set`): any interruption or full disk leaves the
previous report whole.

Everything the caller can get wrong is checked by :func:`validate_request` BEFORE any work, and is
refused with :class:`UsageError` (a ValueError) naming the option: unknown claims or figures, a
claim or figure list that is a bare string or not a list of names, a selection of nothing, a
seed outside 0..2**32 - 1 (what NumPy and torch.manual_seed both accept), a boolean option that
is not a boolean, an unknown dtype, array library or device, a CUDA device that is not there, a
``--dask`` address that does not parse (or, when the run starts, a scheduler that does not
answer), an output folder that is not a path, is a file or cannot be written, and an output
folder another run is writing (its lock is held from before the first claim to the end). The
command line (``imaml-verify``) only parses, calls this and prints.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field, make_dataclass
from pathlib import Path

from verify import options as _options
from verify._interrupt import check as check_interrupt
from verify.options import RUN_OPTIONS

__all__ = ["run", "RunRequest", "UsageError", "validate_request", "run_claim", "run_figure",
           "DTYPES", "ARRAYS"]

DTYPES = ("float64", "float32")
ARRAYS = ("numpy", "torch")


class UsageError(ValueError):
    """A request that cannot be run as given (the command line exits 2 and touches nothing)."""


def _complete(self) -> bool:
    """Every claim, every figure and the table: the full report (not a partial selection)."""
    return self.claims is None and self.figures is None and self.iteration_counts is not False


#: What to run, validated by :func:`validate_request`: the selection (claims, figures), every
#: option of :data:`verify.options.RUN_OPTIONS` (see :func:`run`) and the command to record.
RunRequest = make_dataclass(
    "RunRequest",
    [("claims", object, field(default=None)), ("figures", object, field(default=None)),
     *[(o.name, object, field(default=o.default)) for o in RUN_OPTIONS],
     ("command", list, field(default_factory=list))],
    namespace={"complete": property(_complete),
               "__doc__": "What to run, validated by validate_request (see run for the fields)."})
RunRequest.__module__ = __name__


def _check_out(out) -> Path:
    """The output folder must be a folder (or creatable as one) that this process can write."""
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {out}: exists and is not a folder")
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"--out {out}: {probe} is not a folder")
    try:   # root passes os.access everywhere: make (and remove) a real entry to be sure
        tempfile.TemporaryDirectory(dir=probe, prefix=".imaml-verify-probe-").cleanup()
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot write in {probe} ({exc.strerror or exc})") from None
    return path


def _check_names(value, option, what, types):
    """A selection must be None or a list of names: a bare string is refused (it would be read
    as a list of its letters), and so is anything that is not a list of names."""
    if value is None:
        return
    if isinstance(value, (str, bytes)):
        raise UsageError(f"{option} must be a list of {what}, got the string {value!r} (write "
                         f"[{value!r}])")
    try:
        items = list(value)
    except TypeError:
        raise UsageError(f"{option} must be a list of {what}, got {type(value).__name__} "
                         f"{value!r}") from None
    bad = [v for v in items if isinstance(v, bool) or not isinstance(v, types)]
    if bad:
        raise UsageError(f"{option} must be a list of {what}, got {bad[0]!r} "
                         f"({type(bad[0]).__name__}) among them")


_DASK_SCHEMES = ("tcp", "tls", "inproc", "ucx", "ws", "wss")


def _check_dask_address(address: str) -> None:
    """A scheduler address: [tcp|tls|ucx|ws|wss]://HOST:PORT (or HOST:PORT, or inproc://...)."""
    from urllib.parse import urlsplit

    text = address.strip()
    hint = "e.g. tcp://scheduler:8786"
    if not text:
        raise UsageError(f"--dask needs a scheduler address ({hint}), got {address!r}")
    url = urlsplit(text if "://" in text else f"tcp://{text}")
    if url.scheme not in _DASK_SCHEMES:
        raise UsageError(f"--dask {address}: unknown protocol {url.scheme!r} (one of "
                         f"{', '.join(_DASK_SCHEMES)}; {hint})")
    if url.scheme == "inproc":
        return
    try:
        port = url.port
    except ValueError:
        port = None
    if not url.hostname or port is None or not 0 < port < 65536 or url.path not in ("", "/"):
        raise UsageError(f"--dask {address}: not a scheduler address PROTOCOL://HOST:PORT ({hint})")


def validate_request(req: RunRequest):
    """Check everything about ``req`` that can be checked without running it; return
    (claims, figure ids, with iteration counts?, run context). Raises :class:`UsageError`."""
    from verify.figures import FIGURES, lookup
    from verify.registry import RunContext, all_claims

    from validation import check_seed

    try:
        check_seed(req.seed, "--seed")
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    for name in ("quick", "scale", "full_results"):
        if not isinstance(getattr(req, name), bool):
            raise UsageError(f"{name} must be True or False, got {getattr(req, name)!r}")
    if req.iteration_counts is not None and not isinstance(req.iteration_counts, bool):
        raise UsageError(f"iteration_counts must be True, False or None, got "
                         f"{req.iteration_counts!r}")
    if not isinstance(req.device, str):
        raise UsageError(f"--device must be a string (cpu, cuda, cuda:N), got "
                         f"{type(req.device).__name__} {req.device!r}")
    if req.dtype not in DTYPES:
        raise UsageError(f"--dtype must be one of {', '.join(DTYPES)}, got {req.dtype!r}")
    device = str(req.device)
    array = req.array or ("numpy" if device == "cpu" else "torch")
    if array not in ARRAYS:
        raise UsageError(f"--array must be one of {', '.join(ARRAYS)}, got {array!r}")
    if device != "cpu":
        import torch

        try:
            dev = torch.device(device)
        except (RuntimeError, ValueError):
            raise UsageError(f"--device must be cpu, cuda or cuda:N, got {device!r}") from None
        if dev.type != "cuda":
            raise UsageError(f"--device must be cpu, cuda or cuda:N, got {device!r}")
        if not torch.cuda.is_available():
            raise UsageError(f"--device {device}: no CUDA device here "
                             f"(torch.cuda.is_available() is False)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"--device {device}: this machine has {torch.cuda.device_count()} "
                             f"CUDA device(s)")
        if array != "torch":
            raise UsageError(f"--device {device} needs --array torch, got --array {array}")
    known = all_claims()
    _check_names(req.claims, "claims", "claim names", (str,))
    _check_names(req.figures, "figures", "figure ids, numbers or names", (str, int))
    names = list(known) if req.claims is None else list(req.claims)
    req.claims = None if req.claims is None else names
    req.figures = None if req.figures is None else list(req.figures)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(f"no claim {', '.join(map(repr, unknown))}; known: {', '.join(known)}")
    try:
        fig_ids = list(FIGURES) if req.figures is None else [lookup(str(i)).id for i in req.figures]
    except KeyError as exc:
        raise UsageError(exc.args[0]) from None
    fig_ids = list(dict.fromkeys(fig_ids))
    if isinstance(req.jobs, bool) or not isinstance(req.jobs, int) or req.jobs < 1:
        raise UsageError(f"--jobs must be a positive integer, got {req.jobs!r}")
    if req.dask is not None:
        if req.jobs != 1:
            raise UsageError("give --jobs or --dask, not both")
        if isinstance(req.dask, str):
            _check_dask_address(req.dask)
        try:
            import distributed  # noqa: F401
        except ImportError:
            raise UsageError("--dask needs the optional 'dask' extra: "
                             "pip install 'imaml-verify[dask]'") from None
    if req.out is not None:
        if not isinstance(req.out, (str, os.PathLike)) or not str(req.out).strip():
            raise UsageError(f"--out must be a folder path (a str or os.PathLike), got "
                             f"{type(req.out).__name__} {req.out!r}")
        _check_out(req.out)
    if req.scale and req.quick:
        raise UsageError("give --quick or --scale, not both")
    with_counts = req.complete if req.iteration_counts is None else bool(req.iteration_counts)
    if not names and not fig_ids and not with_counts:
        raise UsageError("nothing to run: no claim, no figure and no iteration-count table "
                         "selected (claims=[] and figures=[]); name some, or run everything "
                         "with claims=None")
    ctx = RunContext(seed=req.seed, quick=req.quick, scale=bool(req.scale), dtype=req.dtype,
                     device=device, array=array)
    return [known[n] for n in dict.fromkeys(names)], fig_ids, with_counts, ctx


def run_claim(claim, ctx) -> dict:
    """The results record of one claim (a claim that raises is recorded as an ERROR, with its
    traceback, and the run goes on). Keeps every check; :func:`verify.report.compact` trims."""
    from verify.report import claim_record

    start = time.perf_counter()
    try:
        results, error = claim.run(ctx), None
    except Exception:
        results, error = [], traceback.format_exc()
    return claim_record(claim, results, elapsed_s=time.perf_counter() - start, error=error)


def run_figure(fig_id: str, ctx, records, *, formats=("png", "svg")):
    """(entry for results.json, {relative path: bytes}) of one figure. Its data are computed,
    stored in the entry, and the figure is drawn from them; a figure that raises is recorded as
    an error (the run then fails), one whose optional extra is missing as skipped."""
    from verify import figures

    spec = figures.FIGURES[fig_id]
    start = time.perf_counter()
    entry = {"id": fig_id, "name": spec.name, "title": spec.title, "files": [], "data": None,
             "reason": None, "caption": ""}
    files = {}
    try:
        data = spec.compute(ctx, list(records))
        entry["data"] = data
        reason = spec.unavailable(data)
        if reason:
            entry.update(status="skipped", reason=reason, caption=spec.caption(data))
        else:
            fig = spec.draw(data)
            for fmt in formats:
                rel = f"figures/{fig_id}-{spec.name}.{fmt}"
                files[rel] = figures.render(fig, fmt)
                entry["files"].append(rel)
            entry.update(status="drawn", caption=spec.caption(data))
    except Exception:
        entry.update(status="error", reason=traceback.format_exc(), files=[])
        files = {}
    entry["elapsed_s"] = time.perf_counter() - start
    return entry, files


class _Serial:
    """Run work units here, one after another (the default: :func:`_run_here`, in order).

    The parallel executors' ``map(fn, arg_lists, on_done)`` returns the results in the order
    of ``arg_lists`` and calls ``on_done(i)`` in this process as unit i finishes (in the order
    they finish: the progress bar and the Ctrl-C check of parallel runs)."""

    execution = None

    def close(self):
        pass


class _Processes:
    """Run work units in ``jobs`` local processes (spawned, one BLAS/torch thread each)."""

    THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

    def __init__(self, jobs: int):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.execution = {"executor": "processes", "workers": jobs}
        saved = {k: os.environ.get(k) for k in self.THREAD_VARS}
        os.environ.update({k: "1" for k in self.THREAD_VARS})   # inherited by the workers
        try:
            self.pool = ProcessPoolExecutor(max_workers=jobs,
                                            mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_single_thread_worker)
            self.pool.submit(int).result()     # start the workers while the variables are set
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def map(self, fn, arg_lists, on_done=None):
        from concurrent.futures import as_completed

        futures = [self.pool.submit(fn, *args) for args in arg_lists]
        _report_done(futures, as_completed(futures), on_done)
        return [f.result() for f in futures]

    def close(self):
        self.pool.shutdown(cancel_futures=True)


class _Dask:
    """Run work units on a dask.distributed cluster (the scheduler at ``address``)."""

    CONNECT_TIMEOUT_S = 10

    def __init__(self, address):
        from distributed import Client

        self.execution = {"executor": "dask", "retried": 0, "retried_items": []}
        self.own = isinstance(address, str)
        if not self.own:
            self.client = address
            return
        try:   # before any work: a scheduler that is not there is the caller's mistake
            self.client = Client(address, timeout=self.CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError, ValueError) as exc:
            raise UsageError(f"--dask {address}: cannot reach the scheduler "
                             f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]})") from None

    def map(self, fn, arg_lists, on_done=None):
        """As the other executors; ``fn`` is called with ``topic=`` (the event its start is
        logged under). A worker lost mid-item has its items started again elsewhere by the
        scheduler (dask's own retry: ``distributed.scheduler.allowed-failures``); the items
        started more than once are counted in :attr:`execution` ("retried")."""
        import uuid

        from distributed import as_completed

        topic = f"imaml-verify-start-{uuid.uuid4().hex}"
        self.execution["workers"] = len(self.client.scheduler_info().get("workers", {})) or None
        # earlier items first (the runner lists the largest first)
        futures = [self.client.submit(fn, *args, topic=topic, pure=False, priority=-i)
                   for i, args in enumerate(arg_lists)]
        _report_done(futures, as_completed(futures), on_done)
        results = self.client.gather(futures)
        starts = {}
        for _, msg in self.client.get_events(topic):
            starts[msg["label"], msg["id"]] = starts.get((msg["label"], msg["id"]), 0) + 1
        retried = sorted(label for (label, _), n in starts.items() if n > 1)
        self.execution.update(retried=len(retried), retried_items=retried)
        return results

    def close(self):
        if self.own:
            self.client.close()


def _report_done(futures, finished, on_done):
    """on_done(i) for each future as it finishes (a failed one too: its error is raised when
    the results are gathered, in the order of the units)."""
    if on_done is None:
        return
    index = {id(f): i for i, f in enumerate(futures)}
    for f in finished:
        on_done(index[id(f)])


def _single_thread_worker():
    import torch

    torch.set_num_threads(1)


def _third_party(out_dir):
    """(markdown section, document) of `make check-peers` when it has left
    ``peers/peers.json`` in the output folder (the report's "Third-party implementations")."""
    import json

    from verify.checker.peers import render_markdown

    path = None if out_dir is None else Path(out_dir) / "peers" / "peers.json"
    if path is None or not path.is_file():
        return None, None
    doc = json.loads(path.read_text(encoding="utf-8"))
    return render_markdown(doc), doc


def _fewshot(out_dir):
    """(markdown section, document) of the few-shot experiment when it has left its results in
    the output folder (``gpu/`` from a GPU run, preferred, or ``fewshot/`` from a CPU run)."""
    import json

    from verify.fewshot import report as fewshot_report
    from verify.fewshot.gpu_check import OUTPUT_NAME

    if out_dir is None:
        return None, None
    for path in (Path(out_dir) / "gpu" / OUTPUT_NAME, Path(out_dir) / "fewshot" / "results.json"):
        if path.is_file():
            doc = json.loads(path.read_text(encoding="utf-8"))
            return fewshot_report.render_markdown(doc), doc
    return None, None


def _progress_bar(total, progress):
    """The run's progress bar on stderr (off unless ``progress``, and when stderr is no terminal)."""
    from tqdm import tqdm

    return tqdm(total=total, desc="imaml-verify", unit="step", file=sys.stderr,
                disable=None if progress else True, leave=False)


def _run_here(claim_list, fig_ids, with_counts, ctx, formats, progress, start):
    """Claims, figures and the table in this process, in order, with a progress bar."""
    from verify.iteration_counts import iteration_counts_data

    bar = _progress_bar(len(claim_list) + len(fig_ids) + int(with_counts), progress)
    records = []
    for claim in claim_list:
        bar.set_postfix_str(claim.name)
        records.append(run_claim(claim, ctx))
        check_interrupt()
        bar.update()
    t_claims = time.perf_counter() - start
    figure_entries, files = {}, {}
    for fig_id in fig_ids:
        bar.set_postfix_str(fig_id)
        entry, fig_files = run_figure(fig_id, ctx, records, formats=formats)
        check_interrupt()
        figure_entries[fig_id] = entry
        files.update(fig_files)
        bar.update()
    counts = None
    if with_counts:
        bar.set_postfix_str("iteration counts")
        counts = iteration_counts_data(ctx)
        check_interrupt()
        bar.update()
    bar.close()
    return records, figure_entries, files, counts, t_claims


@dataclass
class _WorkItem:
    """What one worker runs at once: units of work of one or more claims ((claim index, unit
    index, claim name, key)) that build the same instance (``Unit.shares``), or one figure, or
    the iteration-count table. ``size``: the units' sizes summed (largest first)."""

    members: list
    size: float
    label: str
    kind: str = "units"          # "units", "figure" or "counts"


def _work_items(claim_list, fig_ids, with_counts, ctx):
    """(work items, how many units each claim has): each unit of each claim's plan, units that
    build the same instance put together, the figures that need no claim results and the table;
    the largest first (ties in plan order), so that no large unit is left for the end."""
    from verify.figures import FIGURES
    from verify.registry import Claim

    items, shared, counts = [], {}, []
    for ci, claim in enumerate(claim_list):
        plan = claim.plan(ctx)
        counts.append(len(plan))
        for ui, unit in enumerate(plan):
            member = (ci, ui, claim.name, unit.key)
            if unit.shares is not None and unit.shares in shared:
                item = shared[unit.shares]
                item.members.append(member)
                item.size += unit.size
                continue
            item = _WorkItem([member], float(unit.size), unit.label or claim.name)
            items.append(item)
            if unit.shares is not None:
                shared[unit.shares] = item
    whole = Claim.WHOLE_SIZE
    items += [_WorkItem([f], whole, f, "figure") for f in fig_ids if FIGURES[f].needs != "claims"]
    if with_counts:
        items.append(_WorkItem([], whole, "iteration counts", "counts"))
    order = sorted(range(len(items)), key=lambda i: (-items[i].size, i))
    return [items[i] for i in order], counts


def _run_item(item: _WorkItem, ctx, formats, topic=None):
    """Run one work item here (in a worker): for units, [(results, error, seconds)] one per
    member, the instance they share built once (verify.checks._common.shared_instances); a unit
    that raises gives no results and its traceback, as a claim that raises does in
    :func:`run_claim`. On a dask worker, ``topic`` names the event its start is logged under
    (the run counts the items started more than once: the retried ones)."""
    if topic is not None:
        from distributed import get_worker

        get_worker().log_event(topic, {"label": item.label, "id": item.members and
                                       repr(item.members[0][:2])})
    from verify._threads import single_thread

    with single_thread():   # one BLAS thread, as in a serial run (the same rounding)
        return _run_item_here(item, ctx, formats)


def _run_item_here(item, ctx, formats):
    if item.kind == "figure":
        return run_figure(item.members[0], ctx, [], formats=formats)
    if item.kind == "counts":
        from verify.iteration_counts import iteration_counts_data

        return iteration_counts_data(ctx)
    from verify.checks._common import shared_instances
    from verify.registry import all_claims

    known, out = all_claims(), []
    with shared_instances():
        for _, _, name, key in item.members:
            start = time.perf_counter()
            try:
                results, error = known[name].execute(ctx, key), None
            except Exception:
                results, error = [], traceback.format_exc()
            out.append((results, error, time.perf_counter() - start))
    return out


def _assemble(claim_list, counts, items, outputs):
    """The claim records from the units' outputs: each claim's results in the order of its
    plan (what ``Claim.run`` returns serially), its time the sum of its units'; a claim any of
    whose units raised is an ERROR with no results (the first such traceback), as serially."""
    from verify.report import claim_record

    per_claim = [[None] * n for n in counts]
    for item, output in zip(items, outputs):
        if item.kind != "units":
            continue
        for (ci, ui, _, _), unit_out in zip(item.members, output):
            per_claim[ci][ui] = unit_out
    records = []
    for claim, units in zip(claim_list, per_claim):
        error = next((e for _, e, _ in units if e is not None), None)
        results = [] if error is not None else [r for res, _, _ in units for r in res]
        records.append(claim_record(claim, results, elapsed_s=sum(t for _, _, t in units),
                                    error=error))
    return records


def _run_on(executor, claim_list, fig_ids, with_counts, ctx, formats, progress, start):
    """The same on an executor, in units of work (:func:`_work_items`): every claim's units,
    the figures that need no claim results and the table at once; then the figures drawn from
    the claims' results. The progress bar moves, and a recorded Ctrl-C stops the run, as each
    work item finishes."""
    from verify.figures import FIGURES

    items, counts = _work_items(claim_list, fig_ids, with_counts, ctx)
    after = [f for f in fig_ids if FIGURES[f].needs == "claims"]
    bar = _progress_bar(len(items) + len(after), progress)

    def finished(i):
        bar.set_postfix_str(items[i].label)
        bar.update()
        check_interrupt()

    try:
        outputs = executor.map(_run_item, [(item, ctx, formats) for item in items],
                               on_done=finished)
    except BaseException:
        bar.close()
        raise
    records = _assemble(claim_list, counts, items, outputs)
    t_claims = time.perf_counter() - start
    done = {item.members[0]: out for item, out in zip(items, outputs) if item.kind == "figure"}
    counts_out = next((out for item, out in zip(items, outputs) if item.kind == "counts"), None)
    for f in after:
        bar.set_postfix_str(f)
        done[f] = run_figure(f, ctx, records, formats=formats)
        check_interrupt()
        bar.update()
    bar.close()
    figure_entries = {f: done[f][0] for f in fig_ids}
    files = {rel: data for f in fig_ids for rel, data in done[f][1].items()}
    if executor.execution is not None:
        executor.execution.update(units=sum(counts), work_items=len(items))
    return records, figure_entries, files, counts_out, t_claims


def run(claims=None, figures=None, *, command=None, **options) -> dict:
    """Run a verification and return its results document (the content of results.json).

    claims: claim names (None: every registered claim; ``imaml-verify list`` names them).
    figures: figure ids, numbers or names (None: every figure when ``claims`` is None too, else
    none). A figure drawn from the claims' results (``needs='claims'``, figure 6) shows the
    claims that ran. iteration_counts: the iteration-count table (default: only for a complete run).
    quick: small grids (seconds). scale: wide grids for a cluster (d up to 2000, κ up to 1e6,
    more seeds; pair it with ``jobs`` or ``dask``). seed: root seed of every instance (0 to
    2**32 - 1). dtype: 'float64' or
    'float32'. device: 'cpu', 'cuda' or 'cuda:N' (CUDA implies torch arrays). array: 'numpy' or
    'torch' (default numpy on the CPU). out: write the report there as one set (None: write
    nothing). full_results: keep every check of every claim in the document (default: the worst
    and the failing checks of each claim, with counts). jobs: run claims and figures in this many
    local processes (they are independent; the document is the same, timings aside). dask: the
    address of a dask.distributed scheduler (or a ``distributed.Client``) to run them on instead
    (optional extra 'dask'). progress: a progress bar on stderr (on a terminal), moved as each
    claim or figure finishes.

    Raises :class:`UsageError` before any work when the request cannot be run (a selection of
    nothing, ``run([])``, included), and :class:`verify.report.writer.ReportWriteError` (one line;
    the previous report kept whole) when the report cannot be written.
    """
    unknown = sorted(set(options) - set(_options.defaults()))
    if unknown:
        raise TypeError(f"run() got an unexpected keyword argument {unknown[0]!r} (its options: "
                        f"{', '.join(_options.defaults())})")
    values = {**_options.defaults(), **options}
    dask = values["dask"]
    values["dask"] = dask if dask is None or hasattr(dask, "submit") else str(dask)
    if figures is None and claims is not None:
        figures = []
    req = RunRequest(claims=claims, figures=figures,   # checked (not iterated) by validate_request
                     command=list(command) if command is not None else ["verify.run"], **values)
    claim_list, fig_ids, with_counts, ctx = validate_request(req)
    import contextlib

    from verify.report.writer import OutBusyError, out_lock

    with contextlib.ExitStack() as stack:
        if req.out is not None:
            try:   # held from before the first claim: a second run into `out` is refused now
                stack.enter_context(out_lock(req.out))
            except OutBusyError as exc:
                raise UsageError(f"--out {exc}") from None
        return _run(req, claim_list, fig_ids, with_counts, ctx)


run.__signature__ = _options.signature(run)   # its keywords are the declared options


def _run(req, claim_list, fig_ids, with_counts, ctx) -> dict:
    from verify.report import compact, environment, jsonable, summary, tool_version
    from verify.report.results import machine
    from verify.report.results import SCHEMA_VERSION, now_utc

    out, full_results, dask, jobs, progress = (req.out, req.full_results, req.dask, req.jobs,
                                               req.progress)
    start = time.perf_counter()
    formats = ("png",) if ctx.quick else ("png", "svg")
    executor = (_Dask(dask) if dask is not None else _Processes(jobs) if jobs > 1 else _Serial())
    try:
        if isinstance(executor, _Serial):
            from verify._threads import single_thread

            with single_thread():   # small matrices: one thread, as in the parallel workers
                records, figure_entries, files, counts, t_claims = _run_here(
                    claim_list, fig_ids, with_counts, ctx, formats, progress, start)
        else:
            records, figure_entries, files, counts, t_claims = _run_on(
                executor, claim_list, fig_ids, with_counts, ctx, formats, progress, start)
    finally:
        executor.close()
    t_figures = time.perf_counter() - start - t_claims
    check_interrupt()
    fewshot_md, fewshot_doc = _fewshot(out)
    peers_md, peers_doc = _third_party(out)
    doc = jsonable({
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "imaml-verify", "version": tool_version()},
        "created": now_utc(),
        "command": req.command,
        "settings": {**_options.settings({**vars(req), "device": ctx.device,
                                          "array": ctx.array, "scale": bool(ctx.scale),
                                          "full_results": bool(full_results)}),
                     "claims": [c.name for c in claim_list], "figures": fig_ids},
        "environment": environment(),
        "machine": machine(),
        "elapsed_s": {"total": time.perf_counter() - start, "claims": t_claims,
                      "figures": t_figures},
        "execution": executor.execution or {"executor": "serial"},
        "summary": summary(records),
        "claims": records if full_results else [compact(r) for r in records],
        "figures": figure_entries,
        "iteration_counts": counts,
        "fewshot": fewshot_doc,
        "third_party": peers_doc,
    })
    if out is not None:
        from verify.report import render_report_set, write_report_set

        docs = Path(__file__).resolve().parents[1] / "docs"
        docs_base = Path(os.path.relpath(docs, Path(out).resolve())).as_posix()
        write_report_set(out, render_report_set(doc, files, fewshot_markdown=fewshot_md,
                                                third_party_markdown=peers_md,
                                                docs_base=docs_base))
    return doc
