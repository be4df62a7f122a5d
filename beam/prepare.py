"""The prepare pipeline: raw logs -> TFRecords, item table, vocabularies, manifest.

Stages (all Beam; no tensorflow-transform):
  1. read + validate events/items/follows (bad rows -> dead letter with
     file, line, reason);
  2. items de-duplicated by id; events whose item is unknown -> dead letter;
  3. events grouped into user shards, stably sorted, repeated (user, item)
     pairs -> dead letter (`duplicate_user_item`);
  4. cutoff T = exact quantile of de-duplicated timestamps (or a given T;
     none for the `per_user` split: each user's last events are eval);
  5. per user: histories, implicit/explicit train and eval examples, written
     as deterministic shards;
  6. item train counts (CombinePerKey), item table, vocabularies and corpus
     (keyed combiners, `beam/tables.py`), dead letters and a manifest whose
     balance says rows in = kept + dead.

Beam counters (namespace `prepare`) show progress while it runs: rows read
per input kind, dead letters per kind and reason, examples written per
output; when it ends they equal the manifest's counts.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import itertools
import json

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems

from beam import mappers, movielens
from beam.combiners import SumDict
from beam.readers import DEAD, METRICS_NAMESPACE, STATS, ReadRecords, check_columns, expand_files, read_records
from beam.records import Event, Follow, Item, dead_letter, pack, pack_many, unpack, unpack_many
from beam.shard_writer import TFRecordShard, shard_path, write_text
from beam.tables import build_tables
from beam.user_records import build_user_records, order_and_dedup, stable_shard
from trainer import features
from trainer.config import DataConfig, MerConfig, config_to_dict

TIMESTAMPS = "timestamps"
TRAIN_COUNTS = "train_counts"


def _dead_from_record(kind: str, paths: list[str], record, reason: str, detail: str) -> dict:
    return dead_letter(
        kind, paths[record.file_index], record.line, reason, detail, json.dumps(record._asdict())
    )


class FirstItem(beam.DoFn):
    """Keeps the first row of each item id (by file position); the rest are dead."""

    def __init__(self, paths: list[str]):
        self._paths = paths

    def process(self, element):
        item_id, packed = element
        rows = sorted((Item(*unpack(r)) for r in packed), key=lambda r: (r.file_index, r.line))
        yield rows[0]
        for row in rows[1:]:
            first = rows[0]
            yield beam.pvalue.TaggedOutput(
                DEAD,
                _dead_from_record(
                    "items", self._paths, row, "duplicate_item",
                    f"item_id {item_id!r} first defined at {self._paths[first.file_index]}:{first.line}",
                ),
            )


class ShardUserRecords(ReadRecords):
    """Reads events and follows; keys both by user shard in ONE PCollection.

    Events whose item is not in the item table go to the dead letter. Records
    cross the shuffle as `(shard, bytes)`, up to `BATCH` records of one file
    and shard packed per value (`beam.records.pack_many`): the shuffle then
    holds thousands of values, not one per event.

    Why one producer instead of `CoGroupByKey`: on the multi-process
    DirectRunner (Beam 2.77) a Flatten of two PCollections into a
    GroupByKey lost 0.7-30% of 10M events, nondeterministically (measured;
    a plain GroupByKey of one producer lost none), and the manifest balance
    caught it. A single producer feeding a GroupByKey is also what every
    runner handles best.
    """

    BATCH = 4096  # records per shuffled value
    MAX_BUFFERED = 16 * BATCH  # records held over all shards: with many shards, flush all

    def __init__(self, specs, paths: dict[str, list[str]], num_shards: int):
        super().__init__(specs)
        self._paths = paths
        self._num_shards = num_shards
        self._batches: dict[int, list] = {}
        self._buffered = 0

    def process(self, element, *side_inputs):
        self._batches, self._buffered = {}, 0  # one file per element: nothing carries over (or survives a retry)
        yield from super().process(element, *side_inputs)
        yield from self._flush()

    def _flush(self):
        for shard in sorted(self._batches):
            yield shard, pack_many(self._batches[shard])
        self._batches, self._buffered = {}, 0

    def route(self, kind, record, items):
        if kind == "events" and record.item_id not in items:
            yield beam.pvalue.TaggedOutput(
                DEAD,
                _dead_from_record("events", self._paths["events"], record, "unknown_item",
                                  f"item_id {record.item_id!r} is not in the item table"),
            )
            return
        shard = stable_shard(record.user_id, self._num_shards)
        batch = self._batches.setdefault(shard, [])
        batch.append((kind, tuple(record)))
        self._buffered += 1
        if len(batch) >= self.BATCH:
            self._buffered -= len(batch)
            yield shard, pack_many(self._batches.pop(shard))
        elif self._buffered >= self.MAX_BUFFERED:
            yield from self._flush()


class DedupShard(beam.DoFn):
    """Per user shard: SPEC §6.1 ordering and (user, item) de-duplication.

    Emits one element per shard, `(shard, pack_many([(user, [tuple(event),
    ...], follows), ...]))` sorted by user (the shard's data waits in the
    runner until the cutoff is known: packed it is about half the bytes of
    pickled `Event`s), its timestamps (for the quantile) and dead letters.
    """

    def __init__(self, event_paths: list[str], follow_paths: list[str]):
        self._event_paths = event_paths
        self._follow_paths = follow_paths

    def process(self, element):
        shard, records = element
        by_user: dict[str, list] = collections.defaultdict(list)
        follows = []
        for kind, fields in itertools.chain.from_iterable(map(unpack_many, records)):
            if kind == "events":
                event = Event(*fields)
                by_user[event.user_id].append(event)
            else:
                follows.append(Follow(*fields))
        follows_by_user: dict[str, list] = collections.defaultdict(list)
        for follow in sorted(follows, key=lambda f: (f.file_index, f.line)):
            topics = follows_by_user[follow.user_id]
            if follow.topic in topics:
                yield beam.pvalue.TaggedOutput(
                    DEAD,
                    _dead_from_record(
                        "follows", self._follow_paths, follow, "duplicate_follow",
                        f"user {follow.user_id!r} already follows {follow.topic!r}",
                    ),
                )
            else:
                topics.append(follow.topic)
        yield beam.pvalue.TaggedOutput(
            STATS, ("follows_kept", sum(len(v) for v in follows_by_user.values()))
        )
        users = []
        stamps = []
        for user_id in sorted(set(by_user) | set(follows_by_user)):
            kept, dups = order_and_dedup(by_user.get(user_id, ()))
            for dup in dups:
                yield beam.pvalue.TaggedOutput(
                    DEAD,
                    _dead_from_record(
                        "events", self._event_paths, dup, "duplicate_user_item",
                        f"(user {user_id!r}, item {dup.item_id!r}) seen earlier; first kept",
                    ),
                )
            stamps.extend(e.timestamp for e in kept)
            users.append((user_id, [tuple(e) for e in kept], follows_by_user.get(user_id, [])))
        yield beam.pvalue.TaggedOutput(TIMESTAMPS, np.asarray(stamps, dtype=np.int64))
        yield beam.pvalue.TaggedOutput(STATS, ("events_kept", len(stamps)))
        yield beam.pvalue.TaggedOutput(STATS, ("users", len(users)))
        yield shard, pack_many(users)


class QuantileFn(beam.CombineFn):
    """Exact `numpy.quantile(..., method='linear')` over all timestamps.

    The accumulator is a list of int64 arrays (8 bytes per event), merged by
    concatenation; exactness matters because the split defines the benchmark.
    """

    def __init__(self, q: float):
        self._q = q

    def create_accumulator(self):
        return []

    def add_input(self, acc, arr):
        acc.append(arr)
        return acc

    def merge_accumulators(self, accs):
        return [a for acc in accs for a in acc]

    def extract_output(self, acc):
        values = np.concatenate(acc) if acc else np.zeros(0, np.int64)
        if values.size == 0:
            return None
        return float(np.quantile(values, self._q))


class WriteExampleShard(beam.DoFn):
    """Builds every record of the users in one shard and writes the shard files.

    Each shard written adds its records to the Beam counter `examples/<output>`.
    """

    def __init__(self, output_dir: str, num_shards: int, opts: DataConfig):
        self._output_dir = output_dir
        self._num_shards = num_shards
        self._opts = opts

    def process(self, element, cutoff, items):
        shard, packed = element
        users = ((user_id, [Event(*e) for e in events], follows) for user_id, events, follows in unpack_many(packed))
        counts: collections.Counter = collections.Counter()
        item_counts: collections.Counter = collections.Counter()
        follows_total = 0
        # Written as built (not buffered per shard) to temporary files; each
        # is renamed into place only after every record of the shard is
        # written (a failure while writing deletes them all).
        with contextlib.ExitStack() as stack:
            writers = {name: stack.enter_context(TFRecordShard(shard_path(self._output_dir, name, shard,
                                                                          self._num_shards)))
                       for name in features.EXAMPLE_OUTPUTS}
            for user_id, events, follows in users:
                if cutoff is None and self._opts.split.mode != "per_user":
                    break  # a temporal split without events has no T, and nothing to build
                built = build_user_records(user_id, events, follows, cutoff, items, self._opts)
                for name, writer in writers.items():
                    for record in built[name]:
                        writer.write(record)
                counts.update(built["counts"])
                item_counts.update(built["train_items"])
                follows_total += bool(built["follows"])
        for name, writer in writers.items():
            beam.metrics.Metrics.counter(METRICS_NAMESPACE, f"examples/{name}").inc(writer.count)
            yield beam.pvalue.TaggedOutput(STATS, (f"examples/{name}", writer.count))
        for key, value in counts.items():
            yield beam.pvalue.TaggedOutput(STATS, (key, value))
        yield beam.pvalue.TaggedOutput(STATS, ("users_with_follows", follows_total))
        for item_id, count in item_counts.items():
            yield beam.pvalue.TaggedOutput(TRAIN_COUNTS, (item_id, count))


class WriteItemShard(beam.DoFn):
    """Writes one item-table shard, items sorted by id."""

    def __init__(self, output_dir: str, num_shards: int):
        self._output_dir = output_dir
        self._num_shards = num_shards

    def process(self, element, counts):
        shard, items = element
        path = shard_path(self._output_dir, features.ITEM_TABLE, shard, self._num_shards)
        with TFRecordShard(path) as writer:
            for item in sorted((Item(*unpack(r)) for r in items), key=lambda r: r.item_id):
                writer.write(
                    features.encode_item(
                        item.item_id, item.topics, item.content, dict(item.categorical),
                        item.features_valid, counts.get(item.item_id, 0),
                    )
                )
        yield "items_kept", writer.count


def _balance(stats: dict, dead: dict) -> dict:
    """Rows in = kept + dead letter, per input kind; exact or the run fails."""
    result = {}
    kept_key = {"events": "events_kept", "items": "items_kept", "follows": "follows_kept"}
    for kind, kept in kept_key.items():
        rows_in = stats.get(f"{kind}_rows_in", 0)
        dead_n = sum(v for k, v in dead.items() if k.startswith(f"{kind}/"))
        kept_n = stats.get(kept, 0)
        result[kind] = {"in": rows_in, "kept": kept_n, "dead": dead_n, "ok": rows_in == kept_n + dead_n}
    return result


def _merge(parts: list[dict]) -> dict:
    return SumDict().extract_output(SumDict().merge_accumulators([collections.Counter(p) for p in parts]))


def shard_counts(num_shards: int) -> dict[str, int]:
    """Output name -> how many shards this run writes of it.

    Why in the manifest: readers take only this shard set (`trainer/data.py
    match_files`), so shards a run with another count left behind are never
    read with it.
    """
    counts = {name: num_shards for name in features.EXAMPLE_OUTPUTS}
    counts[features.ITEM_TABLE] = max(1, num_shards // 4)
    return counts


def _write_manifest(_, output_dir, cfg_dict, cutoff, tables, paths, shards, **parts):
    """Merges the per-stage `stats_*` / `dead_*` dicts and writes manifest.json."""
    stats = _merge([v for k, v in sorted(parts.items()) if k.startswith("stats_")])
    dead = _merge([v for k, v in sorted(parts.items()) if k.startswith("dead_")])
    manifest = {
        "schema_version": features.SCHEMA_VERSION,
        "cutoff": cutoff,
        "counts": stats,
        "dead_letter": dead,
        "balance": _balance(stats, dead),
        "tables": tables,
        "inputs": paths,
        "outputs": {name: f"{name}-*-of-{shards[name]:05d}{features.TFRECORD_SUFFIX}"
                    for name in features.EXAMPLE_OUTPUTS},
        "shards": shards,
        "config": cfg_dict,
    }
    write_text(FileSystems.join(output_dir, features.MANIFEST), json.dumps(manifest, indent=2) + "\n")
    return manifest


def source_inputs(cfg: MerConfig, raw_dir: str | None = None) -> dict:
    """Resolves the input files and row mappers for the configured source.

    Raises:
      FileNotFoundError: a required input matched no file.
      ValueError: a CSV/TSV header or Parquet schema lacks a required column
        (the mappers' required columns and every configured item feature
        column), or cannot be read.
    """
    data = cfg.data
    src = data.source
    neg = tuple(data.negative_actions)
    if src.format in ("generic", "synthetic"):
        if src.format == "synthetic":
            if not raw_dir:
                raise ValueError("synthetic source: the generated raw directory is required")
            events, items, follows = (FileSystems.join(raw_dir, p) for p in
                                      ("events-*.csv", "items-*.csv", "follows-*.csv"))
            vector_dim, categorical = data.synthetic.content_dim, ("format", "language")
        else:
            events, items, follows = src.events, src.items, src.follows
            vector_dim, categorical = src.item_vector_dim, tuple(src.item_categorical_columns)
        inputs = {
            "events": (expand_files(events, "data.source.events"),
                       functools.partial(mappers.event_from_row, negative_actions=neg), None),
            "items": (expand_files(items, "data.source.items"),
                      functools.partial(
                          mappers.item_from_row,
                          vector_column=src.item_vector_column,
                          vector_dim=vector_dim,
                          numeric_columns=tuple(src.item_numeric_columns),
                          categorical_columns=categorical,
                      ), None),
            "follows": (expand_files(follows, "data.source.follows", required=False) if follows else [],
                        mappers.follow_from_row, None),
        }
        item_columns = ((src.item_vector_column,) if vector_dim else ()) + tuple(src.item_numeric_columns)
        for kind, columns in (("events", mappers.EVENT_COLUMNS), ("items", mappers.ITEM_COLUMNS + item_columns
                                                                 + categorical), ("follows", mappers.FOLLOW_COLUMNS)):
            check_columns(f"data.source.{kind}", inputs[kind][0], columns)
        return inputs
    root = src.path
    if not root:
        raise ValueError(f"data.source.path: required for format {src.format!r} (the GroupLens directory)")
    cut = data.negative_rating_max
    if src.format == "ml-latest-small":
        return {
            "events": ([FileSystems.join(root, "ratings.csv")],
                       functools.partial(movielens.latest_event, negative_rating_max=cut),
                       movielens.ML_LATEST_FORMAT),
            "items": ([FileSystems.join(root, "movies.csv")], movielens.latest_item,
                      movielens.ML_LATEST_FORMAT),
            "follows": ([], mappers.follow_from_row, None),
        }
    return {
        "events": ([FileSystems.join(root, "u.data")],
                   functools.partial(movielens.ml100k_event, negative_rating_max=cut),
                   movielens.ML100K_DATA_FORMAT),
        "items": ([FileSystems.join(root, "u.item")], movielens.ml100k_item,
                  movielens.ML100K_ITEM_FORMAT),
        "follows": ([], mappers.follow_from_row, None),
    }


def _sum_dict(pcoll, label: str):
    """`(key, number)` pairs -> one dict of sums (empty dict for no input)."""
    return pcoll | f"Sum{label}" >> beam.CombineGlobally(SumDict())


class CountDeadLetter(beam.DoFn):
    """`(kind/reason, 1)` of a dead letter, counted in the Beam counter
    `dead_letter/<kind>/<reason>` as it happens (the manifest's
    `dead_letter` holds the same counts once the run ends)."""

    def process(self, dead: dict):
        key = f"{dead['kind']}/{dead['reason']}"
        beam.metrics.Metrics.counter(METRICS_NAMESPACE, f"dead_letter/{key}").inc()
        yield key, 1


def _dead_letters(pcoll, label: str, output_dir: str):
    """Writes one dead-letter PCollection and returns its counts by kind/reason.

    Each stage writes its own `dead_letter/<stage>-*.jsonl` files: no Flatten
    (see `ShardUserRecords` for why).
    """
    _ = (
        pcoll
        | f"DeadJson{label}" >> beam.Map(lambda d: json.dumps(d, sort_keys=True))
        | f"WriteDead{label}" >> beam.io.WriteToText(
            FileSystems.join(output_dir, features.DEAD_LETTER_DIR, label.lower()), file_name_suffix=".jsonl")
    )
    keyed = pcoll | f"DeadKey{label}" >> beam.ParDo(CountDeadLetter())
    return _sum_dict(keyed, f"Dead{label}")


def build_pipeline(pipeline: beam.Pipeline, cfg: MerConfig, output_dir: str, raw_dir: str | None = None):
    """Adds the prepare stages to `pipeline`.

    Args:
      pipeline: a `beam.Pipeline` (any runner).
      cfg: the resolved config.
      output_dir: where artifacts go (any Beam filesystem URI).
      raw_dir: for the synthetic source, where its generated files are.

    Returns:
      dict of PCollections: `manifest` (one dict), `dead` (dead-letter
      dicts, one PCollection per stage), `cutoff` (one float, or None for
      the `per_user` split and for a temporal split without events).
    """
    data = cfg.data
    inputs = source_inputs(cfg, raw_dir)
    paths = {kind: spec[0] for kind, spec in inputs.items()}
    specs = {kind: (spec[1], spec[2]) for kind, spec in inputs.items()}
    num_shards = data.num_shards

    items_raw, items_dead, items_stats = read_records(pipeline, "Items", {"items": paths["items"]}, specs)
    items = (
        items_raw
        | "KeyItem" >> beam.Map(lambda it: (it.item_id, pack(it)))
        | "GroupItem" >> beam.GroupByKey()
        | "FirstItem" >> beam.ParDo(FirstItem(paths["items"])).with_outputs(DEAD, main="items")
    )
    item_lookup = items.items | "ItemLookup" >> beam.Map(
        lambda it: (it.item_id, (it.topics, it.features_valid))
    )
    user_files = {kind: paths[kind] for kind in ("events", "follows") if paths[kind]}
    keyed, users_dead, users_stats = read_records(
        pipeline, "Users", user_files, specs,
        dofn=ShardUserRecords(specs, paths, num_shards),
        side_inputs=(beam.pvalue.AsDict(item_lookup),),
    )
    shards = (
        keyed
        | "GroupShards" >> beam.GroupByKey()
        | "Dedup" >> beam.ParDo(DedupShard(paths["events"], paths["follows"])).with_outputs(
            DEAD, STATS, TIMESTAMPS, main="users"
        )
    )
    if data.split.mode == "timestamp":
        cutoff = pipeline | "FixedCutoff" >> beam.Create([float(data.split.timestamp)])
    elif data.split.mode == "per_user":  # no global T: each user's last events (user_records.train_flags)
        cutoff = pipeline | "NoCutoff" >> beam.Create([None])
    else:
        cutoff = shards[TIMESTAMPS] | "Cutoff" >> beam.CombineGlobally(QuantileFn(data.split.quantile))

    written = shards.users | "WriteExamples" >> beam.ParDo(
        WriteExampleShard(output_dir, num_shards, data),
        beam.pvalue.AsSingleton(cutoff),
        beam.pvalue.AsDict(item_lookup),
    ).with_outputs(STATS, TRAIN_COUNTS, main="none")
    train_counts = beam.pvalue.AsDict(written[TRAIN_COUNTS] | "SumCounts" >> beam.CombinePerKey(sum))

    item_shards = shard_counts(num_shards)[features.ITEM_TABLE]
    item_stats = (
        items.items
        | "ShardItems" >> beam.Map(lambda it, n: (stable_shard(it.item_id, n), pack(it)), item_shards)
        | "GroupItemShards" >> beam.GroupByKey()
        | "WriteItems" >> beam.ParDo(WriteItemShard(output_dir, item_shards), train_counts)
    )
    tables = build_tables(items.items, train_counts, output_dir, cfg.model.max_item_topics)
    # Per-stage dead letters and stats meet only as side inputs of the
    # manifest writer: no Flatten anywhere (see ShardUserRecords).
    dead = {"Items": items_dead, "ItemDuplicates": items[DEAD], "Users": users_dead, "Dedup": shards[DEAD]}
    parts = {f"dead_{label}": beam.pvalue.AsSingleton(_dead_letters(pc, label, output_dir))
             for label, pc in dead.items()}
    stage_stats = {"Items": items_stats, "Users": users_stats, "Dedup": shards[STATS],
                   "Examples": written[STATS], "ItemTable": item_stats}
    parts.update({f"stats_{label}": beam.pvalue.AsSingleton(_sum_dict(pc, f"Stats{label}"))
                  for label, pc in stage_stats.items()})
    manifest = pipeline | "ManifestSeed" >> beam.Create([None]) | "WriteManifest" >> beam.Map(
        _write_manifest, output_dir, config_to_dict(cfg), beam.pvalue.AsSingleton(cutoff),
        beam.pvalue.AsSingleton(tables), paths, shard_counts(num_shards), **parts,
    )
    return {"manifest": manifest, "dead": dead, "cutoff": cutoff}
