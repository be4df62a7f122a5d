"""`StopSignals`: a SIGTERM is never lost and never deadlocks the server's
main thread, whenever it arrives.

Each check runs in a fresh interpreter (signals go to the whole process; the
pytest worker's own handlers stay out of it) under a timeout: a hang fails
the test instead of stalling the suite.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys

from mer_testing import REPO

# A SIGTERM sent at every line boundary that `wait()` passes before it
# blocks (the Python-level handler runs at the next one) must stop it. The
# design this replaced, `Event.set` in the handler and `Event.wait()` in the
# main thread, deadlocks at the boundary in `Condition.wait` where the main
# thread holds the Event's lock: the handler waits for that lock forever.
# (After `wait()` has woken, a second signal ends the process: SECOND_SIGNAL.)
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
    waiting = threading.Event()
    def later():
        waiting.wait()
        time.sleep(0.3)  # the main thread is blocked in `wait()` by then
        woke.append(True)
        os.kill(os.getpid(), signal.SIGTERM)
    with StopSignals() as signals:
        if from_thread:
            threading.Thread(target=later).start()
        waiting.set()
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
print("boundaries", before)
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


# The wakeup byte lost (here: another library moved the wakeup fd): `wait()`
# still returns, from the handler's record, within about a second.
BYTE_LOST = r"""
import os, signal, threading, time
from serving.stop_signals import RECHECK_SECONDS, StopSignals

signal.alarm(30)
with StopSignals() as signals:
    signal.set_wakeup_fd(-1)
    threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM)).start()
    started = time.monotonic()
    assert signals.wait() == signal.SIGTERM
    assert time.monotonic() - started < 0.2 + RECHECK_SECONDS + 5
print("ok")
"""

# A second signal takes the default action at once: the way out of a load
# or a shutdown that takes too long.
SECOND_SIGNAL = r"""
import os, signal, time
from serving.stop_signals import StopSignals

signal.alarm(30)
with StopSignals() as signals:
    os.kill(os.getpid(), signal.SIGTERM)
    assert signals.wait() == signal.SIGTERM
    print("stopping", flush=True)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(20)  # (a shutdown that hangs)
print("not reached")
"""

# `mer serve`: a SIGTERM while it loads is kept; once loaded it shuts the
# retrieval service and the model server down and exits 0.
SERVE_MAIN = r"""
import json, os, signal, sys
import serving.main as main

signal.alarm(60)

class Part:
    def __init__(self, name):
        self.name = name
    def stop(self):
        print("stopped", self.name, flush=True)

class Service(Part):
    address, metrics_port = "127.0.0.1:1", None
    class cfg:
        model_server = "127.0.0.1:2"
    class retriever:
        @staticmethod
        def versions():
            return {}

def start(args):
    os.kill(os.getpid(), signal.SIGTERM)  # arrives while "loading"
    print("loaded", flush=True)
    return Part("model server"), Service("retrieval service")

main.start = start
sys.exit(main.serve_main(["--export_dir", "unused"]))
"""


def run_script(script: str, code: int = 0) -> str:
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == code, result.stderr[-3000:]
    return result.stdout


def test_a_signal_at_any_point_of_wait_stops_it_without_deadlock():
    assert int(run_script(EVERY_LINE).split()[-1]) >= 2


def test_a_signal_while_blocked_stops_it_and_close_restores_the_handlers():
    assert run_script(BLOCKED).strip() == "ok"


def test_the_signal_is_not_lost_with_the_wakeup_byte():
    assert run_script(BYTE_LOST).strip() == "ok"


def test_a_second_signal_takes_the_default_action_at_once():
    assert run_script(SECOND_SIGNAL, code=-signal.SIGTERM).split() == ["stopping"]


def test_mer_serve_keeps_a_signal_sent_while_loading_and_shuts_down_cleanly():
    out = run_script(SERVE_MAIN).splitlines()
    assert out[0] == "loaded" and json.loads(out[1])["retrieval"] == "127.0.0.1:1"
    assert out[2:] == ["stopped retrieval service", "stopped model server"]
