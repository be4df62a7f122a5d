"""What a user sees on stderr: TensorFlow's native noise lines (written to
fd 2 by the C++ runtime, past any Python logging filter) are dropped
unless `-v`; everything else passes, in order, as it comes, even when the
process ends without cleanup; a closed stderr or a lingering child process
neither breaks nor delays a command."""

from __future__ import annotations

import os
import pathlib
import re
import select
import subprocess
import sys
import time

import pytest

from common import native_stderr

ROOT = pathlib.Path(__file__).resolve().parents[2]
PREDICT_COST = (b'W0000 00:00:1796027054.478076   19169 op_level_cost_estimator.cc:699] Error in PredictCost() '
                b'for the op: op: "Softmax" attr { key: "T" }')
BANNER = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
CUINIT = (b"2026-11-30 08:24:15.301039: E external/local_xla/xla/stream_executor/cuda/cuda_platform.cc:51] "
          b"failed call to cuInit: INTERNAL: CUDA error")
SCRIPT = r"""
import os, sys
sys.path.insert(0, {root!r})
from common.logs import setup_logging
setup_logging(verbose={verbose})
os.write(2, {noise!r} + b"\n")
os.write(2, b"first kept line\n")
os.write(2, b"\rbar 1/2")
os.write(2, b"\rbar 2/2" + {noise!r} + b"\n")  # a redraw and a warning in one read
import logging
logging.getLogger("mer").info("a progress line")
os.write(2, b"E0000 a real error\n")
{end}
"""
KEPT = "first kept line\n\rbar 1/2\rbar 2/2"


def _stderr(verbose: bool, noise: bytes, end: str = "") -> str:
    code = SCRIPT.format(root=str(ROOT), verbose=verbose, noise=noise, end=end)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    return done.stderr.decode()


@pytest.mark.parametrize("end", ["", "os._exit(3)"])
@pytest.mark.parametrize("noise", [PREDICT_COST, BANNER])
def test_native_noise_is_dropped_and_the_rest_kept_in_order(noise, end):
    err = _stderr(False, noise, end)
    assert noise.decode() not in err and "PredictCost" not in err and "InitializeLog" not in err, err
    assert KEPT in err
    assert err.index(KEPT) < err.index("mer: a progress line") < err.index("E0000 a real error")


def test_verbose_keeps_the_native_lines():
    err = _stderr(True, PREDICT_COST)
    assert err.count("PredictCost") == 2
    assert "first kept line" in err and "E0000 a real error" in err


def test_the_cuinit_line_is_noise_only_without_a_gpu():
    patterns = [re.compile(p) for p in native_stderr.noise_patterns()]
    dropped = native_stderr.clean(CUINIT, patterns) == b""
    assert dropped == (not any(pathlib.Path("/dev").glob("nvidia[0-9]*")))


def test_a_partial_line_passes_at_once_and_a_possible_noise_start_waits_for_its_newline():
    patterns = [p.decode("latin-1") for p in native_stderr.noise_patterns()]
    child = subprocess.Popen([sys.executable, "-I", "-S", native_stderr.__file__] + patterns,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def read_now() -> bytes:
        ready, _, _ = select.select([child.stdout], [], [], 5)
        return os.read(child.stdout.fileno(), 65536) if ready else b""

    try:
        child.stdin.write(b"\rbar 1/2")
        child.stdin.flush()
        assert read_now() == b"\rbar 1/2"  # no newline, yet shown
        child.stdin.write(PREDICT_COST[:20])  # may become noise: held
        child.stdin.flush()
        assert select.select([child.stdout], [], [], 0.5)[0] == []
        child.stdin.write(PREDICT_COST[20:] + b"\nafter\n")
        child.stdin.flush()
        assert read_now() == b"after\n"
    finally:
        child.stdin.close()
        child.wait(timeout=10)


def test_a_closed_stderr_or_a_lingering_child_neither_breaks_nor_delays_a_command():
    quiet = f"import sys; sys.path.insert(0, {str(ROOT)!r}); from common.logs import setup_logging; setup_logging()"
    closed = subprocess.run(["bash", "-c", f"{sys.executable} -c {quiet!r} 2>&-"], capture_output=True, timeout=60)
    assert closed.returncode == 0, closed.stderr
    lingering = quiet + "; import subprocess; subprocess.Popen(['sleep', '5'])"
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", lingering], capture_output=False, timeout=60,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert done.returncode == 0 and time.monotonic() - started < 4  # not held until `sleep` ends


def test_output_after_exit_handlers_still_reaches_stderr():
    code = (f"import atexit, os, sys; sys.path.insert(0, {str(ROOT)!r});"
            "atexit.register(lambda: os.write(2, b'late line\\n'));"
            "from common.logs import setup_logging; setup_logging()")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert "late line" in done.stderr.decode()
