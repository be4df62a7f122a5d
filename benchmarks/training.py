"""Training throughput (examples/s) per model kind, CPU preset, batch 256.

Prepares a synthetic world once, builds every model, runs a few warm-up
steps (tracing, optimizer slots), then times `--rounds` rounds of `--steps`
training steps, the kinds interleaved within each round so that a slow
moment of a shared machine hits all of them alike. Reports the median
ms/step and the median over rounds of each kind's cost relative to the
single-embedding model in the same round. Prints a table and writes JSON.

  python -m benchmarks.training [--steps 20] [--rounds 7] [--out benchmarks/results/training.json]

Rows: the model kinds, plus for reference `dcm (plain backward)` = DCM
without the two training-cost measures (argmax recompute, which applies only
to the `argmax` association, not to today's default `max`; routing gradient
through the last iteration only) and `dcm (condition only)` = DCM whose
conditions enter the crossing without the shared pooled/latest fields.
Breakdown rows (`--kinds`): DCM with K_im=2, Gaussian instead of
farthest-point init, one routing iteration.

Bar (issue 14, decision 1; issue 3 had 1.5x): DCM costs at most 2.0x the
single-embedding model per example, re-measured whenever a default changes.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import tempfile
import time

# name -> (config overrides, argmax recompute)
ROWS = {
    "single": (["model.kind=single"], True),
    "mind": (["model.kind=mind"], True),
    "dcm": (["model.kind=dcm"], True),
    "dcm (plain backward)": (["model.kind=dcm", "model.routing_gradient=all"], False),
    "dcm (condition only)": (["model.kind=dcm", "model.implicit_fields=[]"], True),
    "sa": (["model.kind=sa"], True),
    "cr": (["model.kind=cr"], True),
    # Cost breakdown of DCM (not run by default; pick with --kinds).
    "dcm K_im=2": (["model.kind=dcm", "model.num_interests=2"], True),
    "dcm (gaussian init)": (["model.kind=dcm", "model.init=gaussian"], True),
    "dcm (1 routing iteration)": (["model.kind=dcm", "model.routing_iterations=1"], True),
}
DEFAULT_KINDS = ["single", "mind", "dcm", "dcm (plain backward)", "dcm (condition only)", "sa", "cr"]


def build_step(prepared: str, overrides: list[str], recompute: bool, batches: int, batch: int):
    """A traced train step of one model and its materialised input batches."""
    from trainer.config import load_config
    from trainer.data import build_dataset
    from trainer.item_table import load_item_table
    from trainer.layers._keras import keras, tf
    from trainer.model import build_model
    from trainer.model_io import train_pattern

    tf.keras.utils.set_random_seed(0)
    cfg = load_config("synthetic-small", overrides)
    model = build_model(cfg.model, load_item_table(prepared))
    model.recompute_selected = recompute
    model.compile(optimizer=keras.optimizers.Adam(cfg.train.learning_rate))
    data = build_dataset(train_pattern(prepared, cfg), batch, cfg.data.history_length, repeat=True)
    # Materialise batches first so the timing is the model, not the input pipeline.
    return tf.function(model.train_step), list(data.take(batches))


def timed(step, batches) -> float:
    """Seconds per step over `batches`."""
    start = time.perf_counter()
    for b in batches:
        logs = step(b)
    float(logs["loss"])  # wait for the last step
    return (time.perf_counter() - start) / len(batches)


def measure(prepared: str, names: list[str], steps: int, rounds: int, warmup: int, batch: int) -> list[dict]:
    steps_of = {name: build_step(prepared, *ROWS[name], warmup + steps, batch) for name in names}
    for step, batches in steps_of.values():
        timed(step, batches[:warmup])
    seconds = {name: [] for name in names}
    for _ in range(rounds):
        for name, (step, batches) in steps_of.items():
            seconds[name].append(timed(step, batches[warmup:]))
    rows = []
    for name in names:
        per_step = statistics.median(seconds[name])
        ratios = [s / base for s, base in zip(seconds[name], seconds["single"])]
        rows.append({"kind": name, "examples_per_second": round(batch / per_step, 1),
                     "ms_per_step": round(1000 * per_step, 1),
                     "cost_vs_single": round(statistics.median(ratios), 2),
                     "cost_vs_single_range": [round(min(ratios), 2), round(max(ratios), 2)]})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--kinds", default=",".join(DEFAULT_KINDS),
                        help=f"rows to run (single is always run): {list(ROWS)}")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--out", default="benchmarks/results/training.json")
    args = parser.parse_args()
    from beam.run import IN_MEMORY, run_prepare
    from trainer.config import load_config

    names = ["single"] + [n for n in args.kinds.split(",") if n and n != "single"]
    unknown = sorted(set(names) - set(ROWS))
    if unknown:
        parser.error(f"--kinds: unknown {unknown}; allowed: {list(ROWS)}")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config("synthetic-small", [f"data.synthetic.num_users={args.users}"])
        run_prepare(cfg, tmp, list(IN_MEMORY))
        rows = measure(tmp, names, args.steps, args.rounds, args.warmup, args.batch)
    print("| kind | examples/s | ms/step | cost vs single (median, range over rounds) |")
    print("|---|---|---|---|")
    for r in rows:
        low, high = r["cost_vs_single_range"]
        print(f"| {r['kind']} | {r['examples_per_second']} | {r['ms_per_step']} | "
              f"{r['cost_vs_single']} ({low}-{high}) |")
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"batch": args.batch, "steps": args.steps, "rounds": args.rounds,
                               "preset": "synthetic-small (CPU)",
                               "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
