"""SIGINT/SIGTERM for a server's main thread, with no lock in the signal handler.

A Python signal handler runs in the main thread between two bytecodes, which
may be in the middle of `threading.Event.wait()` while it holds the Event's
lock. A handler that calls `Event.set()` then waits for that lock forever:
`python -m serving.model_server` hung so on 2 of 15 SIGTERMs sent just as it
had started on a loaded machine (py-spy: `Event.set` inside `Condition.wait`).

Here the handler only stores the signal's number in an attribute, and the
interpreter's C-level handler writes it into a pipe (`signal.set_wakeup_fd`)
that `wait()` selects on, so that it wakes at once. Nothing takes a lock, and
a signal that came before `wait()` is not lost. `wait()` also looks at the
attribute once a second, in case the pipe's byte was lost (a full pipe, or
another library that moved the wakeup fd).

A second signal before `close()` takes the signal's default action at once
(SIGTERM: the process ends; SIGINT: as Ctrl-C with no handler): the way out
of a load or a shutdown that takes too long.
"""

from __future__ import annotations

import os
import select
import signal
from collections.abc import Iterable

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
RECHECK_SECONDS = 1.0  # how often `wait` looks at the attribute without a wakeup byte


class StopSignals:
    """Catches `signums` from construction until `close()`.

    Construct it before the server starts: a signal while it loads stops it
    as soon as it has started (a second one ends the process at once). Keep
    the server's shutdown inside the `with` block, so that a second signal
    then also ends it at once instead of interrupting it half-way.
    Main thread only (as `signal.signal`).

    Usage:
        with StopSignals() as signals:
            server.start()
            signals.wait()
            server.stop()
    """

    def __init__(self, signums: Iterable[signal.Signals] = STOP_SIGNALS):
        self._signums = frozenset(int(s) for s in signums)
        self.received: signal.Signals | None = None
        self._previous: dict = {}
        self._previous_fd: int | None = None
        self._read, self._write = os.pipe()
        try:
            os.set_blocking(self._write, False)  # the C-level handler must never block
            os.set_blocking(self._read, False)
            self._previous_fd = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
            for signum in self._signums:
                self._previous[signum] = signal.signal(signum, self._handle)
        except BaseException:
            self.close()
            raise

    def _handle(self, signum, frame) -> None:
        """Runs in the main thread between two bytecodes: no lock, no logging."""
        if self.received is None:
            self.received = signal.Signals(signum)
            return
        # A second signal: the default action, now.
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    def wait(self) -> signal.Signals:
        """Blocks until one of the signals has arrived (or had arrived); returns the first."""
        while self.received is None:
            if select.select([self._read], [], [], RECHECK_SECONDS)[0]:
                try:
                    os.read(self._read, 512)  # (other handled signals write here too)
                except BlockingIOError:
                    pass
        return self.received

    def close(self) -> None:
        """Restores the previous handlers and wakeup fd (twice is harmless)."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}
        if self._previous_fd is not None:
            signal.set_wakeup_fd(self._previous_fd)
            self._previous_fd = None
        if self._read is not None:
            os.close(self._read)
            os.close(self._write)
            self._read = self._write = None

    def __enter__(self) -> StopSignals:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
