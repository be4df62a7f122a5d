"""Prepare-pipeline throughput and memory at 1M and 10M synthetic events.

Generates each world first (timed separately), then times `mer prepare` on
its local default (`beam.run.LocalRunner`: Beam's FnApiRunner, DirectRunner's
engine), multi-process, 2 workers, sampling the summed RSS of the whole
process tree (runner + workers). Prints a table and writes JSON.

  python -m benchmarks.prepare [--sizes 1000000 10000000] [--out benchmarks/results/prepare.json]

Bars (issue 2): time(10M) <= 12 x time(1M); peak RSS < 6 GiB.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile

from benchmarks.rss import run_measured
from benchmarks import write_result

EVENTS_PER_USER = 37.5  # measured mean of the synthetic world (before dedup)
WORKERS = ["--", "--direct_num_workers=2"]  # mer prepare's local default runner, multi-process


def overrides(events: int) -> list[str]:
    users = int(events / EVENTS_PER_USER)
    sets = [f"data.synthetic.num_users={users}", f"data.synthetic.num_items={max(2000, events // 20)}",
            "data.synthetic.num_topics=200", "data.synthetic.content_dim=32",
            "data.synthetic.num_shards=16", "data.num_shards=32"]
    return [arg for s in sets for arg in ("--set", s)]


def run(size: int, workdir: pathlib.Path) -> dict:
    raw, out = workdir / f"raw-{size}", workdir / f"out-{size}"

    def mer(stage: str, output_dir: pathlib.Path, *extra: str) -> list[str]:
        return ([sys.executable, "-m", "mer", stage, "--config", "synthetic-small", "--output_dir",
                 str(output_dir), *extra] + overrides(size) + WORKERS)

    gen = {"seconds": None}
    if not (raw / "world.json").exists():  # a kept --workdir reuses its world
        gen = run_measured(mer("synthesize", raw, "--overwrite"), stdout=subprocess.DEVNULL)
    prep = run_measured(mer("prepare", out, "--raw_dir", str(raw), "--overwrite"), check=False,
                        stdout=subprocess.DEVNULL)
    manifest = json.loads((out / "manifest.json").read_text())
    if prep.get("error"):
        return {"target_events": size, "error": prep["error"], "manifest_balance": manifest.get("balance"),
                "prepare_seconds": round(prep["seconds"], 1),
                "peak_tree_rss_gib": round(prep["peak_tree_rss_gib"], 2)}
    events = manifest["counts"]["events_rows_in"]
    return {"target_events": size, "events": events,
            "examples": sum(v for k, v in manifest["counts"].items() if k.startswith("examples/")),
            "generate_seconds": None if gen["seconds"] is None else round(gen["seconds"], 1),
            "prepare_seconds": round(prep["seconds"], 1),
            "events_per_second": round(events / prep["seconds"]),
            "peak_tree_rss_gib": round(prep["peak_tree_rss_gib"], 2),
            "peak_process_rss_gib": round(prep["peak_process_rss_gib"], 2),
            "min_mem_available_gib": round(prep["min_mem_available_gib"], 2),
            "balanced": all(v["ok"] for v in manifest["balance"].values())}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--out", default="benchmarks/results/prepare.json")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = pathlib.Path(args.workdir or tmp)  # --workdir keeps the outputs
        for size in args.sizes:
            rows.append(run(size, workdir))
            print(json.dumps(rows[-1]), flush=True)
    header = ["events", "prepare_seconds", "events_per_second", "peak_tree_rss_gib",
              "peak_process_rss_gib", "generate_seconds", "examples"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(row.get(h, "-")) for h in header) + " |")
    result = {"rows": rows, "runner": "mer prepare's local default (beam.run.LocalRunner: FnApiRunner, "
                                      "multi_processing), 2 workers"}
    if len(rows) >= 2 and not any("error" in r for r in rows):
        result["time_ratio_last_over_first"] = round(rows[-1]["prepare_seconds"] / rows[0]["prepare_seconds"], 2)
        result["size_ratio"] = round(rows[-1]["events"] / rows[0]["events"], 2)
        print(f"time ratio {result['time_ratio_last_over_first']} for size ratio {result['size_ratio']}")
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
