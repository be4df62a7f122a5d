"""The retrieval service's logic, independent of gRPC plumbing.

Per request (SPEC §2.5, paper §3.4):
1. validate; sample K_ex of the user's known followed topics (seeded);
2. call the implicit and explicit user towers on the model server
   concurrently, pinned to the versions the indexes were built from;
3. one ANN query per valid embedding, over-fetched to survive the filters:
   the user's history is dropped, and explicit candidates must carry their
   condition topic (relevance post-filter);
4. budgets: implicit embeddings in proportion to their importance, explicit
   ones equal (one apportionment of the total over all embeddings, the
   implicit weights scaled to average 1); merge round-robin with
   de-duplication across both retrievers (or the configured policy).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import hashlib
import logging
import os
import threading
import time

import grpc
import numpy as np

from common import contract
from common.item_index import exact_search
from common.merging import POLICIES, budgets, merge
from serving import indexes as index_lib
from serving import wire
from serving.client import STAGES
from serving.retrieval_config import RetrievalConfig
from serving.tensors import int64_tensor, string_tensor, to_numpy

log = logging.getLogger(__name__)

# How long past the deadline a request waits for its searches before it
# answers DEADLINE_EXCEEDED (a tower call itself fails at the deadline).
SEARCH_GRACE_S = 0.5


class RequestError(ValueError):
    """A request that cannot be answered as sent (INVALID_ARGUMENT)."""


class UpstreamError(RuntimeError):
    """The model server failed; `code` is the gRPC status to answer with."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code


@dataclasses.dataclass
class Query:
    """A validated request."""

    history: list[str]
    negative: list[int]
    topics: list[str]  # sampled, known
    ignored_topics: list[str]
    budget: int
    policy: str


@dataclasses.dataclass
class Answer:
    """A `RetrieveResponse` as the service sends it: every field but the
    candidates in `header`, the candidates already encoded (`serving/wire.py`).

    Attributes:
      header: the response without candidates (stage_ms, versions, embeddings...).
      candidates: the repeated `candidates` field, wire bytes.
      count: how many candidates.
    """

    header: object
    candidates: bytes
    count: int

    def serialize(self) -> bytes:
        return self.header.SerializeToString() + self.candidates

    def message(self):
        """The whole response as a `RetrieveResponse` message."""
        return type(self.header).FromString(self.serialize())


@dataclasses.dataclass
class Lists:
    """Per-embedding candidate lists of one request, before merging."""

    rows: np.ndarray  # [K, depth] global item numbers, -1 = none
    scores: np.ndarray  # [K, depth]
    retriever: list[str]
    embedding: list[int]
    topic: list[str]
    weight: np.ndarray  # [K] budget weights
    importance: np.ndarray  # [K]
    search: list[str]  # [K] "ann", "topic_index" or "exact_topic"


def _stack(rows: list[np.ndarray], pad) -> np.ndarray:
    """Rows of different lengths as one `[K, max length]` array, right-padded."""
    out = np.full((len(rows), max(len(r) for r in rows)), pad, dtype=np.result_type(*rows))
    for j, r in enumerate(rows):
        out[j, :len(r)] = r
    return out


def _no_lists() -> Lists:
    return Lists(np.zeros((0, 0), np.int64), np.zeros((0, 0), np.float32), [], [], [], np.zeros(0), np.zeros(0), [])


def _concat_parts(parts: list[Lists]) -> Lists:
    """The retrievers' lists as one (rows right-padded to the longest)."""
    parts = [p for p in parts if len(p.retriever)]
    if not parts:
        return _no_lists()
    rows = _stack([r for p in parts for r in p.rows], -1)
    scores = _stack([r for p in parts for r in p.scores], -np.inf)
    return Lists(rows, scores, sum((p.retriever for p in parts), []), sum((p.embedding for p in parts), []),
                 sum((p.topic for p in parts), []), np.concatenate([p.weight for p in parts]),
                 np.concatenate([p.importance for p in parts]), sum((p.search for p in parts), []))


