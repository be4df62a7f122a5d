"""Where a model wins and loses against another: paired HR@K per segment.

  python -m benchmarks.segments [--work runs/final]
      [--datasets ml-100k,movielens-small] [--rows dcm,dcm:score]
      [--baseline single] [--seeds 0,1,2] [--k 50]
      [--out benchmarks/results/segments.json] [--docs docs/results/segments.md]

Issue 14 asks, where the multi-embedding model does not beat one
embedding, for the per-segment analysis of why. This benchmark trains and
scores nothing: it reads the per-record hits that `benchmarks/quality.py`
(`ranks.npz`, SPEC §6 exact max-over-embeddings) and `benchmarks/served.py`
(`served-<policy>.npz`, through the serving merge) cached under `--work`,
and the eval records of the prepared data, and splits the records by what
a multi-interest model is meant to help with:

- `history topics`: the entropy of the genre/topic distribution over the
  user's history items (positive actions, items of the corpus), in terciles (focused / mixed / diverse):
  several interests pay off, if anywhere, for diverse users;
- `target topic`: whether the target carries the user's most frequent
  history topic (`top`), only a less frequent history topic (`minor`) or
  none of them (`new`): a minor interest is what one embedding misses;
- `target popularity`: the target's training count, in corpus terciles of
  eval targets (head / torso / tail);
- `history length`: SPEC §6's buckets.

A row `name` reads the SPEC §6 ranks of run `name` (`ease`, `popularity`,
`co-occurrence`: the references, one deterministic run); `name:policy` reads its
served hits for `policy` (`round_robin`, `score`). Cells: HR@K averaged
over seeds, and the paired difference against `--baseline` per eval record
(seed-averaged; mean and 95% bootstrap CI over the segment's records).
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np

import trainer  # noqa: F401  (legacy-Keras switch before TensorFlow loads)
from benchmarks import write_result

SEGMENTERS = ("history topics", "target topic", "target popularity", "history length")


def topic_entropy(topic_sets: list) -> float:
    """Entropy (nats) of the topic distribution over items, each item's
    unit mass split evenly over its topics; 0 without topics."""
    counts: dict = {}
    for topics in topic_sets:
        for t in topics:
            counts[t] = counts.get(t, 0.0) + 1.0 / len(topics)
    if not counts:
        return 0.0
    p = np.asarray(list(counts.values()))
    p = p / p.sum()
    return float(-(p * np.log(p)).sum())


def target_topic_class(history_topic_sets: list, target_topics: frozenset) -> str:
    """`top` (target carries the user's most frequent history topic, ties
    included), `minor` (only a less frequent one), `new` (none)."""
    counts: dict = {}
    for topics in history_topic_sets:
        for t in topics:
            counts[t] = counts.get(t, 0) + 1
    shared = [t for t in target_topics if t in counts]
    if not shared:
        return "new"
    return "top" if max(counts[t] for t in shared) == max(counts.values()) else "minor"


def terciles(values: np.ndarray, names: tuple[str, str, str]) -> np.ndarray:
    """Each value's tercile name (cut at the 1/3 and 2/3 quantiles)."""
    lo, hi = np.quantile(values, [1 / 3, 2 / 3])
    return np.where(values <= lo, names[0], np.where(values <= hi, names[1], names[2])).astype(object)


def record_segments(data_dir: str, history_length: int) -> dict[str, np.ndarray]:
    """Segmenter -> `[records]` segment names, for the eval records in the
    order every cached run scored them (`iter_records`, file order)."""
    from trainer import features
    from trainer.evaluate import eval_pattern
    from trainer.evaluation import history_segment, iter_records, load_corpus

    corpus = load_corpus(data_dir)
    pattern = eval_pattern(data_dir)
    entropy, target_class, popularity, length = [], [], [], []
    empty: frozenset = frozenset()
    for batch in iter_records(pattern, 512, history_length):
        history = batch[features.HISTORY_ITEM_IDS]
        negative = batch[features.HISTORY_NEGATIVE]
        length.append(history_segment(history))
        for ids, neg, target in zip(history, negative, batch[features.TARGET_ITEM_ID]):
            cols = corpus.columns(ids[(ids != b"") & (neg == 0)])
            sets = [corpus.topics[c] for c in cols if c >= 0 and corpus.topics[c]]
            entropy.append(topic_entropy(sets))
            col = corpus.index.get(target, -1)
            target_class.append(target_topic_class(sets, corpus.topics[col] if col >= 0 else empty))
            popularity.append(corpus.popularity[col] if col >= 0 else 0.0)
    return {
        "history topics": terciles(np.asarray(entropy), ("focused", "mixed", "diverse")),
        "target topic": np.asarray(target_class, object),
        "target popularity": terciles(np.asarray(popularity), ("tail", "torso", "head")),
        "history length": np.concatenate(length).astype(object),
    }


# References `benchmarks/quality.py` scores once (deterministic), under seed 0.
DETERMINISTIC = ("popularity", "co-occurrence", "ease")


def load_hits(runs_dir: pathlib.Path, row: str, seeds: list[int], k: int) -> np.ndarray | None:
    """`[seeds, records]` bool hits of row `name` (SPEC §6 ranks) or
    `name:policy` (served); None when a seed's file is missing. A
    deterministic reference (`DETERMINISTIC`) reads its one run for every seed."""
    from benchmarks.quality import run_dir

    name, _, policy = row.partition(":")
    out = []
    for seed in seeds:
        path = runs_dir / run_dir(name) / f"seed{0 if name in DETERMINISTIC else seed}"
        file = path / (f"served-{policy}.npz" if policy else "ranks.npz")
        if not file.exists():
            return None
        with np.load(file) as cached:
            if policy and f"k{k}" not in cached.files:
                return None
            out.append(cached[f"k{k}"] if policy else cached["ranks"] <= k)
    return np.stack(out)


