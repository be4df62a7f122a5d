"""Benchmarks: each prints a table and writes JSON (never timed tests)."""

from __future__ import annotations

import json
import pathlib


def write_result(path, result) -> pathlib.Path:
    """Writes a benchmark's JSON result (parents created; floats from NumPy allowed)."""
    out = pathlib.Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=float) + "\n")
    return out