def sample_topics(topics: list[str], k: int, seed: int, request_key: bytes) -> list[str]:
    """K_ex of `topics` without replacement, in their given order; seed 0 =
    derived from the request (same request, same sample)."""
    if len(topics) <= k:
        return list(topics)
    if not seed:
        seed = int.from_bytes(hashlib.sha256(request_key).digest()[:8], "little")
    chosen = np.random.default_rng(seed).choice(len(topics), size=k, replace=False)
    return [topics[i] for i in sorted(chosen)]


class Retriever:
    """Answers retrieval requests against a model server and the indexes.

    Args:
      cfg: the service config.
      channel: a gRPC channel to the model server (TF Serving API).
      stub: calls Predict instead of a stub on `channel` (an embedded model
        server's `local_stub()`).
    """

    def __init__(self, cfg: RetrievalConfig, channel: grpc.Channel, stub=None):
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        if cfg.merge_policy not in POLICIES:
            raise ValueError(f"merge_policy={cfg.merge_policy!r}; allowed: {', '.join(POLICIES)}")
        self.cfg = cfg
        self.stub = stub if stub is not None else prediction_service_pb2_grpc.PredictionServiceStub(channel)
        self.numbers = index_lib.ItemNumbers()
        self.loaded: dict[str, index_lib.LoadedIndex] = {}
        self._lock = threading.Lock()
        self._refreshing = threading.Lock()  # one refresh at a time (poll thread, start-up wait)
        # Searches run here as each tower answers (ScaNN releases the GIL).
        self._pool = concurrent.futures.ThreadPoolExecutor(2 * (os.cpu_count() or 1), thread_name_prefix="search")

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    # -- indexes ---------------------------------------------------------------
    def refresh(self, available=None) -> list[str]:
        """Loads newer index versions whose user tower the model server has
        AVAILABLE (`available(model, version) -> bool`; None = assume so).
        Returns what changed."""
        changed = []
        with self._refreshing:
            for retriever in contract.RETRIEVERS:
                found = index_lib.index_versions(self.cfg.export_dir, retriever)
                current = self.loaded.get(retriever)
                newer = [v for v in found if current is None or v > current.version]
                for version in reversed(newer):
                    if available is None or available(contract.USER_MODEL[retriever], version):
                        loaded = index_lib.load(self.cfg.export_dir, retriever, version, self.numbers)
                        loaded.keep_topic_blocks(self.cfg.exact_topic_max_items)
                        with self._lock:
                            self.loaded[retriever] = loaded
                        changed.append(f"{retriever}:{version}")
                        break
        return changed

    def versions(self) -> dict[str, int]:
        return {r: i.version for r, i in self.loaded.items()}

    # -- request ---------------------------------------------------------------
    def validate(self, request, loaded: dict | None = None) -> Query:
        """Checks a `RetrieveRequest` against the indexes `loaded` (the
        request's snapshot; default the current ones); raises RequestError
        naming the field."""
        cfg = self.cfg
        loaded = self.loaded if loaded is None else loaded
        if request.budget < 0 or request.budget > cfg.max_budget:
            raise RequestError(f"budget={request.budget}: allowed 1..{cfg.max_budget} (0 = default {cfg.default_budget})")
        if len(request.history) > cfg.max_history:
            raise RequestError(f"history has {len(request.history)} engagements; at most {cfg.max_history} "
                               f"(the towers use the most recent ones)")
        if len(request.followed_topics) > cfg.max_topics:
            raise RequestError(f"followed_topics has {len(request.followed_topics)} topics; at most {cfg.max_topics}")
        for i, e in enumerate(request.history):
            if not e.item_id or len(e.item_id) > cfg.max_id_length:
                raise RequestError(f"history[{i}].item_id={e.item_id[:40]!r}: must be a non-empty id of at most "
                                   f"{cfg.max_id_length} characters")
        policy = request.merge_policy or cfg.merge_policy
        if policy not in POLICIES:
            raise RequestError(f"merge_policy={policy!r}; allowed: {', '.join(POLICIES)} (or empty)")
        explicit = loaded.get(contract.EXPLICIT)
        known, ignored = [], []
        for topic in dict.fromkeys(request.followed_topics):
            if not topic or len(topic) > cfg.max_id_length:
                raise RequestError(f"followed_topics: {topic[:40]!r} is not a topic (empty or too long)")
            (known if explicit is not None and topic in explicit.topic_vocabulary else ignored).append(topic)
        if not request.history and not known:
            raise RequestError("nothing to retrieve from: history is empty and no followed topic is known")
        sampled = sample_topics(known, cfg.num_explicit, request.seed, request.SerializeToString(deterministic=True))
        return Query([e.item_id for e in request.history], [int(e.negative) for e in request.history], sampled,
                     ignored, request.budget or cfg.default_budget, policy)

    def _predict(self, retriever: str, version: int, query: Query, timeout: float):
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        request.model_spec.name = contract.USER_MODEL[retriever]
        request.model_spec.version.value = version
        request.model_spec.signature_name = contract.SIGNATURE
        request.inputs[contract.HISTORY_ITEM_IDS].CopyFrom(string_tensor([query.history or [""]]))
        request.inputs[contract.HISTORY_NEGATIVE].CopyFrom(int64_tensor([query.negative or [0]]))
        if retriever == contract.EXPLICIT:
            request.inputs[contract.TOPICS].CopyFrom(string_tensor([query.topics]))
        return self.stub.Predict.future(request, timeout=timeout)

    def _outputs(self, retriever: str, call) -> dict:
        """The tower's outputs `{name: array}` of a finished Predict call."""
        try:
            response = call.result()
        except grpc.RpcError as err:
            code = err.code()
            if code not in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INVALID_ARGUMENT):
                code = grpc.StatusCode.UNAVAILABLE
            raise UpstreamError(code, f"model server {self.cfg.model_server}, {contract.USER_MODEL[retriever]}: "
                                      f"{err.code().name}: {err.details()}") from None
        return {k: to_numpy(v)[0] for k, v in response.outputs.items()}

    def gather(self, query: Query, loaded: dict, deadline: float) -> tuple[Lists, float, float]:
        """Calls the user towers concurrently and searches each retriever's
        embeddings as soon as its tower answers (on `_pool`, so the implicit
        ANN overlaps the explicit tower call and the explicit searches).

        Returns:
          `(lists, towers_done, searches_done)` (`time.monotonic()` of the
          last tower answer and of the last search).
        """
        timeout = max(0.001, deadline - time.monotonic())
        # Global item number -> in the history; numbered first, sized after
        # (an index loading meanwhile may number new items), plus an always
        # False last entry that item -1 reads.
        known = [n for n in map(self.numbers.number.get, query.history) if n is not None]
        seen = np.zeros(max(len(self.numbers.ids), max(known, default=-1) + 1) + 1, bool)
        seen[known] = True
        parts: dict[str, concurrent.futures.Future] = {}
        for retriever in contract.RETRIEVERS:
            if retriever in loaded and (query.topics if retriever == contract.EXPLICIT else query.history):
                call = self._predict(retriever, loaded[retriever].version, query, timeout)
                part = parts[retriever] = concurrent.futures.Future()
                call.add_done_callback(functools.partial(self._submit_part, part, retriever, query, loaded, seen))
        done = [self._wait(part, retriever, deadline) for retriever, part in parts.items()]
        now = time.monotonic()
        return (_concat_parts([p for p, _, _ in done]), max((t for _, t, _ in done), default=now),
                max((t for _, _, t in done), default=now))

    def _wait(self, part: concurrent.futures.Future, retriever: str, deadline: float):
        """A retriever's part; raises its UpstreamError, or DEADLINE_EXCEEDED
        when it is not done `SEARCH_GRACE_S` after the deadline (a tower call
        ends by the deadline; this bounds the searches after it)."""
        concurrent.futures.wait([part], timeout=max(0.0, deadline - time.monotonic()) + SEARCH_GRACE_S)
        if not part.done():
            raise UpstreamError(grpc.StatusCode.DEADLINE_EXCEEDED,
                                f"model server {self.cfg.model_server}, {contract.USER_MODEL[retriever]}: "
                                f"no answer and searches {SEARCH_GRACE_S} s after the deadline")
        return part.result()

    def _submit_part(self, part: concurrent.futures.Future, retriever, query, loaded, seen, call) -> None:
        """Done-callback of a tower call: its searches go to the pool."""
        answered = time.monotonic()

        def run():
            try:
                outputs = self._outputs(retriever, call)
                part.set_result((self._part(retriever, query, loaded[retriever], outputs, seen), answered,
                                 time.monotonic()))
            except BaseException as err:  # noqa: BLE001  (handed to the request thread)
                part.set_exception(err)
        try:
            self._pool.submit(run)
        except RuntimeError as err:  # the pool is shut down (service stopping)
            part.set_exception(UpstreamError(grpc.StatusCode.UNAVAILABLE, f"retrieval service stopping: {err}"))

    def _part(self, retriever: str, query: Query, index, out: dict, seen: np.ndarray) -> Lists:
        """One ANN query per valid embedding of one retriever, filtered
        (history, topics)."""
        total = query.budget
        valid = np.flatnonzero(out[contract.MASK])
        if retriever == contract.EXPLICIT:
            valid = valid[valid < len(query.topics)]
        if not len(valid):
            return _no_lists()
        vectors = out[contract.EMBEDDINGS][valid].astype(np.float32)
        if retriever == contract.IMPLICIT:
            imp = np.maximum(out[contract.IMPORTANCE][valid].astype(np.float64), 0)
            weight = imp * len(imp) / imp.sum() if imp.sum() > 0 else np.ones(len(imp))
            depth = total + len(query.history)
        else:
            imp = weight = np.ones(len(valid))
            depth = int(total * self.cfg.overfetch) + len(query.history)
        found, found_scores, keep, how = self._search(
            index, vectors, min(depth, len(index.row_item)),
            [query.topics[e] for e in valid] if retriever == contract.EXPLICIT else None,
            total + len(query.history))
        items = np.where(found >= 0, index.row_item[np.maximum(found, 0)], -1)
        usable = ~seen[items] & keep & (found >= 0)  # (item -1 reads the last, always False, entry)
        rows, scores = [], []
        for j in range(len(valid)):
            # A list never needs more than `total` candidates: the rest
            # would only widen the merge.
            take = np.flatnonzero(usable[j])[:total]
            rows.append(items[j][take])
            scores.append(found_scores[j][take])
        topics = [query.topics[e] if retriever == contract.EXPLICIT else "" for e in valid]
        return Lists(_stack(rows, -1), _stack(scores, -np.inf).astype(np.float32), [retriever] * len(valid),
                     [int(e) for e in valid], topics, weight, imp, how)

    def _search(self, index, vectors: np.ndarray, depth: int, topics: list[str] | None, needed: int):
        """ANN search; for explicit embeddings, a search restricted to the
        items carrying the condition topic (the relevance post-filter).

        Per explicit embedding, the first that applies:
        - the topic has its own index (`common/topic_index.py`, built for
          large topics): a top-`needed` search of it (`topic_index`);
        - the topic is carried by at most `exact_topic_max_items` items: scored
          exactly over those items (the index's own float dataset) (`exact_topic`);
        - else the corpus index is searched `depth` deep (overfetch x budget +
          history) and filtered (`ann`); if fewer than `needed` (budget +
          history) carriers survive, the exact topic search replaces it.
        Either way every explicit list holds only carriers.

        Returns: `(rows [K, D], scores [K, D], keep [K, D] bool, how [K])`.
        """
        if topics is None:
            found, scores = index.index.search(vectors, depth)
            return found, scores, np.ones(found.shape, bool), ["ann"] * len(found)
        exact_ok = index.embeddings is not None
        own = index.index.topic_indexes
        direct = [t in own or (exact_ok and index.topic_size(t) <= self.cfg.exact_topic_max_items) for t in topics]
        ann = [j for j, d in enumerate(direct) if not d]
        found, scores = index.index.search(vectors[ann], depth) if ann else (None, None)
        rows, row_scores, keep, how = [], [], [], []
        for j, topic in enumerate(topics):
            if topic in own:
                top, top_scores = own[topic].search(vectors[j], needed)
                # A tree searches some leaves only: a topic index can come
                # back short of a large budget; then the exact search.
                if (top[0] >= 0).sum() >= min(needed, len(own[topic].rows)) or not exact_ok:
                    rows.append(top[0])
                    row_scores.append(top_scores[0])
                    keep.append(top[0] >= 0)
                    how.append("topic_index")
                    continue
            if not direct[j]:
                a = ann.index(j)
                carries = index.carries(topic, found[a])
                if carries.sum() >= needed or not exact_ok:
                    rows.append(found[a])
                    row_scores.append(scores[a])
                    keep.append(carries)
                    how.append("ann")
                    continue
            members = index.topic_rows(topic)
            top, top_scores = (
                exact_search(index.topic_embeddings(topic), vectors[j:j + 1], min(needed, len(members)))
                if len(members) else (np.zeros((1, 0), np.int64), np.zeros((1, 0), np.float32)))
            rows.append(members[top[0]])  # k <= members: no padding
            row_scores.append(top_scores[0])
            keep.append(np.ones(top.shape[1], bool))
            how.append("exact_topic")
        return _stack(rows, -1), _stack(row_scores, -np.inf), _stack(keep, False), how

    def _candidates(self, lists: Lists, loaded: dict, items: np.ndarray, source: np.ndarray,
                    position: np.ndarray) -> bytes:
        """The merged candidates as `RetrieveResponse.candidates` wire bytes."""
        sources = [wire.source_fields(r, e, t) for r, e, t in zip(lists.retriever, lists.embedding, lists.topic)]
        retrievers = list(loaded)
        table = np.array([retrievers.index(r) for r in lists.retriever], np.int64)[source]
        rows = np.zeros(len(items), np.int64)
        for t, retriever in enumerate(retrievers):
            mine = table == t
            rows[mine] = loaded[retriever].item_row[items[mine]]
        return wire.candidates([loaded[r].fields for r in retrievers], table, rows, lists.scores[source, position],
                               sources, source)

    def retrieve(self, request, timeout: float | None = None) -> Answer:
        """Answers one `RetrieveRequest`.

        Raises:
          RequestError: INVALID_ARGUMENT.
          UpstreamError: the model server failed (its status code).
        """
        from serving.protos import retrieval_pb2 as pb

        started = time.monotonic()
        deadline = started + min(timeout or 1e9, self.cfg.deadline_ms / 1000.0)
        with self._lock:
            loaded = dict(self.loaded)
        if not loaded:
            raise UpstreamError(grpc.StatusCode.UNAVAILABLE, f"no index loaded from {self.cfg.export_dir}")
        query = self.validate(request, loaded)
        lists, t_towers, t_ann = self.gather(query, loaded, deadline)
        t_ann = max(t_ann, t_towers)
        header = pb.RetrieveResponse(sampled_topics=query.topics, ignored_topics=query.ignored_topics,
                                     merge_policy=query.policy,
                                     unknown_items=sum(1 for i in query.history if i not in self.numbers.number))
        for retriever, index in loaded.items():
            header.versions[retriever] = index.version
        candidates, count = b"", 0
        collected = merged = time.monotonic()
        if len(lists.rows):
            budget = budgets(lists.weight[None, :], np.ones((1, len(lists.weight)), bool), query.budget)[0]
            items, source, position = merge(query.policy, lists.rows, lists.scores, budget, query.budget,
                                            floor=self.cfg.score_floor)
            merged = time.monotonic()
            contributed = np.bincount(source, minlength=len(budget)) if len(source) else np.zeros(len(budget), int)
            for j in range(len(budget)):
                header.embeddings.add(retriever=lists.retriever[j], embedding=lists.embedding[j],
                                      condition_topic=lists.topic[j], importance=float(lists.importance[j]),
                                      budget=int(budget[j]), contributed=int(contributed[j]),
                                      search=lists.search[j])
            candidates, count = self._candidates(lists, loaded, items, source, position), len(items)
        done = time.monotonic()
        spans = (t_towers - started, t_ann - t_towers, collected - t_ann, merged - collected, done - merged,
                 done - started)
        for stage, seconds in zip(STAGES, spans, strict=True):  # one span per stage, in STAGES order
            header.stage_ms[stage] = round(seconds * 1000.0, 3)
        return Answer(header, candidates, count)
