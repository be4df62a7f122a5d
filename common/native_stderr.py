"""TensorFlow's native stderr noise, dropped unless `-v`.

The C++ runtime writes to file descriptor 2 directly through absl, past
TF_CPP_MIN_LOG_LEVEL and past any Python logging filter (grappler's
cost-model warnings come by the dozen per tf.function). `filter_native_stderr`
routes fd 2 through a small child process (this file, run as a script) that
drops those lines and passes everything else on as it comes. Why a process:
it keeps passing the parent's last lines on even when the parent dies
without cleanup (it exits at the pipe's end).

Standard library only: the filter runs as `python -I -S <this file>`.
"""

from __future__ import annotations

import atexit
import glob
import os
import re
import subprocess
import sys

NATIVE_NOISE = (
    rb"[WIE]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ op_level_cost_estimator\.cc:\d+\] Error in PredictCost\(\)[^\n]*",
    rb"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR",
)
# Only where no GPU device exists: on a machine with one it is a real error.
NO_GPU_NOISE = rb"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: E \S*cuda_platform\.cc:\d+\] failed call to cuInit[^\n]*"
# A partial line (no newline yet) is passed on at once, unless it may be the
# start of a noise line: then it waits for its newline.
_MAY_BE_NOISE = b"WIE0123456789"

ENABLED = True  # in-process callers that capture fd 2 themselves (pytest) turn it off
_native_tty: bool | None = None  # whether fd 2 was a terminal before the filter took it


def noise_patterns() -> list[bytes]:
    """The patterns dropped on this machine."""
    return list(NATIVE_NOISE) + ([] if glob.glob("/dev/nvidia[0-9]*") else [NO_GPU_NOISE])


def clean(line: bytes, patterns: list[re.Pattern]) -> bytes:
    """What to write for one complete line (without its newline): the line
    and its newline; nothing for a noise line; the text before the noise
    when something else shares the line (a progress bar's redraw, which
    has no newline of its own, read together with a warning)."""
    for pattern in patterns:
        match = pattern.search(line)
        if match:
            return line[:match.start()]
    return line + b"\n"


def run_filter(patterns: list[re.Pattern], source: int = 0, sink: int = 1) -> None:
    """Copies `source` to `sink` until end of input, dropping noise."""
    held = b""
    while True:
        chunk = os.read(source, 65536)
        if not chunk:
            break
        *lines, held = (held + chunk).split(b"\n")
        out = [clean(line, patterns) for line in lines]
        if held and held[:1] not in _MAY_BE_NOISE:
            out.append(held)
            held = b""
        _write_all(sink, b"".join(out))
    if held:
        kept = clean(held, patterns)
        _write_all(sink, kept[:-1] if kept == held + b"\n" else kept)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


def native_stderr_is_tty() -> bool | None:
    """Whether stderr was a terminal before `filter_native_stderr` (None: no filter)."""
    return _native_tty


def filter_native_stderr() -> bool:
    """Routes file descriptor 2 through the filter process. Once per
    process; `MER_NATIVE_STDERR=keep` (or `ENABLED = False`) turns it off;
    nothing happens when stderr is closed. At exit the real stderr is put
    back, so what Python or the runtime writes after that still shows.
    Returns whether the filter is in place."""
    global _native_tty
    if _native_tty is not None:
        return True
    if not ENABLED or os.environ.get("MER_NATIVE_STDERR") == "keep" or sys.stderr is None:
        return False
    fds: list[int] = []
    try:
        os.fstat(2)
        tty = os.isatty(2)
        saved = os.dup(2)
        fds.append(saved)
        read, write = os.pipe()
        fds += [read, write]
        child = subprocess.Popen(
            [sys.executable, "-I", "-S", os.path.abspath(__file__)] + [p.decode("latin-1") for p in noise_patterns()],
            stdin=read, stdout=saved, stderr=subprocess.DEVNULL, close_fds=True, start_new_session=True)
    except OSError:
        for fd in fds:
            os.close(fd)
        return False
    os.close(read)
    _flush_stderr()
    os.dup2(write, 2)
    os.close(write)
    _native_tty = tty
    atexit.register(_drain, child, saved)
    return True


def _flush_stderr() -> None:
    try:
        sys.stderr.flush()
    except (AttributeError, OSError, ValueError):
        pass


def _drain(child: subprocess.Popen, saved: int) -> None:
    """At exit: give fd 2 back to the real stderr (which ends the pipe
    unless a child process still holds it) and let the filter write its
    last lines before the shell prompt returns."""
    _flush_stderr()
    try:
        os.dup2(saved, 2)
        child.wait(timeout=0.3)
    except (OSError, subprocess.TimeoutExpired):
        pass


if __name__ == "__main__":
    run_filter([re.compile(arg.encode("latin-1")) for arg in sys.argv[1:]])