def segment_table(hits: dict[str, np.ndarray], baseline: str, segments: np.ndarray) -> list[dict]:
    """One dict per segment: records, each row's HR and its paired
    difference against `baseline` (mean, 95% CI)."""
    from trainer.evaluation import bootstrap_ci

    averaged = {row: h.astype(np.float64).mean(axis=0) for row, h in hits.items()}
    table = []
    for seg in sorted(set(segments.tolist()), key=_order):
        sel = segments == seg
        cell = {"segment": seg, "records": int(sel.sum()), "hr": {}, "paired": {}}
        for row, values in averaged.items():
            cell["hr"][row] = float(values[sel].mean())
            if row != baseline:
                diff = values[sel] - averaged[baseline][sel]
                cell["paired"][row] = {"mean": float(diff.mean()), "ci95": list(bootstrap_ci(diff))}
        table.append(cell)
    return table


_ORDER = ("focused", "mixed", "diverse", "top", "minor", "new", "head", "torso", "tail",
          "1-4", "5-19", "20-49", "50+")


def _order(name: str) -> tuple:
    return (_ORDER.index(name), "") if name in _ORDER else (len(_ORDER), name)


def markdown(report: dict) -> str:
    k = report["k"]
    lines = ["# Per-segment analysis (generated by `benchmarks/segments.py`)", "",
             f"Command: `{report['command']}`; seeds {report['seeds']}.", "",
             f"Cells: HR@{k} averaged over seeds; paired: the row minus `{report['baseline']}` per eval record "
             "(seed-averaged hits), mean [95% bootstrap CI over the segment's records]. `name` = SPEC §6 "
             "(exact max over the user's embeddings), `name:policy` = through the serving merge.", ""]
    for dataset, entry in report["datasets"].items():
        rows = entry["rows"]
        others = [r for r in rows if r != report["baseline"]]
        lines += [f"## {dataset}", "", f"Eval records: {entry['records']}. Missing rows: "
                  f"{', '.join(entry['missing']) or 'none'}.", ""]
        for segmenter, table in entry["tables"].items():
            head = ["segment", "records"] + [f"{r} HR@{k}" for r in rows] + [f"{r} paired" for r in others]
            lines += [f"### {segmenter}", "", "| " + " | ".join(head) + " |",
                      "|" + "---|" * len(head)]
            for cell in table:
                values = [f"{cell['hr'][r]:.4f}" for r in rows]
                paired = [f"{p['mean']:+.4f} [{p['ci95'][0]:+.4f}, {p['ci95'][1]:+.4f}]"
                          for p in (cell["paired"][r] for r in others)]
                lines.append("| " + " | ".join([cell["segment"], str(cell["records"])] + values + paired) + " |")
            lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from benchmarks.quality import DATASETS, log
    from trainer.config import load_config

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", default="runs/final")
    parser.add_argument("--datasets", default="ml-100k,movielens-small")
    parser.add_argument("--rows", default="dcm,dcm:score,dcm:round_robin",
                        help="runs compared with --baseline: `name` (SPEC §6) or `name:policy` (served)")
    parser.add_argument("--baseline", default="single")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--out", default="benchmarks/results/segments.json")
    parser.add_argument("--docs", default="docs/results/segments.md")
    args = parser.parse_args(argv)
    from common.logs import setup_logging

    setup_logging()  # before TensorFlow loads: its C++ noise and Beam's INFO lines stay hidden
    work, seeds = pathlib.Path(args.work), [int(s) for s in args.seeds.split(",")]
    report = {"command": "python -m benchmarks.segments " + " ".join(argv if argv is not None else sys.argv[1:]),
              "seeds": seeds, "k": args.k, "baseline": args.baseline, "datasets": {}}
    for dataset in args.datasets.split(","):
        data_dir = str(work / dataset / "prepared-source")
        if not pathlib.Path(data_dir, "manifest.json").exists():
            raise SystemExit(f"{data_dir}: no prepared data (run benchmarks/quality.py on {dataset} first)")
        runs_dir = work / dataset / "runs"
        hits, missing = {}, []
        for row in [args.baseline] + [r for r in args.rows.split(",") if r and r != args.baseline]:
            found = load_hits(runs_dir, row, seeds, args.k)
            if found is None:
                missing.append(row)
            else:
                hits[row] = found
        if args.baseline not in hits:
            raise SystemExit(f"{runs_dir}: no cached `{args.baseline}` runs for seeds {seeds}")
        log(f"{dataset}: segmenting the eval records")
        segments = record_segments(data_dir, load_config(DATASETS[dataset]).data.history_length)
        records = len(segments["history length"])
        for row, h in hits.items():
            if h.shape[1] != records:
                raise SystemExit(f"{dataset} {row}: {h.shape[1]} cached hits, {records} eval records")
        report["datasets"][dataset] = {
            "records": records, "rows": list(hits), "missing": missing,
            "tables": {name: segment_table(hits, args.baseline, segments[name]) for name in SEGMENTERS}}
    write_result(args.out, report)
    docs = markdown(report)
    pathlib.Path(args.docs).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.docs).write_text(docs + "\n")
    print(docs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
