"""Job start-up cost: reading the prepared tables every training job and
every evaluation reads before the first step.

Times, per prepared directory, the median over `--repeats` of
`load_item_table` (the in-graph item feature store's source, read by
`train()` and `load_trained`), `load_corpus` (the SPEC §6 corpus with topics
and counts: validation and evaluation) and `target_timestamps` (the
validation carve's read of every training record's target time). Prints a
table and writes JSON.

  python -m benchmarks.startup [--prepared DIR[,DIR...]] [--repeats 3]
                               [--out benchmarks/results/startup.json]

Without `--prepared` it prepares the `synthetic-small` world into a temporary
directory; `runs/quality/<dataset>/prepared-source` (written by
`benchmarks/quality.py`) are MovieLens-sized examples.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import tempfile
import time


def _median_seconds(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def measure(prepared: str, repeats: int) -> dict:
    from trainer.config import load_config
    from trainer.data import target_timestamps
    from trainer.evaluation import load_corpus
    from trainer.item_table import load_item_table
    from trainer.model_io import train_pattern

    table_s, table = _median_seconds(lambda: load_item_table(prepared), repeats)
    corpus_s, corpus = _median_seconds(lambda: load_corpus(prepared), repeats)
    pattern = train_pattern(prepared, load_config("synthetic-small"))
    carve_s, stamps = _median_seconds(lambda: target_timestamps(pattern), repeats)
    return {"prepared": prepared, "items": len(table.ids), "corpus": len(corpus.ids),
            "train_records": len(stamps), "load_item_table_s": table_s, "load_corpus_s": corpus_s,
            "target_timestamps_s": carve_s}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prepared", default="", help="comma-separated prepared directories")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/startup.json")
    args = parser.parse_args(argv)

    import trainer  # noqa: F401  (legacy-Keras switch before TensorFlow loads)

    dirs = [d for d in args.prepared.split(",") if d]
    with tempfile.TemporaryDirectory() as tmp:
        if not dirs:
            from beam.run import IN_MEMORY, run_prepare
            from trainer.config import load_config

            dirs = [f"{tmp}/synthetic-small"]
            run_prepare(load_config("synthetic-small"), dirs[0], list(IN_MEMORY))
        rows = [measure(d, args.repeats) for d in dirs]

    print("| prepared | items | train records | load_item_table s | load_corpus s | target_timestamps s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['prepared']} | {r['items']} | {r['train_records']} | {r['load_item_table_s']:.2f} | "
              f"{r['load_corpus_s']:.2f} | {r['target_timestamps_s']:.2f} |")
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    command = "python -m benchmarks.startup " + " ".join(sys.argv[1:] if argv is None else argv)
    out.write_text(json.dumps({"command": command, "repeats": args.repeats, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
