"""The ScaNN indexes the service queries, one per retriever, and their versions.

Each index `<base>/index/<retriever>/<v>/` was built from the item tower of
model version v, so requests are pinned to user-tower version v. A newer
index is switched to only when the model server reports that user-tower
version AVAILABLE; the export keeps two versions loaded (`models.config`),
so the old pin stays valid until the switch: a hot swap without failures.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading

import numpy as np

from common import contract

log = logging.getLogger(__name__)


@dataclasses.dataclass
class LoadedIndex:
    """One retriever's index and what the service needs around it.

    Attributes:
      retriever: `implicit` / `explicit`.
      version: the model version it belongs to.
      index: `common.item_index.ItemIndex`-like (search, item_ids, topics).
      row_item: `[N]` int64, row -> global item number (shared by all
        indexes, so both retrievers' candidates de-duplicate).
      topic_rows: topic -> bool `[N]`, which rows carry the topic.
      topic_vocabulary: topics the user tower knows (explicit only).
      item_row: global item number -> row (-1 = not in this index).
      embeddings: `[N, d]` float32 item embeddings (the index's own
        `scann/dataset.npy`, memory-mapped), or None: the exact per-topic
        search of the explicit retriever reads them.
    """

    retriever: str
    version: int
    index: object
    row_item: np.ndarray
    topic_rows: dict
    topic_vocabulary: frozenset
    item_row: np.ndarray
    embeddings: np.ndarray | None = None
    topic_count: dict = dataclasses.field(default_factory=dict)
    _members: dict = dataclasses.field(default_factory=dict, repr=False)

    def row(self, item: int) -> int:
        return int(self.item_row[item]) if item < len(self.item_row) else -1

    def topic_size(self, topic: str) -> int:
        """How many rows carry `topic`."""
        return self.topic_count.get(topic, 0)

    def topic_members(self, topic: str) -> tuple[np.ndarray, np.ndarray]:
        """Rows carrying `topic` (ascending) and their embeddings `[M, d]`,
        gathered once per topic and kept (a contiguous copy scores fast)."""
        cached = self._members.get(topic)
        if cached is None:
            rows = np.flatnonzero(self.carries(topic))
            cached = self._members[topic] = (rows, np.ascontiguousarray(self.embeddings[rows]))
        return cached

    def carries(self, topic: str) -> np.ndarray:
        return self.topic_rows.get(topic, np.zeros(len(self.row_item), bool))


class ItemNumbers:
    """Global item numbering across indexes (thread-safe, append-only)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.ids: list[str] = []
        self.number: dict[str, int] = {}

    def numbers(self, item_ids: list[str]) -> np.ndarray:
        with self._lock:
            for item in item_ids:
                if item not in self.number:
                    self.number[item] = len(self.ids)
                    self.ids.append(item)
            return np.fromiter((self.number[i] for i in item_ids), np.int64, len(item_ids))


def index_versions(base: str, retriever: str) -> list[int]:
    """Complete index versions of a retriever (build.json present)."""
    return contract.versions(contract.join(base, contract.INDEX_DIR, retriever), contract.INDEX_BUILD)


def _topic_vocabulary(base: str, retriever: str, version: int) -> frozenset:
    path = contract.join(base, contract.USER_MODEL[retriever], str(version), "assets", "topics.txt")
    if not os.path.exists(path):
        return frozenset()
    with open(path, encoding="utf-8") as handle:
        return frozenset(line.rstrip("\n") for line in handle if line.strip())


def load(base: str, retriever: str, version: int, numbers: ItemNumbers) -> LoadedIndex:
    """Loads `<base>/index/<retriever>/<version>/`."""
    from common.item_index import load_index

    index = load_index(contract.index_dir(base, retriever, version))
    topic_rows: dict[str, np.ndarray] = {}
    for row, topics in enumerate(index.topics):
        for topic in topics:
            carries = topic_rows.get(topic)
            if carries is None:  # not setdefault: its default would allocate N bools per (row, topic)
                carries = topic_rows[topic] = np.zeros(len(index.item_ids), bool)
            carries[row] = True
    row_item = numbers.numbers(index.item_ids)
    item_row = np.full(int(row_item.max(initial=-1)) + 1, -1, np.int64)
    item_row[row_item] = np.arange(len(row_item))
    dataset = contract.join(contract.index_dir(base, retriever, version), contract.INDEX_SEARCHER, "dataset.npy")
    embeddings = np.load(dataset, mmap_mode="r") if os.path.exists(dataset) else None
    if embeddings is not None and embeddings.shape[0] != len(row_item):
        embeddings = None  # not the row-aligned float dataset
    loaded = LoadedIndex(retriever, version, index, row_item, topic_rows,
                         _topic_vocabulary(base, retriever, version), item_row, embeddings,
                         {t: int(c.sum()) for t, c in topic_rows.items()})
    log.info("loaded %s index version %d (%d items, %s)", retriever, version, len(index.item_ids), index.config.kind)
    return loaded
