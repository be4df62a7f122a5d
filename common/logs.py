"""One logging setup for every `mer` command.

The project's own progress is INFO on stderr (`common/progress.py`: a bar
on a terminal, a line every 30 s elsewhere, one final line per stage);
Beam's INFO lines, absl and TensorFlow's C++ warnings are hidden unless
`verbose` (`-v`).
"""

from __future__ import annotations

import atexit
import logging
import os
import subprocess
import sys

OURS = ("__main__", "beam", "trainer", "export", "serving", "common", "mer", "benchmarks")


def setup_logging(verbose: bool = False) -> None:
    """Call before TensorFlow is imported to also quiet its C++ logs."""
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        filter_native_stderr()
    # Third-party libraries (Beam logs to the root logger) stay at WARNING.
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S", force=True)
    from common.progress import make_room

    for handler in logging.getLogger().handlers:
        handler.addFilter(make_room)  # a log line never lands in the middle of a progress bar
        if not verbose:
            handler.addFilter(_known_noise)
    for name in OURS:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.INFO)


# Warnings that say nothing to a user of this project (Beam's optional GCP
# client probe, its memory probe on this platform).
NOISE = ("apitools not found", "Resource module is not available")


def _known_noise(record: logging.LogRecord) -> bool:
    return not any(str(record.msg).startswith(n) for n in NOISE)


# Lines that TensorFlow's C++ runtime writes straight to file descriptor 2
# through absl, past TF_CPP_MIN_LOG_LEVEL (grappler's cost-model warnings
# come by the dozen per tf.function): dropped unless `-v`.
NATIVE_NOISE = (
    rb"^[WIE]\d{4} [^\n]*(?:op_level_cost_estimator\.cc|PredictCost\(\))",
    rb"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    rb"^[^\n]*cuda_platform\.cc:\d+\] failed call to cuInit",
)
# The filter process: passes fd 0 to fd 1 as it comes (a partial line such
# as a progress bar's redraw at once), holding back a partial line that may
# start a noise line (W/I/E or a date first) until its newline.
_FILTER = r"""
import os, re, sys
patterns = [re.compile(p.encode()) for p in sys.argv[1:]]
held = b""
while True:
    chunk = os.read(0, 65536)
    if not chunk:
        break
    held += chunk
    lines = held.split(b"\n")
    held = lines.pop()
    out = [line + b"\n" for line in lines if not any(p.match(line) for p in patterns)]
    if held and held[:1] not in b"WIE0123456789":
        out.append(held)
        held = b""
    if out:
        os.write(1, b"".join(out))
if held and not any(p.match(held) for p in patterns):
    os.write(1, held)
"""
_native_tty: bool | None = None  # whether fd 2 was a terminal before the filter took it
# In-process callers that capture fd 2 themselves (pytest's capture) turn
# the filter off; every command run as a process has it.
FILTER_NATIVE_STDERR = True


def native_stderr_is_tty() -> bool | None:
    """Whether stderr was a terminal before `filter_native_stderr` (None: no filter)."""
    return _native_tty


def filter_native_stderr() -> bool:
    """Routes file descriptor 2 through a child process that drops
    `NATIVE_NOISE` lines and passes everything else on unchanged.

    Why a process: the C++ runtime writes to fd 2 directly, so no Python
    logging filter sees those lines; a child keeps passing the parent's
    last lines on even when the parent dies without cleanup (it exits at
    the pipe's end). Once per process; `MER_NATIVE_STDERR=keep` turns it
    off. Returns whether the filter is in place.
    """
    global _native_tty
    if _native_tty is not None:
        return True
    if not FILTER_NATIVE_STDERR or os.environ.get("MER_NATIVE_STDERR") == "keep":
        return False
    try:
        tty = os.isatty(2)
        read, write = os.pipe()
        child = subprocess.Popen([sys.executable, "-c", _FILTER] + [p.decode() for p in NATIVE_NOISE],
                         stdin=read, stdout=2, stderr=subprocess.DEVNULL, close_fds=True,
                         start_new_session=True)
    except OSError:
        return False
    os.close(read)
    sys.stderr.flush()
    os.dup2(write, 2)
    os.close(write)
    _native_tty = tty
    atexit.register(_drain, child)
    return True


def _drain(child: subprocess.Popen) -> None:
    """At exit: end the pipe and let the filter write its last lines before
    the shell prompt returns (a killed process leaves that to the child)."""
    try:
        sys.stderr.flush()
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 2)
        os.close(null)
        child.wait(timeout=2)
    except (OSError, ValueError, subprocess.TimeoutExpired):
        pass
