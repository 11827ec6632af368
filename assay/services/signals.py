"""Signals while embedded servers run: SIGTERM and SIGHUP made to unwind a `Services` like Ctrl-C
does, and SIGINT, SIGTERM and SIGHUP held back while servers stop."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

_UNWINDING_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
_DEFERRED_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    """Signal handler: leave through the ``with`` blocks, as Ctrl-C's KeyboardInterrupt does."""
    raise SystemExit(128 + signum)


class UnwindOnSignals:
    """Makes SIGTERM and SIGHUP raise SystemExit while a `Services` is entered.

    Their default action kills the process on the spot, leaving the servers it started behind.
    Ctrl-C needs nothing: SIGINT already raises KeyboardInterrupt. Only default handlers are
    replaced, and only from the main thread (the only one that may set them): a handler someone
    else installed stays theirs to honour, by leaving the ``with`` block.
    """

    def __init__(self) -> None:
        self._installed: list[signal.Signals] = []

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in _UNWINDING_SIGNALS:
            if signal.getsignal(signum) == signal.SIG_DFL:
                signal.signal(signum, _exit_on_signal)
                self._installed.append(signum)

    def restore(self) -> None:
        while self._installed:
            signum = self._installed.pop()
            if signal.getsignal(signum) == _exit_on_signal:
                signal.signal(signum, signal.SIG_DFL)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Holds SIGINT, SIGTERM and SIGHUP back while servers stop, so a second Ctrl-C cannot leave
    one half-stopped; a signal that came meanwhile acts right after."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
