"""`mer embed-items`: item embeddings for the whole catalog, in batch.

A Beam pipeline: the item model version's catalog (`assets.extra/
catalog.tsv`, written by `mer export`) -> `RunInference` over the item-tower
SavedModel -> sharded TFRecords of (row, item id, topics, embedding) under
`<base>/embeddings/<retriever>/<version>/`. The same code runs locally
(default: `beam.run.LocalRunner`, one worker per core), Dataflow, Flink or Spark with
the usual pipeline options after `--`.

The model handler loads with `tf.saved_model.load` (Beam's stock TensorFlow
handler loads with Keras, which these signature-only SavedModels are not).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any, Iterable, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, PredictionResult, RunInference

from common import contract
from common.progress import Progress, report

log = logging.getLogger(__name__)
METRICS_NAMESPACE = "embed_items"  # the `items` counter; also the progress channel (`common.progress.report`)
CATALOG = "assets.extra/catalog.tsv"
SHARD_PREFIX = "part"
ROW, ITEM_ID, TOPICS, EMBEDDING = "row", "item_id", "topics", "embedding"


class SavedModelItemHandler(ModelHandler[str, PredictionResult, Any]):
    """RunInference handler: item ids -> `embeddings` of an item-tower SavedModel.

    Args:
      model_path: the SavedModel version directory (local or gs://).
      min_batch_size, max_batch_size: BatchElements bounds.
    """

    def __init__(self, model_path: str, min_batch_size: int = 256, max_batch_size: int = 4096):
        super().__init__()
        self._model_path = model_path
        self._batch = {"min_batch_size": min_batch_size, "max_batch_size": max_batch_size}

    def load_model(self):
        import tensorflow as tf

        return tf.saved_model.load(self._model_path).signatures[contract.SIGNATURE]

    def run_inference(self, batch: Sequence[str], model, inference_args=None) -> Iterable[PredictionResult]:
        import tensorflow as tf

        out = model(**{contract.ITEM_IDS: tf.constant(list(batch), tf.string)})[contract.EMBEDDINGS].numpy()
        return [PredictionResult(item, vector) for item, vector in zip(batch, out)]

    def batch_elements_kwargs(self):
        return dict(self._batch)

    def share_model_across_processes(self) -> bool:
        return False


def parse_catalog_line(line: str) -> dict:
    """`row \\t item_id \\t in_corpus \\t topics` -> dict."""
    row, item, in_corpus, topics = line.rstrip("\r\n").split("\t")
    return {ROW: int(row), ITEM_ID: item, "in_corpus": in_corpus == "1", TOPICS: [t for t in topics.split("|") if t]}


def catalog_path(item_version_dir: str) -> str:
    import tensorflow as tf

    path = contract.join(item_version_dir, CATALOG)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"{path}: no catalog; is {item_version_dir} an item model exported by `mer export`?")
    return path


def catalog_size(catalog: str, all_items: bool = False) -> int:
    """Items the pipeline embeds: the catalog's corpus rows (every row if `all_items`)."""
    import tensorflow as tf

    with tf.io.gfile.GFile(catalog) as handle:
        return sum(1 for line in handle if line.strip() and (all_items or parse_catalog_line(line)["in_corpus"]))


def encode_embedding(key: tuple, result: PredictionResult) -> bytes:
    import tensorflow as tf

    beam.metrics.Metrics.counter(METRICS_NAMESPACE, "items").inc()
    report(METRICS_NAMESPACE)
    row, topics = key
    feature = {
        ROW: tf.train.Feature(int64_list=tf.train.Int64List(value=[row])),
        ITEM_ID: tf.train.Feature(bytes_list=tf.train.BytesList(value=[result.example.encode()])),
        TOPICS: tf.train.Feature(bytes_list=tf.train.BytesList(value=[t.encode() for t in topics])),
        EMBEDDING: tf.train.Feature(float_list=tf.train.FloatList(value=np.asarray(result.inference, np.float32))),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def build_pipeline(p: beam.Pipeline, catalog: str, model_path: str, output_prefix: str, num_shards: int,
                   all_items: bool = False):
    """catalog -> (corpus filter) -> RunInference -> sharded TFRecords.
    Embeds the eval corpus (items in training events) unless `all_items`."""
    handler = KeyedModelHandler(SavedModelItemHandler(model_path))
    return (p
            | "Catalog" >> beam.io.ReadFromText(catalog)
            | "Parse" >> beam.Map(parse_catalog_line)
            | "Corpus" >> beam.Filter(lambda r: all_items or r["in_corpus"])
            | "Key" >> beam.Map(lambda r: ((r[ROW], tuple(r[TOPICS])), r[ITEM_ID]))
            | "Embed" >> RunInference(handler)
            | "Encode" >> beam.MapTuple(encode_embedding)
            | "Write" >> beam.io.WriteToTFRecord(output_prefix, file_name_suffix=".tfrecord", num_shards=num_shards))


def _corrupt_shard(files: list[str], spec: dict, err) -> str:
    """One line naming the shard that cannot be read (TensorFlow's message names none)."""
    import tensorflow as tf

    for path in files:
        try:
            for _ in tf.data.TFRecordDataset([path]).batch(65536).map(lambda x: tf.io.parse_example(x, spec)):
                pass
        except tf.errors.OpError as shard_err:
            return f"{path}: corrupt TFRecord shard ({shard_err.message.splitlines()[0]})"
    return f"{files[0]}...: corrupt TFRecord shards ({err.message.splitlines()[0]})"


def read_embeddings(directory: str) -> dict:
    """The shards of one embeddings directory, in catalog order.

    Returns: `{"item_ids": [N], "topics": [N] lists, "embeddings": [N, d] float32}`.

    Raises:
      FileNotFoundError: no shard.
      ValueError: a shard is corrupt or not an embeddings shard (names it).
    """
    import tensorflow as tf

    files = sorted(tf.io.gfile.glob(contract.join(directory, f"{SHARD_PREFIX}-*.tfrecord")))
    if not files:
        raise FileNotFoundError(f"{directory}: no {SHARD_PREFIX}-*.tfrecord shards (run `mer embed-items`)")
    spec = {ROW: tf.io.FixedLenFeature([], tf.int64), ITEM_ID: tf.io.FixedLenFeature([], tf.string),
            TOPICS: tf.io.RaggedFeature(tf.string), EMBEDDING: tf.io.RaggedFeature(tf.float32)}
    rows, ids, topics, vectors = [], [], [], []
    # (the writer never publishes an empty directory: see run_embed_items)
    try:
        for batch in tf.data.TFRecordDataset(files).batch(65536).map(lambda x: tf.io.parse_example(x, spec)):
            rows.append(batch[ROW].numpy())
            ids += [i.decode() for i in batch[ITEM_ID].numpy()]
            topics += [[t.decode() for t in row] for row in batch[TOPICS].to_list()]
            vectors.append(batch[EMBEDDING].to_tensor().numpy())
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as err:
        raise ValueError(_corrupt_shard(files, spec, err)) from None
    order = np.argsort(np.concatenate(rows), kind="stable")
    return {"item_ids": [ids[i] for i in order], "topics": [topics[i] for i in order],
            "embeddings": np.concatenate(vectors)[order].astype(np.float32)}


def run_embed_items(base: str, retriever: str = contract.IMPLICIT, version: int | None = None,
                    beam_args: list[str] | None = None, num_shards: int = 4, all_items: bool = False) -> dict:
    """Embeds the catalog of `<base>/item_<retriever>/<version>` (latest by
    default) into `<base>/embeddings/<retriever>/<version>/`, atomically.

    Returns: a summary (items, dimension, seconds, items/s, output directory).
    """
    import tensorflow as tf

    from beam.run import pipeline_options, run_pipeline

    if retriever not in contract.RETRIEVERS:
        raise ValueError(f"retriever={retriever!r}; allowed: {', '.join(contract.RETRIEVERS)}")
    model_base = contract.join(base, contract.ITEM_MODEL[retriever])
    version = version or contract.latest_model_version(base, contract.ITEM_MODEL[retriever])
    model_path = contract.join(model_base, str(version))
    catalog = catalog_path(model_path)
    final = contract.embeddings_dir(base, retriever, version)
    tmp = contract.join(base, contract.EMBEDDINGS_DIR, retriever, f".tmp-{version}-{uuid.uuid4().hex[:8]}")
    started = time.time()
    log.debug("embedding the catalog of %s with RunInference", model_path)
    with Progress(f"embed items {retriever} (RunInference)", catalog_size(catalog, all_items), "items", log,
                  tick=True, channel=METRICS_NAMESPACE) as bar:
        p = beam.Pipeline(options=pipeline_options(beam_args))
        build_pipeline(p, catalog, model_path, contract.join(tmp, SHARD_PREFIX), num_shards, all_items)
        result = run_pipeline(p, bar, METRICS_NAMESPACE, lambda name: name if name == "items" else None)
        seconds = time.time() - started
        counters = result.metrics().query(beam.metrics.MetricsFilter().with_name("items"))["counters"]
        items = int(sum(c.committed or 0 for c in counters))
        summary = {"model": model_path, "items": items, "all_items": all_items, "seconds": round(seconds, 2),
                   "items_per_second": round(items / max(seconds, 1e-9), 1), "output": final}
        if not items:
            tf.io.gfile.rmtree(tmp)
            raise ValueError(f"{catalog}: no item to embed (no corpus item; --all_items embeds every item)")
        with tf.io.gfile.GFile(contract.join(tmp, "embed.json"), "w") as handle:
            handle.write(json.dumps(summary, indent=2) + "\n")
        # A rerun of the same (immutable) model version replaces the old output
        # only once the new one is complete.
        old = f"{tmp}-old"
        if tf.io.gfile.exists(final):
            tf.io.gfile.rename(final, old)
        tf.io.gfile.rename(tmp, final)
        if tf.io.gfile.exists(old):
            tf.io.gfile.rmtree(old)
        bar.set(items, note=f"embeddings in {final}")  # the final line: items, seconds, items/s
    return summary


def main(argv: list[str] | None = None) -> int:
    """`mer embed-items --export_dir BASE [--retriever R] [-- beam options]`."""
    import argparse
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    beam_args: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, beam_args = argv[:cut], argv[cut + 1:]
    p = argparse.ArgumentParser(prog="mer embed-items", description=__doc__.splitlines()[0],
                                epilog="Arguments after `--` are Beam pipeline options (e.g. --runner=DataflowRunner).")
    p.add_argument("--export_dir", required=True, help="the `mer export` base directory")
    p.add_argument("--retriever", default="all", choices=("all",) + contract.RETRIEVERS)
    p.add_argument("--version", type=int, default=None, help="default: the latest exported item model version")
    p.add_argument("--all_items", action="store_true", help="embed every catalog item, not only the corpus")
    p.add_argument("--num_shards", type=int, default=4)
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    from common.logs import setup_logging

    setup_logging(args.verbose)
    import tensorflow as tf

    retrievers = [r for r in contract.RETRIEVERS if args.retriever in ("all", r)
                  and (args.retriever == r or tf.io.gfile.isdir(contract.join(args.export_dir, contract.ITEM_MODEL[r])))]
    try:
        results = [run_embed_items(args.export_dir, r, args.version, beam_args, args.num_shards, args.all_items)
                   for r in retrievers]
    except (FileNotFoundError, ValueError) as err:
        log.error("mer embed-items: %s", err)
        return 2
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
