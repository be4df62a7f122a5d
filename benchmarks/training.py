"""Training throughput (examples/s) per model kind, CPU preset, batch 256.

Prepares a synthetic world once, then for each kind runs a few warm-up
steps (tracing, optimizer slots) and times `--steps` training steps.
Prints a table and writes JSON.

  python -m benchmarks.training [--steps 40] [--out benchmarks/results/training.json]

Bar (issue 3): DCM costs at most 1.5x the single-embedding model per example.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import tempfile
import time

KINDS = ("single", "mind", "dcm", "sa", "cr")


def measure(prepared: str, kind: str, steps: int, warmup: int, batch: int) -> dict:
    from trainer import features
    from trainer.config import load_config
    from trainer.data import build_dataset
    from trainer.item_table import load_item_table
    from trainer.layers._keras import keras, tf
    from trainer.model import build_model

    tf.keras.utils.set_random_seed(0)
    cfg = load_config("synthetic-small", [f"model.kind={kind}"])
    model = build_model(cfg.model, load_item_table(prepared))
    model.compile(optimizer=keras.optimizers.Adam(cfg.train.learning_rate))
    split = features.TRAIN_EXPLICIT if kind == "cr" else features.TRAIN_IMPLICIT
    data = build_dataset(f"{prepared}/{split}-*", batch, cfg.data.history_length, repeat=True)
    # Materialise batches first so the timing is the model, not the input pipeline.
    batches = list(data.take(warmup + steps))
    step = tf.function(model.train_step)
    for b in batches[:warmup]:
        step(b)
    start = time.perf_counter()
    for b in batches[warmup:]:
        logs = step(b)
    float(logs["loss"])  # wait for the last step
    seconds = time.perf_counter() - start
    return {"kind": kind, "examples_per_second": round(steps * batch / seconds, 1),
            "ms_per_step": round(1000 * seconds / steps, 1)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--out", default="benchmarks/results/training.json")
    args = parser.parse_args()
    from beam.run import run_prepare
    from trainer.config import load_config

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config("synthetic-small", [f"data.synthetic.num_users={args.users}"])
        run_prepare(cfg, tmp, ["--runner=DirectRunner", "--direct_running_mode=in_memory"])
        rows = [measure(tmp, kind, args.steps, args.warmup, args.batch) for kind in KINDS]
    single = next(r for r in rows if r["kind"] == "single")["examples_per_second"]
    for row in rows:
        row["cost_vs_single"] = round(single / row["examples_per_second"], 2)
    print("| kind | examples/s | ms/step | cost vs single |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['kind']} | {r['examples_per_second']} | {r['ms_per_step']} | {r['cost_vs_single']} |")
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"batch": args.batch, "steps": args.steps, "preset": "synthetic-small (CPU)",
                               "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
