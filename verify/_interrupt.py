"""Ctrl-C that is never lost. Python raises KeyboardInterrupt wherever the interpreter happens to
be; when that is a finalizer or a weakref callback, the exception is printed as "ignored" and the
run goes on. The command line installs :func:`install`: SIGINT is recorded as well as raised, the
"ignored" report of such a swallowed interrupt is dropped, and the run calls :func:`check` between
its units of work, which raises the recorded interrupt there."""
from __future__ import annotations

import contextlib
import signal
import sys

__all__ = ["install", "recorded", "check", "pending"]

_pending: list = []


def pending() -> bool:
    return bool(_pending)


def _on_sigint(signum, frame):
    _pending.append(signum)
    raise KeyboardInterrupt


def _unraisable(hook):
    def quiet(info):
        if isinstance(info.exc_value, KeyboardInterrupt):
            return                      # recorded in _pending; check() raises it at a safe point
        hook(info)
    return quiet


def install() -> None:
    """SIGINT recorded and raised; swallowed interrupts reported by :func:`check` (main thread)."""
    _pending.clear()
    signal.signal(signal.SIGINT, _on_sigint)
    if not getattr(sys.unraisablehook, "_imaml_verify", False):
        hook = _unraisable(sys.unraisablehook)
        hook._imaml_verify = True
        sys.unraisablehook = hook


@contextlib.contextmanager
def recorded():
    """:func:`install` for the duration of the block; the previous SIGINT handler is restored
    and nothing stays pending after it."""
    previous = signal.getsignal(signal.SIGINT)
    install()
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _pending.clear()


def check() -> None:
    """Raise KeyboardInterrupt if an interrupt arrived and was swallowed somewhere."""
    if _pending:
        raise KeyboardInterrupt
