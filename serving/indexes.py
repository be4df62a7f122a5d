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
from common.topic_index import topic_members
from serving.wire import ItemFields

log = logging.getLogger(__name__)


@dataclasses.dataclass
class LoadedIndex:
    """One retriever's index and what the service needs around it.

    Attributes:
      retriever: `implicit` / `explicit`.
      version: the model version it belongs to.
      index: `common.item_index.ItemIndex` (search, item_ids, topics and
        its per-topic indexes).
      row_item: `[N]` int64, row -> global item number (shared by all
        indexes, so both retrievers' candidates de-duplicate).
      members: topic -> `[M]` int64 rows carrying it, ascending (memory
        proportional to the (item, topic) pairs, not topics x items);
        explicit retriever only (the relevance filter), empty otherwise.
      topic_vocabulary: topics the user tower knows (explicit only).
      item_row: global item number -> row (-1 = not in this index).
      embeddings: `[N, d]` float32 item embeddings (the index's own
        `scann/dataset.npy`, in memory; explicit retriever only), or None:
        the exact per-topic search reads them.
      fields: the rows' `item_id` / `item_topics` response bytes.
      block_bytes: at most this many bytes of per-topic embedding blocks
        are kept (`topic_embeddings`); None = as many as `embeddings` holds.
    """

    retriever: str
    version: int
    index: object
    row_item: np.ndarray
    members: dict
    topic_vocabulary: frozenset
    item_row: np.ndarray
    embeddings: np.ndarray | None = None
    fields: ItemFields | None = None
    block_bytes: int | None = None
    _blocks: dict = dataclasses.field(default_factory=dict, init=False, repr=False, compare=False)
    _blocks_held: int = dataclasses.field(default=0, init=False, repr=False, compare=False)
    _blocks_lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, init=False, repr=False,
                                                     compare=False)

    def topic_embeddings(self, topic: str) -> np.ndarray:
        """`embeddings[topic_rows(topic)]`, contiguous: the exact topic
        search's database.

        Gathering a topic's rows from the 1M-row table cost more than the
        search itself (0.5-1 ms for 10-20k rows, on every request), so each
        topic's block is kept once gathered, up to `block_bytes` in all (the
        size of `embeddings` itself by default); past that, gathered per call.
        Kept blocks are read-only (every request shares them). Each index
        version keeps its own: a new version starts with none.
        """
        block = self._blocks.get(topic)
        if block is not None:
            return block
        block = self.embeddings[self.topic_rows(topic)]
        if not len(block):
            return block
        limit = self.embeddings.nbytes if self.block_bytes is None else self.block_bytes
        with self._blocks_lock:
            if topic in self._blocks:
                return self._blocks[topic]
            if self._blocks_held + block.nbytes <= limit:
                block.flags.writeable = False
                self._blocks[topic] = block
                self._blocks_held += block.nbytes
        return block

    def keep_topic_blocks(self, max_items: int) -> int:
        """Gathers now the blocks of the topics the exact topic search reads
        (no index of their own, at most `max_items` items), smallest first,
        as far as the budget goes, so that no request after a load pays
        their gather. Returns how many are kept."""
        if self.embeddings is None:
            return 0
        own = self.index.topic_indexes
        wanted = sorted((len(rows), topic) for topic, rows in self.members.items()
                        if topic not in own and 0 < len(rows) <= max_items)
        for _, topic in wanted:
            self.topic_embeddings(topic)
        return len(self._blocks)

    def topic_size(self, topic: str) -> int:
        """How many rows carry `topic`."""
        return len(self.topic_rows(topic))

    def topic_rows(self, topic: str) -> np.ndarray:
        """Rows carrying `topic`, ascending."""
        rows = self.members.get(topic)
        return np.zeros(0, np.int64) if rows is None else rows

    def carries(self, topic: str, rows: np.ndarray) -> np.ndarray:
        """Whether each of `rows` carries `topic` (False for -1)."""
        members = self.topic_rows(topic)
        if not len(members):
            return np.zeros(rows.shape, bool)
        at = np.minimum(np.searchsorted(members, rows), len(members) - 1)
        return (members[at] == rows) & (rows >= 0)


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
    row_item = numbers.numbers(index.item_ids)
    item_row = np.full(int(row_item.max(initial=-1)) + 1, -1, np.int64)
    item_row[row_item] = np.arange(len(row_item))
    dataset = contract.join(contract.index_dir(base, retriever, version), contract.INDEX_SEARCHER, "dataset.npy")
    # In memory, and only where read: the explicit retriever's exact topic
    # search (per-topic blocks gathered from it, `topic_embeddings`).
    explicit = retriever == contract.EXPLICIT
    embeddings = np.load(dataset) if explicit and os.path.exists(dataset) else None
    if embeddings is not None and embeddings.shape[0] != len(row_item):
        embeddings = None  # not the row-aligned float dataset
    loaded = LoadedIndex(retriever, version, index, row_item, topic_members(index.topics) if explicit else {},
                         _topic_vocabulary(base, retriever, version), item_row, embeddings,
                         ItemFields(index.item_ids, index.topics))
    log.info("loaded %s index version %d (%d items, %s, %d topic indexes)", retriever, version,
             len(index.item_ids), index.config.kind, len(index.topic_indexes))
    return loaded
