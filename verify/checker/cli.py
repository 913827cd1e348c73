"""``imaml-verify check package.module:function``: check a user's meta-gradient from the shell.

    imaml-verify check mypkg.grads:meta_gradient
    imaml-verify check mypkg.grads:algorithm2 --budget 20,5
    imaml-verify check mypkg.grads:meta_gradient --backend torch --device cuda --json
    imaml-verify check mypkg.cg:my_cg --cg 1,2,3,5

Exit status: 0 the implementation passes, 1 it fails, 2 a usage error — an option that cannot be
used, or a module that cannot be imported (a SyntaxError, an ImportError, an exception or
``sys.exit`` at import: the module's own error in one line), 130 interrupted. The report goes to
stdout (``--json``: the report as JSON), a usage error to stderr.

The check runs in a child process (unless ``--in-process``), so that nothing the implementation
does ends the command without a verdict: a call that ends the process (``os._exit``, a crash, a
signal) or that ignores the time limit (``--timeout``, default 60 s per call) is reported as a
failure of the implementation (exit 1), naming the instance it was evaluating; an import that
does so is a usage error (exit 2).
"""
from __future__ import annotations

import importlib
import json
import os
import sys

__all__ = ["add_parser", "run", "load"]

EXIT_PASS, EXIT_FAIL, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
_SYS_PATH_ENV = "IMAML_VERIFY_CHECK_SYS_PATH"


def _timeout_arg(text):
    import argparse

    if text.strip().lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be seconds > 0 or 'none', got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be seconds > 0 or 'none', got {text!r}")
    return value


def add_parser(subparsers):
    """Register the ``check`` command on an argparse sub-parsers object."""
    import argparse

    from verify.checker._calling import DEFAULT_TIMEOUT

    p = subparsers.add_parser(
        "check", help="check your meta-gradient (or CG) implementation: module:function",
        description="Check an implementation of iMAML's meta-gradient against exact answers "
                    "(docs/checker.md). fn(task, theta) claims the converged meta-gradient; "
                    "with --budget K,M, fn(task, theta, inner_steps=K, cg_steps=M) claims "
                    "Algorithm 2; with --cg, fn(matvec, rhs, m) claims m CG steps from 0. "
                    "Exit status 0 pass, 1 fail, 2 usage error (including a module that cannot "
                    "be imported).")
    p.add_argument("target", metavar="module:function",
                   help="the implementation, e.g. mypkg.grads:meta_gradient (importable from the "
                        "current directory)")
    p.add_argument("--budget", default=None, metavar="K,M",
                   help="budget mode: K inner steps from theta and M CG steps from 0")
    p.add_argument("--cg", default=None, metavar="M1,M2,...",
                   help="check a CG routine cg(matvec, rhs, m) at these step counts instead")
    p.add_argument("--backend", default="numpy", choices=["numpy", "torch"])
    p.add_argument("--device", default="cpu", help="cpu or cuda (needs --backend torch)")
    p.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    p.add_argument("--family", action="append", default=None, choices=["planted", "paper", "logistic"],
                   help="task families to draw (repeatable). Default: planted and paper "
                        "(quadratic tasks: task.A, task.b, ...); with --backend torch also "
                        "logistic (task.X, task.y: no A or b — use the task protocol, or "
                        "--family planted --family paper for quadratic tasks only)")
    p.add_argument("--inner", default="any", choices=["any", "nesterov", "gd"],
                   help="budget mode: the inner method whose rate bounds the inner error")
    p.add_argument("--linear-solver", default="cg",
                   choices=["cg", "minres", "neumann", "fixed_point"],
                   help="budget mode: the linear solver the implementation runs for its M steps "
                        "(held to that solver's bound; default cg)")
    p.add_argument("--linear-option", action="append", default=None, metavar="NAME=VALUE",
                   help="budget mode: an option of --linear-solver (neumann: alpha=...; "
                        "fixed_point: step_size=...; repeatable)")
    p.add_argument("--seed", type=int, default=0, help="0 to 2**32 - 1 (default 0)")
    p.add_argument("--max-examples", type=int, default=None,
                   help="instances drawn after the fixed corners (default 100; 25 with --budget)")
    p.add_argument("--timeout", type=_timeout_arg, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                   help=f"time limit of each call of the implementation (default "
                        f"{DEFAULT_TIMEOUT:g}; 'none': no limit): a call that does not return "
                        f"in time fails")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--in-process", action="store_true",
                   help="run the check in this process (for a debugger): an implementation that "
                        "ends the process then ends the command without a report")
    p.add_argument("--status-fd", type=int, default=None, help=argparse.SUPPRESS)
    return p


