"""`mer evaluate` / `python -m trainer.evaluate`: SPEC §6 on a trained model.

  mer evaluate --model_dir runs/model [--data_dir <prepared>] [--ks 20,50,100,200]
               [--explicit_model_dir runs/cr] [--served]

Prints a table and writes JSON (`<model_dir>/evaluation.json` by default):
exact HR@K with 95% bootstrap CIs, filtered HR for CR, per-segment HR
(synthetic: core/casual/new from the world's ground truth; otherwise history
length buckets), interest coverage per tier and topic diversity of the top-K,
and, with `--explicit_model_dir`, the overlap between the implicit top-K and
the explicit (CR, followed topics) candidate set. `--served` adds "served
HR@K": the target among the K candidates of the serving merge (importance
budgets, round-robin, de-duplication; `common/merging.py`) instead of SPEC
§6's max over embeddings.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

import trainer  # noqa: F401  (legacy-Keras switch before TensorFlow loads)
from trainer import evaluation, features
from trainer.model_io import load_trained, write_json


def default_ks(corpus_size: int) -> tuple[int, ...]:
    """SPEC §6.5: {20, 50, 100, 200} for MovieLens-sized corpora, else {100, 1000}."""
    return evaluation.MOVIELENS_KS if corpus_size <= 20_000 else evaluation.LARGE_CORPUS_KS


def truth_pattern(data_dir: str) -> str | None:
    import tensorflow as tf

    pattern = f"{data_dir.rstrip('/')}/raw/truth-*.jsonl"
    return pattern if tf.io.gfile.glob(pattern) else None


def followed(k_ex: int):
    return lambda batch: batch[features.FOLLOWED_TOPICS][:, :k_ex] if batch[features.FOLLOWED_TOPICS].shape[1] \
        else np.full((len(batch[features.USER_ID]), 1), b"", object)


def eval_pattern(data_dir: str, split: str = features.EVAL_IMPLICIT) -> str:
    return f"{data_dir.rstrip('/')}/{split}-*{features.TFRECORD_SUFFIX}"


def evaluate_model(model, cfg, data_dir: str, corpus: evaluation.Corpus, truth: dict | None,
                   coverage_k: int = 50, max_records: int = 0,
                   keep_candidates: int = 0) -> evaluation.RecordResults:
    """Per-record results of a trained model on the eval split."""
    cr = cfg.model.kind == "cr"
    split = features.EVAL_EXPLICIT if cr else features.EVAL_IMPLICIT
    records = evaluation.iter_records(eval_pattern(data_dir, split), 256, cfg.data.history_length,
                                      limit=max_records)
    return evaluation.evaluate_scorer(evaluation.ModelScorer(model, corpus), corpus, records, filtered=cr,
                                      truth=truth, coverage_k=coverage_k, keep_candidates=keep_candidates)


def served_hits(model, cfg, data_dir: str, corpus: evaluation.Corpus, ks, max_records: int = 0,
                policy: str = "round_robin") -> dict:
    """K -> `[records]` bool: target among the K candidates the serving merge returns."""
    records = evaluation.iter_records(eval_pattern(data_dir), 256, cfg.data.history_length, limit=max_records)
    return evaluation.served_hits(evaluation.ModelScorer(model, corpus), corpus, records, ks, policy=policy)


def overlap(implicit_model, cr_model, cr_cfg, data_dir, corpus, k: int, max_records: int = 0) -> float:
    """Share of the explicit candidates also in the implicit top-k (paper §3.4)."""
    pattern = eval_pattern(data_dir)
    implicit = evaluation.ModelScorer(implicit_model, corpus)
    explicit = evaluation.ModelScorer(cr_model, corpus, conditions=followed(cr_cfg.model.num_explicit))
    imp, exp = [], []
    for batch in evaluation.iter_records(pattern, 256, cr_cfg.data.history_length, limit=max_records):
        history = corpus.columns(batch[features.HISTORY_ITEM_IDS])
        _, _, best = evaluation.scan_corpus(evaluation.column_scores(implicit, batch), len(corpus.ids),
                                            np.full(len(history), -1), history, k)
        imp.append(best)
        exp.extend(evaluation.explicit_candidates(explicit, corpus, batch, k))
    return evaluation.candidate_overlap(np.concatenate(imp), exp)


def print_table(name: str, summary: dict) -> None:
    ks = list(summary["hr"])
    print(f"{name}: {summary['records']} records, {summary['misses_outside_corpus']} targets outside the corpus")
    print("| metric | " + " | ".join(f"@{k}" for k in ks) + " |")
    print("|---|" + "---|" * len(ks))
    blocks = [("HR", summary["hr"])] + ([("filtered HR", summary["filtered_hr"])] if "filtered_hr" in summary else [])
    blocks += [("served HR", summary["served_hr"])] if "served_hr" in summary else []
    blocks += [(f"HR {seg} (n={v['records']})", v["hr"]) for seg, v in summary["segments"].items()]
    for label, block in blocks:
        cells = [f"{block[k]['mean']:.4f} [{block[k]['ci95'][0]:.4f}, {block[k]['ci95'][1]:.4f}]" for k in ks]
        print(f"| {label} | " + " | ".join(cells) + " |")
    for tier, value in (summary.get("coverage") or {}).items():
        print(f"coverage {tier} (users={value['users']}): {value['mean']:.4f} "
              f"[{value['ci95'][0]:.4f}, {value['ci95'][1]:.4f}]")
    if "topic_diversity" in summary:
        print(f"topic diversity (distinct topics in top-{summary['coverage_k']}): {summary['topic_diversity']:.2f}")
    if "overlap" in summary:
        print(f"implicit/explicit candidate overlap @{summary['overlap_k']}: {summary['overlap']:.4f}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mer evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--model_dir", required=True, help="a `mer train` output directory")
    p.add_argument("--data_dir", default=None, help="prepared data; default: the one it was trained on")
    p.add_argument("--ks", default="", help="comma-separated K values; default by corpus size (SPEC §6.5)")
    p.add_argument("--truth", default=None, help="synthetic ground truth glob; default <data_dir>/raw/truth-*")
    p.add_argument("--coverage_k", type=int, default=50, help="top-K list for coverage and diversity")
    p.add_argument("--explicit_model_dir", default=None, help="a CR model: report candidate overlap")
    p.add_argument("--overlap_k", type=int, default=50)
    p.add_argument("--served", action="store_true",
                   help="also report HR under the serving merge (implicit and single models)")
    p.add_argument("--max_records", type=int, default=0, help="0 = all eval records")
    p.add_argument("--bootstrap_seed", type=int, default=0)
    p.add_argument("--output", default=None, help="JSON path; default <model_dir>/evaluation.json")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="also show the logs of TensorFlow and other libraries (hidden by default)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from common.logs import setup_logging

    setup_logging(args.verbose)  # before TensorFlow loads: its native start-up lines stay hidden
    try:
        cfg, model, summary = load_trained(args.model_dir, args.data_dir)
        data_dir = args.data_dir or summary["data_dir"]
        corpus = evaluation.load_corpus(data_dir)
        ks = tuple(int(k) for k in args.ks.split(",") if k) if args.ks else default_ks(len(corpus.ids))
        pattern = args.truth or truth_pattern(data_dir)
        truth = evaluation.load_truth(pattern) if pattern else None
        if args.served and cfg.model.kind == "cr":
            raise ValueError("--served: implicit or single-embedding models only; CR's served candidates "
                             "(equal budgets, topic post-filter) are measured by --explicit_model_dir")
        results = evaluate_model(model, cfg, data_dir, corpus, truth, args.coverage_k, args.max_records)
        report = evaluation.summarize([results], ks, args.bootstrap_seed)
        if args.served:
            hits = served_hits(model, cfg, data_dir, corpus, ks, args.max_records)
            report["served_hr"] = evaluation.hit_block({k: [v] for k, v in hits.items()}, args.bootstrap_seed)
        report.update({"model_dir": args.model_dir, "kind": cfg.model.kind, "data_dir": data_dir,
                       "corpus": len(corpus.ids), "coverage_k": args.coverage_k})
        if args.explicit_model_dir:
            cr_cfg, cr_model, _ = load_trained(args.explicit_model_dir, data_dir)
            if cr_cfg.model.kind != "cr" or cfg.model.kind == "cr":
                raise ValueError(f"--explicit_model_dir must be a CR model and --model_dir an implicit one "
                                 f"(got {cr_cfg.model.kind!r} and {cfg.model.kind!r})")
            report["overlap"] = overlap(model, cr_model, cr_cfg, data_dir, corpus, args.overlap_k,
                                        args.max_records)
            report["overlap_k"] = args.overlap_k
    except (ValueError, FileNotFoundError) as err:
        print(f"mer evaluate: error: {err}", file=sys.stderr)
        return 2
    print_table(f"{cfg.model.kind} on {data_dir}", report)
    write_json(args.output or f"{args.model_dir.rstrip('/')}/evaluation.json", report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
