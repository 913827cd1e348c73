"""Hypothesis profiles (registered once, here), the array back-ends every test runs on, and the
session's one `imaml-verify run --quick` shared by test_cli.py and test_figures.py.

The tests run with the report's pinned numerical kernels (verify/_numerics.py): a `pytest`
started without them starts itself again with them (as `imaml-verify run` does), so that the
claim plans the tests compare (step counts that another processor's rounding can move by one
at a threshold) are the same on every x86-64 machine. `IMAML_VERIFY_TESTS_NATIVE=1` keeps the
machine's own kernels (the pinned plans may then differ)."""
from __future__ import annotations

import os
import sys

import pytest
from hypothesis import HealthCheck, settings


def _restart_pinned(config) -> None:
    from verify._numerics import pinned_environment, state

    argv = getattr(sys, "orig_argv", None)
    started_as_pytest = bool(argv) and any("pytest" in os.path.basename(a) for a in argv[:3])
    if (state() != "native" or os.environ.get("IMAML_VERIFY_TESTS_NATIVE") == "1"
            or os.name != "posix" or not started_as_pytest):
        return      # pinned already, asked not to, or pytest.main() inside another program
    capture = config.pluginmanager.getplugin("capturemanager")
    if capture is not None:
        capture.suspend_global_capture(in_=True)     # the terminal's own descriptors back
    env = dict(os.environ)
    env.update(pinned_environment())
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *argv[1:]], env)


def pytest_configure(config):
    _restart_pinned(config)


settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=500, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # pragma: no cover
        return False


CUDA = _cuda_available()
BACKENDS = [
    pytest.param(("numpy", "cpu"), id="numpy"),
    pytest.param(("torch", "cpu"), id="torch-cpu"),
    pytest.param(("torch", "cuda"), id="torch-cuda",
                 marks=[pytest.mark.gpu,
                        pytest.mark.skipif(not CUDA, reason="no CUDA device on this machine")]),
]


@pytest.fixture(params=BACKENDS)
def backend(request):
    """(array library, device) pairs: NumPy, torch on CPU, torch on CUDA when present."""
    return request.param


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory):
    """(exit status, output folder, results document, captured stdout) of one quick run (it is
    most of the time of the CLI and figure tests, so it runs once per session)."""
    import contextlib
    import io
    import json

    from verify.cli import main

    out = tmp_path_factory.mktemp("imaml-verify-quick")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        status = main(["run", "--quick", "--seed", "0", "--out", str(out), "--no-progress"])
    results = out / "results.json"
    assert results.is_file(), f"the quick run (exit {status}) wrote no results.json:\n{buf.getvalue()}"
    return status, out, json.loads(results.read_text(encoding="utf-8")), buf.getvalue()


@pytest.fixture
def python_ctrl_c():
    """Python's own Ctrl-C handler (KeyboardInterrupt) on SIGINT for the test. A shell without job
    control starts background commands (`make test &` in a script, nohup) with SIGINT ignored,
    and Python then leaves it ignored: the tests of what a real Ctrl-C does need the handler a
    user at a terminal has."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
