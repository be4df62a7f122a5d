"""Runs a command and samples the summed RSS of its whole process tree."""

from __future__ import annotations

import os
import subprocess
import threading
import time


def _children(pid: int) -> list[int]:
    """Children of every thread of `pid` (a child belongs to the thread that forked it)."""
    found = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                found.extend(int(c) for c in handle.read().split())
        except OSError:
            continue
    return found


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def mem_available() -> int:
    """System-wide MemAvailable in bytes (memory pressure on the machine)."""
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def tree_rss(pid: int) -> tuple[int, int]:
    """(sum of RSS over the tree, largest single process RSS), in bytes."""
    stack, total, largest = [pid], 0, 0
    while stack:
        p = stack.pop()
        rss = _rss_bytes(p)
        total += rss
        largest = max(largest, rss)
        stack.extend(_children(p))
    return total, largest


def run_measured(cmd: list[str], interval: float = 0.25, check: bool = True, **kwargs) -> dict:
    """Runs `cmd`; returns wall seconds, peak tree RSS and peak process RSS (GiB).

    With `check=False` a failing command is reported under `error`.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, **kwargs)
    peak = {"tree": 0, "process": 0, "available": mem_available()}

    def sample():
        while proc.poll() is None:
            peak["available"] = min(peak["available"], mem_available())
            total, largest = tree_rss(proc.pid)
            peak["tree"] = max(peak["tree"], total)
            peak["process"] = max(peak["process"], largest)
            time.sleep(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    code = proc.wait()
    thread.join()
    error = f"{' '.join(cmd)} exited with {code}" if code != 0 else None
    if error and check:
        raise RuntimeError(error)
    return {"error": error, "seconds": time.perf_counter() - start, "peak_tree_rss_gib": peak["tree"] / 2**30,
            "peak_process_rss_gib": peak["process"] / 2**30,
            "min_mem_available_gib": peak["available"] / 2**30}
