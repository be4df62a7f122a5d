"""`StopSignals`: a SIGTERM is never lost and never deadlocks the server's
main thread, whenever it arrives.

Each check runs in a fresh interpreter (signals go to the whole process; the
pytest worker's own handlers stay out of it) under a timeout: a hang fails
the test instead of stalling the suite.
"""

from __future__ import annotations

import os
import subprocess
import sys

from common import contract

REPO = os.path.dirname(os.path.dirname(os.path.abspath(contract.__file__)))

# A SIGTERM sent at every line boundary that `wait()` passes (the Python-level
# handler runs at the next one). Before it blocks, that SIGTERM must stop it;
# after it woke up (on a first SIGTERM from another thread), a second one
# must not get in the way. The design this replaced, `Event.set` in the
# handler and `Event.wait()` in the main thread, deadlocks at the boundary in
# `Condition.wait` where the main thread holds the Event's lock: the first
# Python signal handler to run there waits for that lock forever.
EVERY_LINE = r"""
import os, signal, sys, threading, time
from serving.stop_signals import StopSignals

signal.alarm(30)  # a hang dies (SIGALRM's default action) instead of stalling the test

def run(send_at=None, from_thread=False):
    events, woke = [], []
    def tracer(frame, event, arg):
        if event == "line":
            if len(events) == send_at:
                os.kill(os.getpid(), signal.SIGTERM)
            events.append(bool(woke))
        return tracer
    def later():
        time.sleep(0.3)
        woke.append(True)
        os.kill(os.getpid(), signal.SIGTERM)
    with StopSignals() as signals:
        if from_thread:
            threading.Thread(target=later).start()
        sys.settrace(tracer)
        try:
            got = signals.wait()
        finally:
            sys.settrace(None)
    assert got == signal.SIGTERM, got
    return events

events = run(from_thread=True)
before = events.count(False)  # boundaries passed before blocking
assert 0 < before < len(events), events
for send_at in range(before):
    run(send_at)
for send_at in range(before, len(events)):
    run(send_at, from_thread=True)
print("boundaries", before, len(events) - before)
"""

# Blocked in `wait()` when another thread's signal comes; a handled signal
# that is not a stop signal does not stop it; `close()` restores the handlers.
BLOCKED = r"""
import os, signal, threading, time
from serving.stop_signals import StopSignals

usr1 = []
signal.signal(signal.SIGUSR1, lambda *_: usr1.append(1))
before = signal.getsignal(signal.SIGTERM)
with StopSignals() as signals:
    assert signal.getsignal(signal.SIGTERM) is not before
    def send():
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGINT)
    threading.Thread(target=send).start()
    started = time.monotonic()
    got = signals.wait()
    assert got == signal.SIGINT, got
    assert time.monotonic() - started >= 0.5
    assert usr1 == [1], usr1
assert signal.getsignal(signal.SIGTERM) is before
assert signal.set_wakeup_fd(-1) == -1  # the previous wakeup fd (none) is back
print("ok")
"""


def run_script(script: str) -> str:
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_a_signal_at_any_point_of_wait_stops_it_without_deadlock():
    before, after = map(int, run_script(EVERY_LINE).split()[-2:])
    assert before >= 2 and after >= 1


def test_a_signal_while_blocked_stops_it_and_close_restores_the_handlers():
    assert run_script(BLOCKED).strip() == "ok"