def _one_line(text, limit=400) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def load(target: str):
    """The callable named by 'package.module:function' (or 'package.module:Class.method');
    the current directory is importable, as with ``python -m``. Raises ValueError, in one line,
    when it cannot be had: a malformed name, or a module whose import fails in any way
    (SyntaxError, ImportError, any exception, ``sys.exit``); a real Ctrl-C is raised."""
    from verify.checker._calling import _Sigint

    if not isinstance(target, str) or target.count(":") != 1 or target.startswith(":") \
            or target.endswith(":"):
        raise ValueError(f"expected module:function, got {target!r}")
    module_name, _, attr = target.partition(":")
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")
    with _Sigint() as sigint:
        try:
            obj = importlib.import_module(module_name)
        except SystemExit as exc:
            raise ValueError(f"cannot import {module_name!r}: importing it called "
                             f"sys.exit({exc.code!r})") from None
        except SyntaxError as exc:
            where = f" ({exc.filename}, line {exc.lineno})" if exc.filename else ""
            raise ValueError(f"cannot import {module_name!r}: {type(exc).__name__}: "
                             f"{_one_line(exc.msg)}{where}") from None
        except KeyboardInterrupt:
            if sigint.real:
                raise
            raise ValueError(f"cannot import {module_name!r}: importing it raised "
                             f"KeyboardInterrupt") from None
        except BaseException as exc:  # noqa: B902  whatever the module does at import
            raise ValueError(f"cannot import {module_name!r}: {type(exc).__name__}: "
                             f"{_one_line(exc)}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"{module_name!r} has no attribute {attr!r}") from None
        except Exception as exc:   # a module __getattr__ or a property that raises
            raise ValueError(f"cannot get {attr!r} from {module_name!r}: "
                             f"{type(exc).__name__}: {_one_line(exc)}") from None
    if not callable(obj):
        raise ValueError(f"{target!r} is not callable (it is {type(obj).__name__})")
    return obj


def _ints(text, what, n=None):
    try:
        values = [int(x) for x in text.split(",")]
    except ValueError:
        raise ValueError(f"{what} must be comma-separated integers, got {text!r}") from None
    if (n is not None and len(values) != n) or any(v < 0 for v in values):
        raise ValueError(f"{what} must be {n or 'some'} non-negative integers, got {text!r}")
    return values


# -- the check itself (in the child process, or here with --in-process) --------------------------
class _Status:
    """Lines to the parent on file descriptor ``fd``: 'import', 'loaded', 'call <instance>',
    'return', 'done <exit status>' (a parent that went away is ignored)."""

    def __init__(self, fd):
        self.fd = fd

    def __call__(self, event, where=None):
        if self.fd is None:
            return
        line = event if where is None else f"{event} {_one_line(repr(where), 2000)}"
        try:
            os.write(self.fd, (line + "\n").encode("utf-8", "replace"))
        except OSError:
            self.fd = None


def _check_here(args, status) -> int:
    from verify.checker import _calling, check_cg, check_meta_gradient

    try:
        if args.budget and args.cg:
            raise ValueError("--budget and --cg exclude each other")
        steps = _ints(args.cg, "--cg") if args.cg else None
        budget = _ints(args.budget, "--budget", 2) if args.budget else (None, None)
        status("import")
        fn = load(args.target)
        status("loaded")
        _calling.observer = status if status.fd is not None else None
        if steps is not None:
            report = check_cg(fn, steps, backend=args.backend, device=args.device,
                              dtype=args.dtype, seed=args.seed, timeout=args.timeout,
                              **({"max_examples": args.max_examples}
                                 if args.max_examples is not None else {}))
        else:
            report = check_meta_gradient(fn, inner_steps=budget[0], cg_steps=budget[1],
                                         backend=args.backend, device=args.device,
                                         dtype=args.dtype, seed=args.seed,
                                         max_examples=args.max_examples, families=args.family,
                                         inner=args.inner, timeout=args.timeout,
                                         linear_solver=args.linear_solver,
                                         linear_options=_linear_options(args.linear_option))
    except ValueError as exc:   # CheckerArgumentError is one too
        print(f"imaml-verify check: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("imaml-verify check: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        _calling.observer = None
    print(report.to_json() if args.json else report.text(more="run with --json to see all of them"))
    sys.stdout.flush()
    return EXIT_PASS if report.passed else EXIT_FAIL


def _linear_options(pairs) -> dict | None:
    """--linear-option NAME=VALUE pairs as a dict of numbers (a ValueError naming the flag)."""
    if not pairs:
        return None
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        try:
            if not sep or not name:
                raise ValueError
            out[name] = float(value)
        except ValueError:
            raise ValueError(f"--linear-option must be NAME=NUMBER, got {pair!r}") from None
    return out


def _child_argv(args) -> list:
    argv = ["check", args.target, "--backend", args.backend, "--device", args.device,
            "--dtype", args.dtype, "--inner", args.inner, "--seed", str(args.seed),
            "--timeout", "none" if args.timeout is None else repr(args.timeout)]
    for opt, value in (("--budget", args.budget), ("--cg", args.cg),
                       ("--max-examples", args.max_examples)):
        if value is not None:
            argv += [opt, str(value)]
    argv += ["--linear-solver", args.linear_solver]
    for opt in args.linear_option or []:
        argv += ["--linear-option", opt]
    for fam in args.family or []:
        argv += ["--family", fam]
    if args.json:
        argv.append("--json")
    return argv


def _how(returncode) -> str:
    import signal

    if returncode is not None and returncode < 0:
        try:
            return f"killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}, as os._exit({returncode}) does"


def _watchdog_limit(timeout):
    """How long the parent lets one call (or the import) run before it ends the child: the
    child's own time limit plus a grace of 2 s + half of it."""
    return None if timeout is None else timeout * 1.5 + 2.0


def _supervise(args) -> int:
    """Run the check in a child process and answer for it when it cannot answer itself."""
    import codecs
    import selectors
    import subprocess
    import time

    read_fd, write_fd = os.pipe()
    env = dict(os.environ)
    env[_SYS_PATH_ENV] = json.dumps(sys.path)   # the implementation imports as it would here
    cmd = [sys.executable, "-c", "import sys; from verify.checker.cli import _child_main; "
                                 "sys.exit(_child_main(sys.argv[1:]))",
           *_child_argv(args), "--status-fd", str(write_fd)]
    try:
        proc = subprocess.Popen(cmd, pass_fds=(write_fd,), env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    finally:
        os.close(write_fd)
    limit = _watchdog_limit(args.timeout)
    phase, where, since, done, killed, buf = "start", None, time.monotonic(), None, False, b""
    sel = selectors.DefaultSelector()
    sel.register(read_fd, selectors.EVENT_READ, "status")
    # the child's output is passed on through this process's sys.stdout / sys.stderr
    utf8 = codecs.getincrementaldecoder("utf-8")
    sel.register(proc.stdout, selectors.EVENT_READ, (sys.stdout, utf8(errors="replace")))
    sel.register(proc.stderr, selectors.EVENT_READ, (sys.stderr, utf8(errors="replace")))
    open_streams = 3
    try:
        while open_streams:
            for key, _ in sel.select(timeout=0.5):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    open_streams -= 1
                    continue
                if key.data != "status":
                    stream, decoder = key.data
                    stream.write(decoder.decode(chunk))
                    stream.flush()
                    continue
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for raw in lines:
                    event, _, rest = raw.decode("utf-8", "replace").partition(" ")
                    if event in ("import", "loaded", "call", "return"):
                        phase, since = event, time.monotonic()
                        where = rest if event == "call" else where
                    elif event == "done":
                        done = int(rest)
            if limit is not None and phase in ("import", "call") and not killed \
                    and proc.poll() is None and time.monotonic() - since > limit:
                proc.kill()
                killed = True
        returncode = proc.wait()
    except KeyboardInterrupt:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        print("imaml-verify check: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        sel.close()
        os.close(read_fd)
        proc.stdout.close()
        proc.stderr.close()
    if done is not None and not killed:
        return returncode
    module = args.target.partition(":")[0]
    if phase in ("start", "import"):
        why = (f"its import did not finish within {limit:g} s" if killed
               else f"importing it ended the process ({_how(returncode)})")
        print(f"imaml-verify check: error: cannot import {module!r}: {why}", file=sys.stderr)
        return EXIT_USAGE
    if phase == "call":
        why = (f"a call did not return within {args.timeout:g} s and did not stop at the "
               f"checker's time limit (it swallowed the exception?), so its process was ended "
               f"after {limit:g} s" if killed
               else f"the implementation ended the checker's process ({_how(returncode)})")
        print(f"FAIL: {args.target} — {why}, while evaluating {where}\n"
              f"  reproduce: from verify.checker import Instance, build; "
              f"task, theta = build({where}); fn(task, theta)")
        return EXIT_FAIL
    print(f"FAIL: {args.target} — the check ended without a report ({_how(returncode)}), "
          f"outside any call of the implementation (its threads, or the checker itself: see "
          f"the error above)")
    return EXIT_FAIL


def _child_main(argv) -> int:
    """The child process of :func:`run`: the check, with its status on ``--status-fd``."""
    import argparse

    paths = os.environ.pop(_SYS_PATH_ENV, None)
    if paths:
        sys.path[:] = json.loads(paths)
    parser = argparse.ArgumentParser(prog="imaml-verify")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    status = _Status(args.status_fd)
    code = _check_here(args, status)
    status("done", code)
    return code


def run(args) -> int:
    """Run the ``check`` command; returns the exit status (0 pass, 1 fail, 2 usage error,
    130 interrupted)."""
    if args.status_fd is not None:
        status = _Status(args.status_fd)
        code = _check_here(args, status)
        status("done", code)
        return code
    if args.in_process or os.name != "posix":
        return _check_here(args, _Status(None))
    # what can be refused without importing anything is refused here, before a child starts
    try:
        if args.budget and args.cg:
            raise ValueError("--budget and --cg exclude each other")
        if args.cg:
            _ints(args.cg, "--cg")
        if args.budget:
            _ints(args.budget, "--budget", 2)
        _linear_options(args.linear_option)
        if ":" not in args.target:
            raise ValueError(f"expected module:function, got {args.target!r}")
    except ValueError as exc:
        print(f"imaml-verify check: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return _supervise(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_child_main(["check", *sys.argv[1:]]))
