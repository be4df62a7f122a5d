"""Benchmarks: each prints a table and writes JSON (never timed tests)."""

from __future__ import annotations

import json
import pathlib


def free_ports(n: int) -> list[int]:
    """`n` distinct free TCP ports on loopback (for worker clusters on one machine)."""
    import socket

    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def write_result(path, result) -> pathlib.Path:
    """Writes a benchmark's JSON result (parents created; floats from NumPy allowed)."""
    out = pathlib.Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=float) + "\n")
    return out
