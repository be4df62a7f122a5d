"""`mer build-index`: a ScaNN index of one retriever's item embeddings.

Reads `<base>/embeddings/<retriever>/<version>/` (`mer embed-items`),
builds the index (`common/item_index.py`; config by corpus size unless
overridden), measures recall@k against exact search over >= 1,000 real user
embeddings (every unmasked embedding of each user, from the user-tower
SavedModel run on eval records of `--data_dir`, else on the model's warmup
requests, which are real training records), and saves it atomically to
`<base>/index/<retriever>/<version>/` with the recall report.
"""

from __future__ import annotations

import json
import logging
import time

import numpy as np

from common import contract
from common.progress import Progress

log = logging.getLogger(__name__)


def _request_batches(base: str, retriever: str, version: int, data_dir: str | None, num_explicit: int):
    """Yields `(inputs, source)` request batches for the user tower."""
    import tensorflow as tf

    if data_dir:
        from export.exporter import user_request_inputs
        from trainer import features
        from trainer.data import build_dataset

        split = features.EVAL_EXPLICIT if retriever == contract.EXPLICIT else features.EVAL_IMPLICIT
        for batch in build_dataset(f"{data_dir.rstrip('/')}/{split}-*{features.TFRECORD_SUFFIX}", 256, 50,
                                   shuffle=False, drop_remainder=False):
            records = {k: v.numpy() for k, v in batch.items()}
            yield user_request_inputs(records, retriever == contract.EXPLICIT, num_explicit), f"eval records of {data_dir}"
        return
    from export.serving_files import read_warmup

    user_dir = contract.join(base, contract.USER_MODEL[retriever], str(version))
    for entry in read_warmup(contract.join(user_dir, contract.WARMUP_FILE)):
        inputs = {k: tf.make_ndarray(v) for k, v in entry.predict_log.request.inputs.items()}
        yield inputs, f"warmup requests of {user_dir} (training records)"


def user_query_embeddings(base: str, retriever: str, version: int, data_dir: str | None = None,
                          wanted: int = 1000, num_explicit: int = 5) -> tuple[np.ndarray, str]:
    """Unmasked user embeddings `[Q, d]` from the exported user tower, until
    at least `wanted` (all K of each user); and where the users came from."""
    import tensorflow as tf

    user_dir = contract.join(base, contract.USER_MODEL[retriever], str(version))
    serve = tf.saved_model.load(user_dir).signatures[contract.SIGNATURE]
    found, count, source = [], 0, ""
    for inputs, source in _request_batches(base, retriever, version, data_dir, num_explicit):
        out = serve(**{k: tf.constant(v) for k, v in inputs.items()})
        vectors = out[contract.EMBEDDINGS].numpy()[out[contract.MASK].numpy()]
        found.append(vectors)
        count += len(vectors)
        if count >= wanted:
            break
    return (np.concatenate(found) if found else np.zeros((0, 0), np.float32)), source


