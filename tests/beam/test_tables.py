"""The vocabularies, counts and corpus equal those of the gather-everything
reference, byte for byte.

Why a reference: `beam/prepare.py` builds the tables from keyed combiners
so no element holds every item; until it did, one `ToList` gathered all
items (vectors included) on one worker and wrote the files from that list.
`reference_tables` is that code, fed from the prepared item table (ids,
topics, content, categorical values, validity and train counts of every
kept item), and the files the pipeline writes must equal its output.
"""

from __future__ import annotations

import collections
import json

from beam.run import IN_MEMORY, run_prepare
from trainer import features
from trainer.config import load_config


# Ties in every vocabulary, a repeated topic within an item, items without
# topics / categorical values / events, and more topics than max_item_topics.
ITEMS = (
    "item_id,topics,content,format,lang\n"
    "a,t1|t2|t1,0.1 0.2,img,en\n"
    "b,t2,0.3 0.4,vid,\n"
    "c,t3,,img,de\n"
    "d,,0.5 0.6,,en\n"
    "e,t1|t2|t3|t4,0.7 0.8,vid,fr\n"
    "f,t4,0.1 0.1,img,en\n"
)
EVENTS = (
    "user_id,item_id,timestamp,action\n"
    "u1,a,1,click\nu1,b,2,click\nu1,c,3,hide\nu1,e,4,click\nu1,d,9,click\n"
    "u2,b,1,click\nu2,a,2,click\nu2,e,3,click\nu2,c,8,click\n"
    "u3,e,1,click\nu3,b,2,click\nu3,d,3,click\nu3,a,7,click\n"
)
TINY_WORLD = ["data.synthetic.num_users=120", "data.synthetic.num_items=600", "data.synthetic.num_topics=20",
              "data.synthetic.num_shards=3", "data.num_shards=3"]


def _item_rows(out) -> list[tuple]:
    """`(id, topics, content, categorical, valid, train_count)` of every item-table record."""
    import tensorflow as tf

    rows = []
    for raw in tf.data.TFRecordDataset(sorted(str(p) for p in (out / "items").glob("items-*"))):
        feats = tf.train.Example.FromString(raw.numpy()).features.feature
        categorical = tuple((k[len(features.CATEGORICAL_PREFIX):], v.bytes_list.value[0].decode())
                            for k, v in sorted(feats.items()) if k.startswith(features.CATEGORICAL_PREFIX))
        rows.append((feats[features.ITEM_ID].bytes_list.value[0].decode(),
                     tuple(t.decode() for t in feats[features.ITEM_TOPICS].bytes_list.value),
                     tuple(feats[features.ITEM_CONTENT].float_list.value), categorical,
                     bool(feats[features.ITEM_FEATURES_VALID].int64_list.value[0]),
                     int(feats[features.ITEM_TRAIN_COUNT].int64_list.value[0])))
    return rows


def _vocab(counts) -> str:
    return "".join(f"{token}\n" for token, _ in sorted(counts, key=lambda kv: (-kv[1], kv[0])))


def reference_tables(rows: list[tuple], max_item_topics: int) -> tuple[dict[str, str], dict]:
    """The files (path -> text) and the manifest's `tables` as the one-list
    `_write_tables` made them from every item and its train count."""
    topic_counts: collections.Counter = collections.Counter()
    cat_counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for _, topics, _, categorical, _, _ in rows:
        topic_counts.update(topics)
        for name, value in categorical:
            if value:
                cat_counts[name][value] += 1
    files = {features.VOCAB_ITEMS: _vocab((r[0], r[5]) for r in rows),
             features.VOCAB_TOPICS: _vocab(topic_counts.items())}
    tables = {"vocab/items": len(rows), "vocab/topics": len(topic_counts)}
    for name, counter in sorted(cat_counts.items()):
        files[features.VOCAB_CATEGORICAL.format(name=name)] = _vocab(counter.items())
        tables[f"vocab/cat_{name}"] = len(counter)
    counted = sorted((r[0], r[5]) for r in rows if r[5] > 0)
    files[features.ITEM_COUNTS] = "".join(f"{i}\t{c}\n" for i, c in counted)
    files[features.CORPUS] = "".join(f"{i}\n" for i, _ in counted)
    tables.update({
        "corpus_items": len(counted),
        "items_with_invalid_features": sum(not r[4] for r in rows),
        "max_item_topics": max_item_topics,
        "items_topics_truncated": sum(len(set(r[1])) > max_item_topics for r in rows),
        "content_dim": max((len(r[2]) for r in rows), default=0),
        "categorical_columns": sorted({n for r in rows for n, _ in r[3]}),
    })
    return files, tables


def _written_tables(out) -> dict[str, str]:
    names = [*out.glob("vocab/*.txt"), out / features.ITEM_COUNTS, out / features.CORPUS]
    return {str(p.relative_to(out)): p.read_text() for p in names}


def assert_tables_match_reference(out, max_item_topics: int) -> dict:
    files, tables = reference_tables(_item_rows(out), max_item_topics)
    assert _written_tables(out) == files
    manifest = json.loads((out / features.MANIFEST).read_text())
    assert list(manifest["tables"].items()) == list(tables.items())  # key order too: the manifest's bytes
    return tables


def test_generic_tables_equal_the_one_list_reference(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "items.csv").write_text(ITEMS)
    (raw / "events.csv").write_text(EVENTS)
    cfg = load_config("synthetic-small", [
        "data.source.format=generic", f"data.source.events={raw}/events.csv", f"data.source.items={raw}/items.csv",
        "data.source.item_vector_dim=2", "data.source.item_categorical_columns=[format,lang]",
        "data.split.mode=timestamp", "data.split.timestamp=5", "data.num_shards=2", "model.max_item_topics=2"])
    run_prepare(cfg, str(tmp_path / "out"), list(IN_MEMORY))
    tables = assert_tables_match_reference(tmp_path / "out", 2)
    # By hand: train = events before t=5 (u1 a b c e, u2 b a e, u3 e b d).
    assert (tmp_path / "out" / features.VOCAB_ITEMS).read_text().split() == ["b", "e", "a", "c", "d", "f"]
    assert (tmp_path / "out" / features.VOCAB_TOPICS).read_text().split() == ["t1", "t2", "t3", "t4"]
    assert (tmp_path / "out" / "vocab" / "cat_lang.txt").read_text().split() == ["en", "de", "fr"]
    assert tables["items_topics_truncated"] == 1 and tables["corpus_items"] == 5


def test_synthetic_tables_equal_the_one_list_reference(tmp_path):
    cfg = load_config("synthetic-small", TINY_WORLD)
    run_prepare(cfg, str(tmp_path / "out"), list(IN_MEMORY))
    tables = assert_tables_match_reference(tmp_path / "out", cfg.model.max_item_topics)
    assert tables["vocab/items"] == 600 and tables["categorical_columns"] == ["format", "language"]
