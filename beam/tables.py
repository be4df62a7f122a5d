"""Vocabularies, item train counts and the eval corpus, from keyed combiners.

Why not one list of items: the tables used to be written from
`items | ToList()`, one element holding every item with its content vector
on one worker. Here each table is a combiner over `(token, count)` pairs
(topics, categorical values) or per-item scalars, so the most any element
holds is one vocabulary: a token and a count per item id for
`vocab/items.txt` (one sorted file needs its tokens in one place), per topic,
per value of one categorical column. The files are byte-identical to the
one-list version's (`tests/beam/test_tables.py` holds it as the reference).
"""

from __future__ import annotations

from typing import Iterable

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from beam.combiners import SumDict
from beam.shard_writer import write_text
from trainer import features


def write_vocab(path: str, counts: Iterable[tuple[str, int]]) -> int:
    """Vocabulary file: one token per line, most frequent first, ties by token."""
    ranked = sorted(counts, key=lambda kv: (-kv[1], kv[0]))
    write_text(path, "".join(f"{token}\n" for token, _ in ranked))
    return len(ranked)


def _write_item_files(counts: dict[str, int], output_dir: str) -> dict:
    """`vocab/items.txt` (every item), `items/train_counts.tsv` and the corpus
    (the items of training events, by id).

    Args:
      counts: item id -> train count, for every kept item (0 = never trained on).
    """
    join = FileSystems.join
    counted = sorted((i, c) for i, c in counts.items() if c > 0)
    vocab = write_vocab(join(output_dir, features.VOCAB_ITEMS), counts.items())
    write_text(join(output_dir, features.ITEM_COUNTS), "".join(f"{i}\t{c}\n" for i, c in counted))
    write_text(join(output_dir, features.CORPUS), "".join(f"{i}\n" for i, _ in counted))
    return {"vocab/items": vocab, "corpus_items": len(counted)}


def _write_topic_vocab(counts: dict[str, int], output_dir: str) -> dict:
    return {"vocab/topics": write_vocab(FileSystems.join(output_dir, features.VOCAB_TOPICS), counts.items())}


def _write_categorical_vocab(element: tuple[str, dict[str, int]], output_dir: str) -> tuple[str, int]:
    """One categorical column's vocabulary file; `("vocab/cat_<name>", size)`."""
    name, counts = element
    path = FileSystems.join(output_dir, features.VOCAB_CATEGORICAL.format(name=name))
    return f"vocab/cat_{name}", write_vocab(path, counts.items())


class ItemStats(beam.CombineFn):
    """Scalar facts of the item table: invalid items, items whose topics the
    model truncates (more distinct topics than `max_item_topics`), the
    content width and the categorical column names."""

    def __init__(self, max_item_topics: int):
        self._max_topics = max_item_topics

    def create_accumulator(self):
        return 0, 0, 0, frozenset()

    def add_input(self, acc, item):
        invalid, truncated, dim, names = acc
        return (invalid + (not item.features_valid), truncated + (len(set(item.topics)) > self._max_topics),
                max(dim, len(item.content)), names | {n for n, _ in item.categorical})

    def merge_accumulators(self, accs):
        invalid = truncated = dim = 0
        names: frozenset = frozenset()
        for a in accs:
            invalid, truncated, dim, names = invalid + a[0], truncated + a[1], max(dim, a[2]), names | a[3]
        return invalid, truncated, dim, names

    def extract_output(self, acc):
        invalid, truncated, dim, names = acc
        return {"items_with_invalid_features": invalid, "max_item_topics": self._max_topics,
                "items_topics_truncated": truncated, "content_dim": dim, "categorical_columns": sorted(names)}


def _tables(_, item_files: dict, topics: dict, categorical: dict, stats: dict) -> dict:
    """The manifest's `tables`, keys in the order the manifest has always listed them."""
    return {"vocab/items": item_files["vocab/items"], **topics, **categorical,
            "corpus_items": item_files["corpus_items"], **stats}


def build_tables(items, train_counts, output_dir: str, max_item_topics: int):
    """Adds the table stages; returns a PCollection of one dict (the manifest's `tables`).

    Args:
      items: PCollection of the kept `Item`s.
      train_counts: side input, item id -> train count (`AsDict`).
      output_dir: where the files go.
      max_item_topics: `model.max_item_topics` (only counted here; the files keep every topic).
    """
    item_files = (
        items
        | "ItemTrainCounts" >> beam.Map(lambda it, counts: (it.item_id, counts.get(it.item_id, 0)), train_counts)
        | "SumItemCounts" >> beam.CombineGlobally(SumDict())
        | "WriteItemFiles" >> beam.Map(_write_item_files, output_dir)
    )
    topics = (
        items
        | "TopicOnes" >> beam.FlatMap(lambda it: ((t, 1) for t in it.topics))
        | "SumTopics" >> beam.CombineGlobally(SumDict())
        | "WriteTopicVocab" >> beam.Map(_write_topic_vocab, output_dir)
    )
    categorical = (
        items
        | "CategoricalOnes" >> beam.FlatMap(lambda it: ((n, (v, 1)) for n, v in it.categorical if v))
        | "SumCategorical" >> beam.CombinePerKey(SumDict())
        | "WriteCategoricalVocab" >> beam.Map(_write_categorical_vocab, output_dir)
        | "CategoricalSizes" >> beam.CombineGlobally(SumDict())
    )
    stats = items | "ItemStats" >> beam.CombineGlobally(ItemStats(max_item_topics))
    return items.pipeline | "TablesSeed" >> beam.Create([None]) | "Tables" >> beam.Map(
        _tables, *(beam.pvalue.AsSingleton(pc) for pc in (item_files, topics, categorical, stats)))
