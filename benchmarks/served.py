"""Serving merge vs SPEC §6 max scoring, on the quality benchmark's models.

  python -m benchmarks.served [--datasets ml-100k] [--variants single,mind,dcm]
      [--seeds 0,1,2] [--ks 20,50,100] [--work runs/quality]
      [--out benchmarks/results/served.json]

SPEC §6 scores an item by the max over the user's embeddings; the retrieval
service (SPEC §2.5, paper §3.4) instead gives each implicit embedding a
budget proportional to its importance and merges the per-embedding lists
round-robin with de-duplication (`common/merging.py`). This benchmark
takes the trained runs that `benchmarks/quality.py` cached under `--work`
(it trains nothing), reads their SPEC §6 ranks, scores the same eval
records through the serving merge (`trainer.evaluation.served_hits`), and
prints both HR@K (mean over seeds [95% bootstrap CI]); writes JSON.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np

import trainer  # noqa: F401  (legacy-Keras switch before TensorFlow loads)
from benchmarks import write_result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", default="ml-100k")
    parser.add_argument("--variants", default="single,mind,dcm",
                        help="Table 1 / Table 2 row names of benchmarks/quality.py")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--ks", default="20,50,100")
    parser.add_argument("--work", default="runs/quality")
    parser.add_argument("--out", default="benchmarks/results/served.json")
    args = parser.parse_args(argv)
    from benchmarks.quality import _load, log, run_dir
    from trainer.evaluate import served_hits
    from trainer.evaluation import hit_block, load_corpus
    from trainer.model_io import load_trained

    ks = [int(k) for k in args.ks.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    report = {"command": "python -m benchmarks.served " + " ".join(argv if argv is not None else sys.argv[1:]),
              "datasets": {}}
    lines = ["| dataset | model | seeds | " + " | ".join(f"HR@{k} max / served" for k in ks) + " |",
             "|---|---|---|" + "---|" * len(ks)]
    for dataset in args.datasets.split(","):
        data_dir = str(pathlib.Path(args.work) / dataset / "prepared-source")
        corpus = load_corpus(data_dir)
        rows = report["datasets"][dataset] = {}
        for variant in args.variants.split(","):
            max_hits, served = {k: [] for k in ks}, {k: [] for k in ks}
            for seed in seeds:
                run = pathlib.Path(args.work) / dataset / "runs" / run_dir(variant) / f"seed{seed}"
                if not (run / "ranks.npz").exists() or not (run / "model" / "training.json").exists():
                    log(f"{dataset} {variant} seed {seed}: no trained run under {run}; skipped")
                    continue
                cfg, model, _ = load_trained(str(run / "model"), data_dir)
                hits = served_hits(model, cfg, data_dir, corpus, ks)
                ranks = _load(run).ranks
                for k in ks:
                    max_hits[k].append(ranks <= k)
                    served[k].append(hits[k])
                log(f"{dataset} {variant} seed {seed}: HR@50 max {np.mean(ranks <= 50):.4f} "
                    f"served {np.mean(hits.get(50, [np.nan])):.4f}")
            if not max_hits[ks[0]]:
                continue
            rows[variant] = {"seeds": len(max_hits[ks[0]]), "max": hit_block(max_hits), "served": hit_block(served)}
            cell = lambda b, k: f"{b[str(k)]['mean']:.4f} [{b[str(k)]['ci95'][0]:.3f}, {b[str(k)]['ci95'][1]:.3f}]"  # noqa: E731
            lines.append(f"| {dataset} | {variant} | {rows[variant]['seeds']} | " + " | ".join(
                f"{cell(rows[variant]['max'], k)} / {cell(rows[variant]['served'], k)}" for k in ks) + " |")
    print("\n".join(lines))
    write_result(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
