"""Pinned numerical kernels: the same floating-point operations on every x86-64 machine.

NumPy, SciPy's and NumPy's OpenBLAS, MKL (inside torch) and torch's own vector kernels each
pick, when they are loaded, the code path of the processor they find (AVX-512 on one machine,
AVX2 on another) and a number of threads; the paths round differently, so the same seed gives
results that agree only to rounding, and a report's figures of merit at rounding level (and
which instance is the worst) change from machine to machine. Pinned, every library runs its
AVX2 + FMA path on one thread, which any x86-64 processor from 2013 on has, so a report
regenerates byte for byte (MKL: its COMPATIBLE branch, the one it runs on every x86-64
vendor's processor). This is read once, when the libraries load: a process is pinned only
if it was started with :func:`pinned_environment`, so ``imaml-verify run`` (and ``claim``,
``figure``) starts itself again with it (:func:`reexec_pinned`) unless given
``--native-kernels``. Where the processor has no AVX2 (or is not x86-64) only the threads are
pinned, and :func:`state` says so.
"""
from __future__ import annotations

import os
import platform
import sys

__all__ = ["MARK", "VARIABLES", "pinned_environment", "state", "reexec_pinned", "exec_pinned"]

#: set in a pinned process's environment: "pinned" (kernels and threads) or "threads"
MARK = "IMAML_VERIFY_NUMERICS"
THREADS = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
KERNELS = {"OPENBLAS_CORETYPE": "Haswell",      # OpenBLAS (NumPy's and SciPy's): AVX2 + FMA
           # MKL inside torch: its COMPATIBLE (SSE2) branch. Not AVX2: MKL honours MKL_CBWR=AVX2
           # on Intel processors only, and an AMD one ran the COMPATIBLE branch under it (the
           # committed reports, made on one, differed from an Intel machine's in torch results)
           "MKL_CBWR": "COMPATIBLE",
           "ATEN_CPU_CAPABILITY": "avx2"}        # torch's own vectorised kernels
#: every variable this module may set (what run.json records)
VARIABLES = (*THREADS, *KERNELS, "NPY_DISABLE_CPU_FEATURES", MARK)


def _cpu_features() -> tuple[dict, list]:
    """(NumPy's CPU features, NumPy's dispatch targets) of this process."""
    try:
        from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    except ImportError:  # pragma: no cover - older NumPy
        try:
            from numpy.core._multiarray_umath import __cpu_dispatch__, __cpu_features__
        except ImportError:
            return {}, []
    return dict(__cpu_features__), list(__cpu_dispatch__)


def pinned_environment() -> dict:
    """The variables to add to a child's environment: one thread everywhere and, on an x86-64
    processor with AVX2 and FMA, the AVX2 code path of every library (NumPy's dispatch targets
    above AVX2 switched off, the ones this processor has)."""
    env = dict(THREADS)
    features, dispatch = _cpu_features()
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    if x86 and features.get("AVX2") and features.get("FMA3"):
        env.update(KERNELS)
        above = [t for t in dispatch if t not in ("X86_V2", "X86_V3") and features.get(t)]
        if above:
            env["NPY_DISABLE_CPU_FEATURES"] = " ".join(above)
        env[MARK] = "pinned"
    else:
        env[MARK] = "threads"
    return env


def state() -> str:
    """'pinned' (kernels and threads), 'threads' (threads only: no AVX2 here) or 'native', read
    from the variables this process was started with (the mark alone, set by hand without them,
    says 'native')."""
    has = lambda names: all(os.environ.get(k) == v for k, v in names.items())  # noqa: E731
    mark = os.environ.get(MARK)
    if mark == "pinned" and has(THREADS) and has(KERNELS):
        return "pinned"
    if mark in ("pinned", "threads") and has(THREADS):
        return "threads"
    return "native"


def reexec_pinned(args) -> None:
    """Replace this process by ``python -m verify ARGS`` with :func:`pinned_environment`, unless
    it is already pinned (or this platform cannot exec); returns only when it does not."""
    if state() != "native" or os.name != "posix":
        return
    env = dict(os.environ)
    env.update(pinned_environment())
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, [sys.executable, "-m", "verify", *args], env)
    except OSError:  # pragma: no cover - then this process runs as it is ('native')
        return


def exec_pinned(argv) -> None:
    """Replace this process by the command ``argv`` with :func:`pinned_environment` added (the
    tests of full-mode claim plans, ``make mutate`` and ``make test-slow``, and
    ``tools/claim_plans.py --write``, whose step counts are those of the pinned report)."""
    if not argv:
        raise SystemExit("usage: python -m verify._numerics COMMAND [ARG ...]")
    env = dict(os.environ)
    env.update(pinned_environment())
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(argv[0], list(argv), env)


if __name__ == "__main__":
    exec_pinned(sys.argv[1:])
