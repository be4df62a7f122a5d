"""Served HR: the quality benchmark's models through the serving merge.

  python -m benchmarks.served [--datasets ml-100k,movielens-small]
      [--variants single,dcm] [--policies round_robin,score]
      [--explicit "cr source-interest"] [--baseline single]
      [--seeds 0,1,2] [--ks 50,100] [--work runs/quality] [--split eval|validation]
      [--out benchmarks/results/served.json] [--docs docs/results/served.md]

SPEC §6 scores an item by the max over the user's embeddings; the retrieval
service (SPEC §2.5, paper §3.4) instead gives each embedding a budget
(implicit: importance scaled to average 1, explicit: 1 each) and merges the
per-embedding lists, round-robin with de-duplication (the paper) or by score
above a per-embedding floor (`common/merging.py`). This benchmark takes the
runs `benchmarks/quality.py` cached under `--work` (it trains nothing) and
scores the same eval records as the service answers them
(`trainer.evaluation.served_hits`):

- `<variant> (<policy>)`: the implicit model alone, next to its SPEC §6 HR;
- `<explicit> followed topics (<policy>)`: CR alone, conditioned on the
  user's followed topics (up to K_ex, as serving; no target information,
  unlike the source-topic eval records of Table 6), relevance-filtered;
- `<variant> + <explicit> (<policy>)`: the paper's production setting, both
  retrievers merged.

`--split validation` scores the validation carve of the training data
instead (each run's scored validation sample, as its training job scored
it): what picks the service's default merge policy, never the eval split.

Every row is compared with `--baseline` (served = its HR@K) by the paired
difference per eval record (seed-averaged hits; mean and 95% bootstrap CI).
Served hits are cached next to each run (`served-*.npz`, keyed by both
models' weights, the records and the merge). Prints the table, writes JSON
and a markdown page.

Where this differs from the live service: the explicit conditions are the
first K_ex followed topics of the record (the service draws a seeded sample
of the known ones); a topic the CR model does not know keeps its budget
share with an empty list (the service drops it first); and, as SPEC §6, a
target that is also in the history still counts (the service drops the
whole history).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np

import trainer  # noqa: F401  (legacy-Keras switch before TensorFlow loads)
from benchmarks import write_result


def _cached_hits(path: pathlib.Path, ks, key: dict, compute) -> dict:
    """K -> `[records]` bool, from `path` (npz) when it holds every K and was
    computed for the same `key` (models' weights, records, merge)."""
    stamp = json.dumps(key, sort_keys=True)
    if path.exists():
        z = np.load(path)
        if all(f"k{k}" in z.files for k in ks) and "key" in z.files and str(z["key"]) == stamp:
            return {k: z[f"k{k}"] for k in ks}
    hits = compute()
    np.savez(path, key=np.array(stamp), **{f"k{k}": hits[k] for k in ks})
    return hits


def _weights(run: pathlib.Path) -> str:
    return json.loads((run / "model" / "training.json").read_text()).get("weights_sha256", "")


def _cell(block: dict, k) -> str:
    b = block[str(k)]
    return f"{b['mean']:.4f} [{b['ci95'][0]:.3f}, {b['ci95'][1]:.3f}]"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", default="ml-100k,movielens-small")
    parser.add_argument("--variants", default="single,dcm",
                        help="Table 1 / Table 2 / levers row names of benchmarks/quality.py")
    parser.add_argument("--policies", default="round_robin,score")
    parser.add_argument("--explicit", default="cr source-interest",
                        help="the CR row of benchmarks/quality.py merged with each variant; empty for none")
    parser.add_argument("--baseline", default="single", help="the row every other row is compared with")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--ks", default="50,100")
    parser.add_argument("--max_records", type=int, default=0, help="eval records scored (0 = all)")
    parser.add_argument("--split", default="eval", choices=("eval", "validation"),
                        help="records scored: the eval split, or the validation carve of the training "
                             "data (what picks a merge policy; the training job's scored sample)")
    parser.add_argument("--work", default="runs/quality")
    parser.add_argument("--out", default="benchmarks/results/served.json")
    parser.add_argument("--docs", default="docs/results/served.md")
    args = parser.parse_args(argv)
    from common.logs import setup_logging

    setup_logging()  # before TensorFlow loads: its C++ noise and Beam's INFO lines stay hidden
    from benchmarks.quality import _load, log, paired, run_dir
    from common.merging import DEFAULT_FLOOR, POLICIES
    from trainer.evaluate import eval_pattern, followed
    from trainer import features
    from trainer.evaluation import ModelScorer, hit_block, iter_records, load_corpus, served_hits
    from trainer.model_io import load_trained
    from trainer.validation import training_carve, validation_records

    ks = [int(k) for k in args.ks.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    policies = [p for p in args.policies.split(",") if p]
    for policy in policies:
        if policy not in POLICIES:
            parser.error(f"--policies: unknown {policy!r}; expected some of {', '.join(POLICIES)}")
    command = "python -m benchmarks.served " + " ".join(argv if argv is not None else sys.argv[1:])
    report = {"command": command, "seeds": seeds, "datasets": {}}
    scored = ("the validation carve of the training data (each run's scored validation sample)"
              if args.split == "validation" else "the eval split")
    lines = ["# Served HR (generated by `benchmarks/served.py`)", "", f"Command: `{command}`. Records: {scored}.", "",
             "Cells: mean over seeds [95% bootstrap CI over eval records]; `SPEC §6` = max over the user's "
             f"embeddings, exact; served = the merged list of K candidates. Paired: the row minus `{args.baseline}` "
             "per eval record (seed-averaged), mean [95% CI]. Explicit conditions: the record's first K_ex "
             "followed topics (the service samples K_ex of the known ones, seeded); a target also in the "
             "history counts, as SPEC §6 (the service drops the whole history).", ""]
    for dataset in args.datasets.split(","):
        work = pathlib.Path(args.work) / dataset
        data_dir = str(work / "prepared-source")
        corpus = load_corpus(data_dir)
        models: dict = {}

        def model_of(name, seed):
            run = work / "runs" / run_dir(name) / f"seed{seed}"
            if not (run / "model" / "training.json").exists():
                return None
            if (name, seed) not in models:
                cfg, model, _ = load_trained(str(run / "model"), data_dir)
                models[(name, seed)] = (run, cfg, model)
            return models[(name, seed)]

        def served(implicit, explicit, policy, seed):
            imp = model_of(implicit, seed) if implicit else None
            exp = model_of(explicit, seed) if explicit else None
            if (implicit and imp is None) or (explicit and exp is None):
                return None
            run = (imp or exp)[0]
            tag = f"served-{policy}" + (f"-with-{run_dir(explicit)}" if implicit and explicit else "")
            tag += "-validation" if args.split == "validation" else ""

            def compute():
                cfg = (imp or exp)[1]
                if args.split == "validation":
                    pattern = eval_pattern(data_dir, features.TRAIN_IMPLICIT)
                    carve = training_carve(pattern, cfg)
                    records = validation_records(pattern, carve, args.max_records or cfg.train.validation_max_records,
                                                 cfg.train.seed, 256, cfg.data.history_length)
                else:
                    records = iter_records(eval_pattern(data_dir), 256, cfg.data.history_length,
                                           limit=args.max_records)
                explicit_scorer = None
                if exp is not None:
                    explicit_scorer = ModelScorer(exp[2], corpus, conditions=followed(exp[1].model.num_explicit))
                return served_hits(ModelScorer(imp[2], corpus) if imp else None, corpus, records, ks, policy=policy,
                                   explicit=explicit_scorer)

            key = {"max_records": args.max_records, "policy": policy, "floor": DEFAULT_FLOOR,
                   "implicit": _weights(imp[0]) if imp else None, "explicit": _weights(exp[0]) if exp else None}
            if args.split == "validation":
                key["split"] = "validation"
            return _cached_hits(run / f"{tag}.npz", ks, key, compute)

        rows: dict = {}
        explicit = args.explicit or None
        specs = [(v, None, p) for v in args.variants.split(",") for p in policies]
        if explicit:
            specs += [(None, explicit, p) for p in policies]
            specs += [(v, explicit, p) for v in args.variants.split(",") for p in policies]
        for implicit, exp_name, policy in specs:
            name = " + ".join(n for n in (implicit, exp_name and f"{exp_name} followed topics") if n)
            name += f" ({policy})"
            hits = {k: [] for k in ks}
            max_hits = {k: [] for k in ks}
            for seed in seeds:
                got = served(implicit, exp_name, policy, seed)
                if got is None:
                    log(f"{dataset} {name} seed {seed}: a run is missing under {work / 'runs'}; skipped")
                    continue
                for k in ks:
                    hits[k].append(got[k])
                if implicit and not exp_name and args.split == "eval":
                    ranks = _load(work / "runs" / run_dir(implicit) / f"seed{seed}").ranks
                    for k in ks:
                        max_hits[k].append(ranks <= k)
                log(f"{dataset} {name} seed {seed}: served HR@{ks[0]} {np.mean(got[ks[0]]):.4f}")
            if not hits[ks[0]]:
                continue
            rows[name] = {"seeds": len(hits[ks[0]]), "served": hit_block(hits), "_hits": hits}
            if max_hits[ks[0]]:
                rows[name]["max"] = hit_block(max_hits)
        base = next((n for n in rows if n.startswith(f"{args.baseline} (")), None)
        for name, row in rows.items():
            if base and name != base:
                row["paired"] = {str(k): paired(row["_hits"][k], rows[base]["_hits"][k], lambda h: h.astype(float))
                                 for k in ks}
        for row in rows.values():
            del row["_hits"]
        report["datasets"][dataset] = {"corpus": len(corpus.ids), "baseline": base, "rows": rows}
        lines += [f"## {dataset}", "", "| model | seeds | " + " | ".join(
            f"HR@{k} SPEC §6 | served HR@{k} | paired vs {args.baseline}" for k in ks) + " |",
            "|---|---|" + "---|---|---|" * len(ks)]
        for name, row in rows.items():
            cells = []
            for k in ks:
                d = row.get("paired", {}).get(str(k))
                cells += [_cell(row["max"], k) if "max" in row else "-", _cell(row["served"], k),
                          f"{d['mean']:+.4f} [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]" if d else "-"]
            lines.append(f"| {name} | {row['seeds']} | " + " | ".join(cells) + " |")
        lines.append("")
    print("\n".join(lines))
    write_result(args.out, report)
    if args.docs:
        docs = pathlib.Path(args.docs)
        docs.parent.mkdir(parents=True, exist_ok=True)
        docs.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
