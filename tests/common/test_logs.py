"""What a user sees on stderr: TensorFlow's native noise lines (written to
fd 2 by the C++ runtime, past any Python logging filter) are dropped
unless `-v`; everything else passes, in order, even when the process ends
without cleanup."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = r"""
import os, sys
sys.path.insert(0, {root!r})
from common.logs import setup_logging
setup_logging(verbose={verbose})
os.write(2, b'W0000 00:00:1796027054.478076   19169 op_level_cost_estimator.cc:699] Error in PredictCost() '
            b'for the op: op: "Softmax" attr {{ key: "T" }}\n')
os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
os.write(2, b"2026-11-30 08:24:15.301039: E external/local_xla/xla/stream_executor/cuda/cuda_platform.cc:51] "
            b"failed call to cuInit: INTERNAL: CUDA error\n")
os.write(2, b"first kept line\n")
os.write(2, b"\rbar 1/2")
os.write(2, b"\rbar 2/2\n")
import logging
logging.getLogger("mer").info("a progress line")
os.write(2, b"E0000 a real error\n")
{end}
"""
NOISE = ("PredictCost", "absl::InitializeLog", "cuInit")
KEPT = "first kept line\n\rbar 1/2\rbar 2/2\n"


def _stderr(verbose: bool, end: str = "") -> str:
    code = SCRIPT.format(root=str(ROOT), verbose=verbose, end=end)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    return done.stderr.decode()


@pytest.mark.parametrize("end", ["", "os._exit(3)"])
def test_native_noise_is_dropped_and_the_rest_kept_in_order(end):
    err = _stderr(False, end)
    assert not any(n in err for n in NOISE), err
    assert KEPT in err
    assert err.index(KEPT) < err.index("mer: a progress line") < err.index("E0000 a real error")


def test_verbose_keeps_the_native_lines():
    err = _stderr(True)
    assert all(n in err for n in NOISE)
    assert KEPT in err and "E0000 a real error" in err
