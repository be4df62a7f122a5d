"""SIGINT/SIGTERM for a server's main thread, with no lock in the signal handler.

A Python signal handler runs in the main thread between two bytecodes, which
may be in the middle of `threading.Event.wait()` while it holds the Event's
lock. A handler that calls `Event.set()` then waits for that lock forever:
`python -m serving.model_server` hung so on 2 of 15 SIGTERMs sent just as it
had started on a loaded machine (py-spy: `Event.set` inside `Condition.wait`).

`StopSignals` lets the interpreter's C-level handler write the signal's number
into a pipe (`signal.set_wakeup_fd`); the Python-level handler does nothing,
and `wait()` reads the pipe. No lock is taken, and a signal that came before
`wait()` is not lost: its byte waits in the pipe.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterable

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _noop(signum, frame) -> None:
    """The Python-level handler: the C-level one has written the byte already."""


class StopSignals:
    """Catches `signums` from construction until `close()`.

    Construct it before the server starts, so that a signal during loading
    stops the server as soon as it has started instead of killing it
    half-loaded. Main thread only (as `signal.signal`).

    Usage:
        with StopSignals() as signals:
            server.start()
            signals.wait()
        server.stop()
    """

    def __init__(self, signums: Iterable[signal.Signals] = STOP_SIGNALS):
        self._signums = frozenset(int(s) for s in signums)
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)  # the C handler must never block
        self._previous_fd = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        self._previous = {s: signal.signal(s, _noop) for s in self._signums}

    def wait(self) -> signal.Signals:
        """Blocks until one of the signals has arrived (or had arrived); returns it."""
        while True:
            # Other handled signals (any with a Python handler) write here too.
            for number in os.read(self._read, 512):
                if number in self._signums:
                    return signal.Signals(number)

    def close(self) -> None:
        """Restores the previous handlers and wakeup fd."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(self._previous_fd)
        os.close(self._read)
        os.close(self._write)

    def __enter__(self) -> StopSignals:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
