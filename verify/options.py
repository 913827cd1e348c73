"""The options of a run, declared once.

Every option of :func:`verify.run` is one :class:`Option` in :data:`RUN_OPTIONS`; from that one
declaration come the keywords of ``verify.run`` (its signature), the fields of
:class:`verify.runner.RunRequest`, the command line's flags (``imaml-verify run``, ``claim``,
``figure``), the ``settings`` of results.json (the options that change what is found), the
command results.json records (without the options that only say where or how the report is
made) and the argv that another process is started with (:func:`to_argv`, as the GPU command's
claims stage does). Checking the values is :func:`verify.runner.validate_request`'s job.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass

__all__ = ["Option", "RUN_OPTIONS", "CLI_ONLY", "option", "defaults", "signature",
           "add_arguments", "from_args", "to_argv", "settings", "not_recorded"]


@dataclass(frozen=True)
class Option:
    """One option of a run. ``name``: the keyword of verify.run and the field of RunRequest;
    ``flag``: the command-line flag (None: none); ``kind``: 'bool' (a switch), 'int', 'str' or
    'int-list'; ``inverted``: the flag sets the option to False (``--no-progress``);
    ``settings``: recorded in results.json's settings (it changes what a run finds);
    ``recorded``: kept in the command results.json records."""

    name: str
    default: object
    help: str
    flag: str | None = ""
    kind: str = "str"
    metavar: str | None = None
    inverted: bool = False
    settings: bool = True
    recorded: bool = True

    @property
    def cli(self) -> str | None:
        if self.flag is None:
            return None
        return self.flag or "--" + self.name.replace("_", "-")


RUN_OPTIONS = (
    Option("quick", False, "small sweeps: seconds in all", kind="bool"),
    Option("scale", False, "wide grids (d up to 2000, κ up to 1e6, more seeds): for --jobs/--dask",
           kind="bool"),
    Option("seed", 0, "root seed of every instance, 0 to 2**32 - 1 (default 0)", kind="int"),
    Option("dtype", "float64", "float64 (default) or float32"),
    Option("device", "cpu", "cpu, cuda or cuda:N (cuda implies --array torch)"),
    Option("array", None, "array library of the checks: numpy or torch (default numpy on cpu, "
                          "torch on cuda)"),
    Option("iteration_counts", None, "the iteration-count table (default: only for a complete run)",
           flag=None, settings=False),
    Option("out", None, "output folder (default reports/, or reports/quick/ with --quick and "
                        "reports/scale/ with --scale, so that neither replaces the full report; "
                        "imaml-verify claim: reports/claim/, imaml-verify figure: reports/figure/, "
                        "run with a selection: reports/partial/)", settings=False, recorded=False),
    Option("full_results", False, "keep every check of every claim in results.json (default: the "
                                  "worst and the failing ones)", kind="bool"),
    Option("jobs", 1, "run claims and figures in N local processes (same results)", kind="int",
           settings=False, recorded=False),
    Option("dask", None, "run claims and figures on the dask.distributed scheduler at ADDRESS "
                         "(optional extra 'dask')", metavar="ADDRESS", settings=False,
           recorded=False),
    Option("progress", False, "no progress bar", flag="--no-progress", kind="bool", inverted=True,
           settings=False, recorded=False),
)

#: flags of the command line that are not options of a run (they change what is printed, or
#: how the process is started), and are not recorded either
CLI_ONLY = (
    Option("json", False, "print results.json to stdout instead of the summary table",
           kind="bool", settings=False, recorded=False),
    Option("native_kernels", False, "keep this machine's own BLAS/SIMD code paths and threads "
                                    "(default: the command restarts itself with one thread and "
                                    "AVX2 kernels, so that its numbers are the same on every "
                                    "x86-64 machine; docs/architecture.md)",
           kind="bool", settings=False, recorded=False),
)

_BY_NAME = {o.name: o for o in RUN_OPTIONS + CLI_ONLY}


def option(name: str) -> Option:
    return _BY_NAME[name]


def defaults() -> dict:
    """{name: default} of every option of a run."""
    return {o.name: o.default for o in RUN_OPTIONS}


def signature(func) -> inspect.Signature:
    """``func``'s signature with the run options as keyword-only parameters (what help() and
    editors show for ``verify.run``)."""
    sig = inspect.signature(func)
    params = [p for p in sig.parameters.values() if p.kind != p.VAR_KEYWORD]
    params += [inspect.Parameter(o.name, inspect.Parameter.KEYWORD_ONLY, default=o.default)
               for o in RUN_OPTIONS]
    return sig.replace(parameters=params)


def add_arguments(parser) -> None:
    """The flags of every run option (and of :data:`CLI_ONLY`) on an argparse parser."""
    for o in RUN_OPTIONS + CLI_ONLY:
        if o.cli is None:
            continue
        if o.kind == "bool":
            parser.add_argument(o.cli, dest=o.name, action="store_true", help=o.help)
        else:
            parser.add_argument(o.cli, dest=o.name, type=int if o.kind == "int" else str,
                                default=o.default, metavar=o.metavar, help=o.help)


def from_args(args) -> dict:
    """{name: value} of the run options parsed by :func:`add_arguments`."""
    out = {}
    for o in RUN_OPTIONS:
        if o.cli is None:
            continue
        value = getattr(args, o.name)
        out[o.name] = (not value) if o.inverted else value
    return out


def to_argv(**values) -> list[str]:
    """The flags that give a run these option values (defaults left out)."""
    argv = []
    for name, value in values.items():
        o = _BY_NAME[name]
        if o.cli is None:
            raise ValueError(f"option {name!r} has no command-line flag")
        if o.kind == "bool":   # the flag means True (False for an inverted one)
            if bool(value) != o.inverted:
                argv.append(o.cli)
        elif value != o.default:
            argv += [o.cli, str(value)]
    return argv


def settings(values: dict) -> dict:
    """The options that change what a run finds (results.json's settings)."""
    return {o.name: values[o.name] for o in RUN_OPTIONS if o.settings}


def not_recorded() -> dict:
    """{flag: number of values it takes} of the flags the recorded command leaves out."""
    return {o.cli: 0 if o.kind == "bool" else 1 for o in RUN_OPTIONS + CLI_ONLY
            if o.cli is not None and not o.recorded}