def run_build_index(base: str, retriever: str = contract.IMPLICIT, version: int | None = None, cfg=None,
                    data_dir: str | None = None, recall_k: int = 100, queries: int = 1000,
                    overwrite: bool = False) -> dict:
    """Builds, measures and saves the index; returns the build summary.

    Raises:
      FileExistsError: the index of that version exists and not `overwrite`.
    """
    import tensorflow as tf

    from beam.embed_items import read_embeddings
    from common.item_index import build_index, recall_at_k, retriever_config, save

    if retriever not in contract.RETRIEVERS:
        raise ValueError(f"retriever={retriever!r}; allowed: {', '.join(contract.RETRIEVERS)}")
    version = version or contract.latest_model_version(base, contract.ITEM_MODEL[retriever])
    # One bar over the whole build (its phases as the note); the final line is the build's own.
    with Progress(f"index {retriever} (ScaNN)", logger=log, tick=True) as bar:
        bar.note = "reading the item embeddings"
        items = read_embeddings(contract.embeddings_dir(base, retriever, version))
        bar.note = "user embeddings for the recall report"
        users, source = user_query_embeddings(base, retriever, version, data_dir, queries)
        cfg = retriever_config(retriever, cfg)
        bar.note = f"building over {len(items['item_ids']):,} items"
        started = time.time()
        index = build_index(items["embeddings"], items["item_ids"], items["topics"], cfg)
        build_seconds = time.time() - started
        if len(users) < queries:
            log.warning("recall measured on %d user embeddings (fewer than %d available from %s)", len(users),
                        queries, source)
        recall = None
        if len(users):
            bar.note = f"recall@{recall_k} over {len(users):,} user embeddings"
            recall = recall_at_k(index, items["embeddings"], users, min(recall_k, len(items["item_ids"])))
            recall["query_source"] = source
            if "topic_indexes" in recall:
                log.info("%d topic indexes: recall@%d %.4f (worst topic %.4f)", len(index.topic_indexes), recall_k,
                         recall["topic_indexes"]["recall"], recall["topic_indexes"]["recall_min"])
        bar.note = "saving"
        target = contract.index_dir(base, retriever, version)
        if overwrite and tf.io.gfile.exists(target):
            tf.io.gfile.rmtree(target)
        save(index, target, recall)
        bar.close(quiet=True)
    summary = {"index": target, "items": len(items["item_ids"]), "config": index.config.__dict__,
               "topic_indexes": {t: len(i.rows) for t, i in index.topic_indexes.items()},
               "build_seconds": round(build_seconds, 2), "recall": recall}
    if recall is None:
        log.warning("index of %d items (%s) built in %.1f s -> %s; no user embedding for a recall report (%s)",
                    summary["items"], index.config.kind, build_seconds, target, source or "no requests")
    else:
        log.info("index of %d items (%s) built in %.1f s; recall@%d %.4f over %d user embeddings -> %s",
                 summary["items"], index.config.kind, build_seconds, recall["k"], recall["recall"], recall["queries"],
                 target)
    return summary


def main(argv: list[str] | None = None) -> int:
    import argparse
    import dataclasses

    p = argparse.ArgumentParser(prog="mer build-index", description=__doc__.splitlines()[0])
    p.add_argument("--export_dir", required=True, help="the `mer export` base directory")
    p.add_argument("--retriever", default="all", choices=("all",) + contract.RETRIEVERS)
    p.add_argument("--version", type=int, default=None, help="default: the latest exported item model version")
    p.add_argument("--data_dir", default=None, help="prepared data whose eval records give the recall queries")
    p.add_argument("--recall_k", type=int, default=100)
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="IndexConfig override, e.g. kind=tree_ah, leaves_to_search=40 (repeatable)")
    p.add_argument("--overwrite", action="store_true", help="replace an index of the same version")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    from common.logs import setup_logging

    setup_logging(args.verbose)
    from common.item_index import IndexConfig

    fields = {f.name: f for f in dataclasses.fields(IndexConfig)}
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            if key not in fields:
                raise ValueError(f"unknown field; allowed: {', '.join(fields)}")
            overrides[key] = value if key == "kind" else (float(value) if key == "anisotropic_threshold" else int(value))
        except ValueError as err:
            log.error("mer build-index: --set %s: %s", item, err)
            return 2
    retrievers = contract.RETRIEVERS if args.retriever == "all" else (args.retriever,)
    results = []
    try:
        for retriever in retrievers:
            if retriever != args.retriever and not _exported(args.export_dir, retriever):
                continue
            results.append(run_build_index(args.export_dir, retriever, args.version, IndexConfig(**overrides),
                                           args.data_dir, args.recall_k, overwrite=args.overwrite))
    except (FileNotFoundError, FileExistsError, ValueError, ImportError) as err:
        log.error("mer build-index: %s", err)
        return 2
    print(json.dumps([{k: r[k] for k in ("index", "items", "build_seconds")}
                      | {"recall": (r["recall"] or {}).get("recall")} for r in results], indent=2))
    return 0


def _exported(base: str, retriever: str) -> bool:
    import tensorflow as tf

    return tf.io.gfile.isdir(contract.join(base, contract.ITEM_MODEL[retriever]))


if __name__ == "__main__":
    raise SystemExit(main())
