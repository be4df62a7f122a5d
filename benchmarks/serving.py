"""Serving load test: `mer serve` over loopback gRPC against a large synthetic export.

What it measures (the serving issue's bars):
  load   closed-loop traffic from `--levels` concurrent clients (one
         `serving.client.RetrievalClient` per thread), `--seconds` each (the
         largest level `--soak_seconds` when that is longer): p50/p90/p99
         latency, throughput, errors (failed requests by gRPC code, and
         answers without `budget` de-duplicated candidates: SHORT_RESPONSE,
         DUPLICATE_CANDIDATES), the service's own split from
         `RetrieveResponse.stage_ms` (`serving.client.STAGES`: towers = the
         model-server round trip, ann = the ScaNN queries and filters,
         collect = the lists picked up and the response header, merge =
         budgets and merge, response = the candidates' bytes, total;
         client - total = gRPC transport and queueing), server CPU per request, and the cores other processes
         kept busy meanwhile (`/proc/stat`: the machine may be shared).
  breakdown  one client, the same histories with no followed topics
         (implicit embeddings only) and with the 5 most common topics.
  swap   while `--swap_clients` clients send traffic, version 2 of every
         tower and index is written into the export base (each version
         directory copied from version 1 into a hidden sibling and renamed
         into place: the same weights, written the way `save_version` and
         `common.item_index.save` write); traffic runs until responses report
         versions {implicit: 2, explicit: 2}; failed requests are counted.
  Bars: p90 <= 15 ms at 1 client; zero errors in a >= 60 s run at 16
  clients; zero failed requests across the hot swap.

The export (cached under `--cache`, one directory per size and seed, reused
when its build.json exists): a synthetic `ItemTable` of `--items` items
(`benchmarks.export.synthetic_item_table`, vocabulary files on disk), a DCM
(7 implicit embeddings, all valid: K_im = 6 + the global one, SAR off) and a
CR model built from the `synthetic-small` model config with RANDOM INIT
(untrained), their user and item towers saved as version 1 by
`export.exporter.save_version` with warmup requests, item embeddings from
`model.item_embeddings`, one ScaNN index per retriever (`common.item_index`,
automatic config) and the serving files. Users: histories of 50 items drawn
from 3 topics each, 5% negative, 5 followed topics (topics drawn by
popularity), fixed seed; every request asks for `--budget` candidates.

The stack runs as `python -m mer serve --port 0 --model_server_port 0` in
its own process (model server + retrieval service, as deployed), so the load
generator does not share its GIL; both processes share the machine's cores.

  python -m benchmarks.serving [--items 1000000] [--quick] [--seconds 20]
                               [--soak_seconds 60] [--levels 1,4,16]
                               [--cache benchmarks/results/serving_export]
                               [--out benchmarks/results/serving.json]

`--quick`: 20,000 items, 3 s per level, no soak (smoke runs and the test).
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import pathlib
import platform
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from typing import NamedTuple

import numpy as np
from benchmarks import write_result
from serving.client import STAGES

REPO = pathlib.Path(__file__).resolve().parents[1]
log = logging.getLogger("benchmarks.serving")
HISTORY = 50  # engagements per request (the towers' history_length)
HOME_TOPICS = 3  # topics a synthetic user's history is drawn from
FOLLOWED = 5  # followed topics per request (= K_ex, so all are used)
NEGATIVE_SHARE = 0.05
NUM_USERS = 1000
WARMUP_USERS = 64  # rows of the user towers' warmup requests
EMBED_BATCH = 65536
SWAPPED = 2  # the version written during the hot swap
# Cached exports of another format are rebuilt (2: explicit topic indexes;
# 3: 7 implicit embeddings counting the global interest, all valid; 2 had
# 7 + 1, of which 7 valid on average).
EXPORT_FORMAT = 3
IMPLICIT_EMBEDDINGS = 7  # SPEC §2.5's load: 7 implicit + 5 explicit embeddings
# Answered, but not with `budget` distinct candidates.
VIOLATIONS = ("SHORT_RESPONSE", "DUPLICATE_CANDIDATES")
BARS = {"p90_1_client_ms": 15.0, "soak_clients": 16, "soak_seconds": 60.0}


# -- the synthetic export -------------------------------------------------------------
def synthetic_users(table, count: int, seed: int) -> list[dict]:
    """`count` request bodies: 50-item histories drawn around 3 topics each.

    Each user has 3 home topics drawn by topic popularity (share of items
    carrying the topic) and a Dirichlet mix over them; each history item is a
    uniform item of a topic drawn from that mix; 5% are negative. The user
    follows the home topics and 2 more drawn by popularity.

    Returns: `[{"history": [50 ids], "negative": [50 0/1], "topics": [5]}]`.
    """
    rng = np.random.default_rng(seed + 1)
    carriers = [np.flatnonzero((table.topic_ids == t + 1).any(axis=1))
                for t in range(len(table.topics))]
    popularity = np.array([len(c) for c in carriers], np.float64)
    popularity /= popularity.sum()
    users = []
    for _ in range(count):
        home = rng.choice(len(carriers), size=HOME_TOPICS, replace=False, p=popularity)
        mix = rng.dirichlet(np.ones(HOME_TOPICS))
        picks = rng.choice(HOME_TOPICS, size=HISTORY, p=mix)
        rows = [carriers[home[p]][rng.integers(len(carriers[home[p]]))] for p in picks]
        ranked = rng.choice(len(carriers), size=len(carriers), replace=False, p=popularity)
        others = [t for t in ranked if t not in home][:FOLLOWED - HOME_TOPICS]
        users.append({"history": [table.ids[r - 1] for r in rows],
                      "negative": (rng.random(HISTORY) < NEGATIVE_SHARE).astype(int).tolist(),
                      "topics": [table.topics[t] for t in [*home, *others]]})
    return users


def _user_inputs(users: list[dict], explicit: bool) -> dict[str, np.ndarray]:
    """User-tower request inputs (`common.contract` names) of `users`."""
    from common import contract

    inputs = {contract.HISTORY_ITEM_IDS: np.array([u["history"] for u in users], dtype=object),
              contract.HISTORY_NEGATIVE: np.array([u["negative"] for u in users], dtype=np.int64)}
    if explicit:
        inputs[contract.TOPICS] = np.array([u["topics"] for u in users], dtype=object)
    return inputs


def _create_variables(model, users: list[dict]) -> None:
    """Builds every weight with one call of each tower on a 2-user batch."""
    from trainer import features
    from trainer.layers._keras import tf
    from trainer.model import create_variables

    two = users[:2]
    create_variables(model, {
        features.HISTORY_ITEM_IDS: tf.constant([u["history"] for u in two]),
        features.HISTORY_NEGATIVE: tf.constant([u["negative"] for u in two], tf.int64),
        features.TARGET_ITEM_ID: tf.constant([u["history"][-1] for u in two]),
        features.CONDITION_TOPIC: tf.constant([u["topics"][0] for u in two])})


def _recall(model, index, embeddings: np.ndarray, users: list[dict], explicit: bool) -> dict:
    """recall@100 of the index (and its topic indexes) vs exact search over
    the towers' unmasked embeddings of `users` (written as the index's
    recall.json)."""
    from common.item_index import recall_at_k
    from trainer.layers._keras import tf

    inputs = {k: tf.constant(v) for k, v in _user_inputs(users, explicit).items()}
    conditions = inputs.pop("topics", None)
    out = model.user_embeddings(inputs, training=False, conditions=conditions)
    queries = out["embeddings"].numpy()[out["mask"].numpy()]
    recall = recall_at_k(index, embeddings, queries, 100)
    recall["query_source"] = f"{len(users)} synthetic users of benchmarks/serving.py"
    return recall


def build_export(directory: pathlib.Path, num_items: int, seed: int) -> dict:
    """The served export under `directory/base` (once: reused when
    `directory/build.json` exists), its vocabularies and users.

    Returns: the build summary (also `directory/build.json`).
    """
    summary_path = directory / "build.json"
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        if summary.get("format") == EXPORT_FORMAT:
            return summary | {"reused": True}
        log.info("rebuilding %s: built by an older benchmark (format %s, now %s)", directory,
                 summary.get("format", 1), EXPORT_FORMAT)
    if directory.exists():
        shutil.rmtree(directory)  # an interrupted build
    from benchmarks.export import synthetic_item_table, write_vocabularies
    from common import contract
    from export.exporter import CATALOG, catalog_text, save_version, write_serving_files
    from common.item_index import build_index, retriever_config, save
    from export.serving_files import warmup_requests
    from export.towers import ItemTower, UserTower
    from trainer.config import load_config
    from trainer.layers._keras import keras, tf
    from trainer.model import build_model

    started = time.perf_counter()
    base = directory / "base"
    table = synthetic_item_table(num_items, seed)
    table.train_count[1:] = np.maximum(table.train_count[1:], 1)  # every item in the corpus
    write_vocabularies(table, directory)  # directory/vocab/{items,topics}.txt: the lookups' asset files
    users = synthetic_users(table, NUM_USERS, seed)
    (directory / "users.json").write_text(json.dumps(users))
    ids = np.asarray(table.ids, dtype=object)
    topics = [table.item_topics(i + 1) for i in range(num_items)]
    catalog = catalog_text(table)
    towers, indexes = [], []
    for kind, retriever in (("dcm", contract.IMPLICIT), ("cr", contract.EXPLICIT)):
        explicit = retriever == contract.EXPLICIT
        cfg = load_config("synthetic-small", [f"model.kind={kind}"])
        # SPEC's 7 implicit embeddings, all valid in every request: K_im
        # interests plus the global one (the default), and no single
        # assignment (with SAR a random-init DCM leaves clusters without an
        # item, masked: 4.75 of 7 valid on these users).
        cfg = load_config("synthetic-small", [f"model.kind={kind}", "model.single_assignment=false",
                                              f"model.num_interests={IMPLICIT_EMBEDDINGS - cfg.model.global_interest}"])
        keras.utils.set_random_seed(seed)
        model = build_model(cfg.model, table, seed=seed, asset_vocabularies=True)
        _create_variables(model, users)
        user_name, item_name = contract.USER_MODEL[retriever], contract.ITEM_MODEL[retriever]
        num = None if explicit else model.num_embeddings
        user = UserTower(model, cfg.data.history_length, num, explicit)
        user_warmup = warmup_requests(user_name, _user_inputs(users[:WARMUP_USERS], explicit))
        item_warmup = warmup_requests(item_name, {contract.ITEM_IDS: ids[:64]})
        for name, module, warmup, extra in ((user_name, user, user_warmup, None),
                                            (item_name, ItemTower(model), item_warmup, {CATALOG: catalog})):
            saved = save_version(module, str(base), name, 1, warmup, extra)
            towers.append({"model": name, "kind": kind, "seconds": saved["seconds"],
                           "warmup_requests": saved["warmup_requests"]})
        start = time.perf_counter()
        embeddings = np.concatenate([model.item_embeddings(tf.constant(ids[lo:lo + EMBED_BATCH])).numpy()
                                     for lo in range(0, num_items, EMBED_BATCH)])
        embed_s = time.perf_counter() - start
        index = build_index(embeddings, table.ids, topics, retriever_config(retriever))
        recall = _recall(model, index, embeddings, users[:100], explicit)
        save(index, contract.index_dir(str(base), retriever, 1), recall)
        indexes.append({"retriever": retriever, "items": num_items, "embed_seconds": round(embed_s, 2),
                        "build_seconds": round(index.build_seconds, 2),
                        "recall@100": round(recall["recall"], 4), "recall_queries": recall["queries"],
                        "topic_indexes": {t: len(i.rows) for t, i in index.topic_indexes.items()},
                        "topic_index_recall@100": (round(recall["topic_indexes"]["recall"], 4)
                                                   if "topic_indexes" in recall else None),
                        "config": {k: v for k, v in vars(index.config).items() if v is not None}})
        del model, user, index, embeddings
    write_serving_files(str(base))
    summary = {"format": EXPORT_FORMAT, "items": num_items, "seed": seed, "base": str(base), "users": NUM_USERS,
               "topics": len(table.topics), "towers": towers, "indexes": indexes,
               "seconds": round(time.perf_counter() - started, 1),
               "notes": [f"synthetic-small model config, RANDOM INIT (untrained): DCM ({IMPLICIT_EMBEDDINGS} "
                                   "embeddings) and CR",
                         "synthetic item table (benchmarks.export.synthetic_item_table), every item in "
                         "the corpus"]}
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")  # the commit marker: written last
    return summary | {"reused": False}


def served_export(cache: pathlib.Path, num_items: int, seed: int) -> tuple[dict, pathlib.Path, list[dict]]:
    """The cached export (`build_export`) at version 1 only, its serving files
    rewritten (absolute paths: right even if the cache moved).

    Returns: `(build summary, export base, request bodies)`.
    """
    from export.exporter import write_serving_files

    directory = cache / f"items-{num_items}-seed{seed}"
    export = build_export(directory, num_items, seed)
    base = directory / "base"
    drop_versions_above(base, 1)
    write_serving_files(str(base))
    return export, base, json.loads((directory / "users.json").read_text())


def drop_versions_above(base: pathlib.Path, version: int) -> list[str]:
    """Removes every model and index version above `version` (and hidden
    temporary siblings), so each run starts from the cached version 1."""
    from common import contract

    roots = [base / name for name in (*contract.USER_MODEL.values(), *contract.ITEM_MODEL.values())]
    roots += [base / contract.INDEX_DIR / r for r in contract.RETRIEVERS]
    dropped = []
    for root in roots:
        for entry in root.iterdir() if root.is_dir() else []:
            if (entry.name.isdigit() and int(entry.name) > version) or entry.name.startswith("."):
                shutil.rmtree(entry)
                dropped.append(str(entry))
    return dropped


def publish_copy(base: pathlib.Path, version: int) -> dict:
    """Version `version` of every tower and index, as a copy of version 1:
    copied into a hidden sibling, then renamed into place (the towers first,
    then the indexes, as `mer export` / `mer build-index` publish them).

    Returns: `{"towers_seconds", "indexes_seconds"}`.
    """
    from common import contract

    seconds = {}
    models = (*contract.USER_MODEL.values(), *contract.ITEM_MODEL.values())
    groups = (("towers", [base / name for name in models]),
              ("indexes", [base / contract.INDEX_DIR / r for r in contract.RETRIEVERS]))
    for group, roots in groups:
        start = time.perf_counter()
        for root in roots:
            staging = root / f".{version}.tmp-{uuid.uuid4().hex[:8]}"
            shutil.copytree(root / "1", staging)
            os.rename(staging, root / str(version))
        seconds[f"{group}_seconds"] = round(time.perf_counter() - start, 2)
    return seconds


# -- the server process ----------------------------------------------------------------
class Server:
    """`python -m mer serve` in a child process; `address` once it is ready.

    Args:
      base: the export base.
      log_path: the child's stderr (its logs).
      timeout: seconds to wait for the ready line.

    Raises:
      RuntimeError: the server exited or did not get ready (with its log's tail).
    """

    def __init__(self, base: pathlib.Path, log_path: pathlib.Path, timeout: float = 600.0,
                 extra_args: list[str] = ()):
        self.log_path = log_path
        self.shutdown: dict | None = None  # set by `stop`
        command = [sys.executable, "-m", "mer", "serve", "--export_dir", str(base.resolve()), "--port", "0",
                   "--model_server_port", "0", *extra_args]
        started = time.perf_counter()
        self._log = open(log_path, "w")  # noqa: SIM115  (closed in stop)
        self.process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=self._log,
                                        text=True)
        lines: queue.Queue = queue.Queue()

        def read() -> None:
            for line in self.process.stdout:
                lines.put(line)
            lines.put(None)  # the server exited

        threading.Thread(target=read, name="serve-stdout", daemon=True).start()
        self.ready = None
        while self.ready is None:
            try:
                line = lines.get(timeout=max(0.0, timeout - (time.perf_counter() - started)))
            except queue.Empty:
                self.stop()
                raise RuntimeError(f"`mer serve` not ready in {timeout:.0f} s; log: {self.tail()}") from None
            if line is None:
                code = self.process.wait()
                self._log.close()
                raise RuntimeError(f"`mer serve` exited with status {code} before it was ready; "
                                   f"log {log_path}:\n{self.tail()}")
            try:
                ready = json.loads(line)
            except ValueError:
                continue
            if isinstance(ready, dict) and "retrieval" in ready:
                self.ready = ready
        self.startup_seconds = time.perf_counter() - started
        self.address = self.ready["retrieval"]

    def tail(self, lines: int = 20) -> str:
        """The last lines of the server's log (the child writes it directly)."""
        return "\n".join(self.log_path.read_text().splitlines()[-lines:])

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the server process so far (Linux /proc)."""
        with open(f"/proc/{self.process.pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        """SIGTERM (what `mer serve` shuts down on), SIGKILL after 60 s;
        `shutdown` says how it went (exit code, seconds, killed)."""
        if self.process.poll() is None:
            started, killed = time.perf_counter(), False
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                killed = True
                self.process.kill()
                self.process.wait()
            self.shutdown = {"exit_code": self.process.returncode, "killed": killed,
                             "seconds": round(time.perf_counter() - started, 2), "exited_before_sigterm": False}
        elif self.shutdown is None:  # it had exited by itself
            self.shutdown = {"exit_code": self.process.returncode, "killed": False, "seconds": None,
                             "exited_before_sigterm": True}
        self._log.close()


# -- traffic ---------------------------------------------------------------------------
class Answer(NamedTuple):
    """One answered request."""

    sent: float  # perf_counter seconds
    latency_ms: float  # as the client saw it
    stage_ms: tuple  # the response's stage_ms, in STAGES order
    candidates: int
    versions: dict  # retriever -> model version
    embeddings: dict  # retriever -> embeddings used


class Traffic:
    """Closed-loop traffic: `clients` threads, each with its own channel,
    sending the next user's request as soon as the last one is answered.

    Args:
      address: the retrieval service.
      users: request bodies (`synthetic_users`); client c starts at user
        c * len(users) // clients.
      clients: concurrent clients.
      budget: candidates asked for; a response with fewer is counted as
        error `SHORT_RESPONSE`, one with a repeated item as
        `DUPLICATE_CANDIDATES`.
      topics: followed topics sent instead of each user's own (None = theirs).
    """

    def __init__(self, address: str, users: list[dict], clients: int, budget: int,
                 topics: list[str] | None = None):
        self.address, self.users, self.clients, self.budget = address, users, clients, budget
        self.topics = topics  # None = each user's own followed topics
        self.stop_event = threading.Event()
        self.records: list[Answer] = []
        self.errors: collections.Counter = collections.Counter()
        self.messages: list[str] = []
        self.latest_versions: dict = {}
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def _client(self, c: int) -> None:
        import grpc

        from serving.client import RetrievalClient

        i = c * len(self.users) // self.clients
        records, errors = [], collections.Counter()
        with RetrievalClient(self.address, timeout=10.0) as client:
            while not self.stop_event.is_set():
                user = self.users[i % len(self.users)]
                i += 1
                sent = time.perf_counter()
                try:
                    topics = user["topics"] if self.topics is None else self.topics
                    response = client.retrieve(user["history"], user["negative"], topics, self.budget)
                except grpc.RpcError as err:
                    errors[err.code().name] += 1
                    self.messages.append(f"{err.code().name}: {err.details()}")
                    continue
                latency = (time.perf_counter() - sent) * 1000.0
                ids = [c.item_id for c in response.candidates]
                distinct = len(set(ids))
                violation = ("DUPLICATE_CANDIDATES" if distinct != len(ids)
                             else "SHORT_RESPONSE" if len(ids) != self.budget else None)
                if violation:
                    errors[violation] += 1
                    spent = ", ".join(f"{e.retriever[:2]}{e.embedding} {e.contributed}/{e.budget}"
                                      for e in response.embeddings)
                    self.messages.append(f"{violation}: {len(ids)} candidates ({distinct} distinct) of "
                                         f"{self.budget}; contributed/budget per embedding: {spent}")
                versions = dict(response.versions)
                self.latest_versions = versions
                used = collections.Counter(e.retriever for e in response.embeddings)
                stages = tuple(response.stage_ms.get(s, np.nan) for s in STAGES)
                records.append(Answer(sent, latency, stages, len(ids), versions, dict(used)))
        with self._lock:
            self.records.extend(records)
            self.errors.update(errors)

    def start(self) -> Traffic:
        self.started = time.perf_counter()
        self.cpu_started = sum(os.times()[:2])
        self._threads = [threading.Thread(target=self._client, args=(c,), name=f"client-{c}")
                         for c in range(self.clients)]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> Traffic:
        self.stop_event.set()
        for thread in self._threads:
            thread.join()
        self.seconds = time.perf_counter() - self.started
        self.client_cpu_seconds = sum(os.times()[:2]) - self.cpu_started
        self.records.sort(key=lambda a: a.sent)
        return self


def _percentiles(values) -> dict:
    values = np.asarray(values, np.float64)
    if not len(values):
        return {"mean": None, "p50": None, "p90": None, "p99": None}
    return {"mean": round(float(values.mean()), 3),
            **{f"p{q}": round(float(np.percentile(values, q)), 3) for q in (50, 90, 99)}}


def summarize(traffic: Traffic) -> dict:
    """Latency, throughput, errors and the stage split of one traffic run."""
    rows = traffic.records
    latency = np.array([a.latency_ms for a in rows])
    stages = {s: np.array([a.stage_ms[j] for a in rows]) for j, s in enumerate(STAGES)}
    stages["client - total"] = latency - stages["total"] if len(rows) else latency
    used = collections.Counter()
    for a in rows:
        used.update(a.embeddings)
    errors = sum(traffic.errors.values())
    failed = sum(n for code, n in traffic.errors.items() if code not in VIOLATIONS)  # no answer
    candidates = np.array([a.candidates for a in rows])
    return {"clients": traffic.clients, "seconds": round(traffic.seconds, 2),
            "requests": len(rows) + failed, "answered": len(rows), "ok": len(rows) + failed - errors,
            "throughput_rps": round(len(rows) / traffic.seconds, 2),
            "latency_ms": _percentiles(latency), "errors": errors, "failed_requests": failed,
            "errors_by_code": dict(traffic.errors), "error_examples": traffic.messages[:5],
            "candidates_min": int(candidates.min()) if len(rows) else None,
            "candidates_mean": round(float(candidates.mean()), 1) if len(rows) else None,
            "stage_ms": {s: _percentiles(v) for s, v in stages.items()},
            "embeddings_per_request": {k: round(v / max(1, len(rows)), 2)
                                       for k, v in sorted(used.items())},
            "client_cpu_ms_per_request": round(1000 * traffic.client_cpu_seconds / max(1, len(rows)), 2)}


def machine_busy_seconds() -> float:
    """CPU seconds all processes of the machine have used (Linux /proc/stat)."""
    with open("/proc/stat") as handle:
        ticks = [int(x) for x in handle.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _cpu_use(result: dict, traffic: Traffic, server: Server, server_cpu: float, busy: float) -> dict:
    """Server CPU per request, and the cores other processes kept busy meanwhile."""
    server_s = server.cpu_seconds() - server_cpu
    others = machine_busy_seconds() - busy - server_s - traffic.client_cpu_seconds
    return result | {"server_cpu_ms_per_request": round(1000 * server_s / max(1, result["answered"]), 2),
                     "other_processes_cores": round(max(0.0, others) / traffic.seconds, 2)}


def run_level(server: Server, users: list[dict], clients: int, seconds: float, budget: int,
              topics: list[str] | None = None) -> dict:
    """`clients` closed-loop clients for `seconds`; summary + CPU use."""
    server_cpu, busy = server.cpu_seconds(), machine_busy_seconds()
    traffic = Traffic(server.address, users, clients, budget, topics).start()
    time.sleep(seconds)
    traffic.stop()
    return _cpu_use(summarize(traffic), traffic, server, server_cpu, busy)


def run_hot_swap(server: Server, base: pathlib.Path, users: list[dict], clients: int, budget: int,
                 timeout: float) -> dict:
    """Version 2 published under traffic; waits for responses at {2, 2}."""
    wanted = {r: SWAPPED for r in ("implicit", "explicit")}
    server_cpu, busy = server.cpu_seconds(), machine_busy_seconds()
    traffic = Traffic(server.address, users, clients, budget).start()
    time.sleep(1.0)
    published_at = time.perf_counter()
    copied = publish_copy(base, SWAPPED)
    deadline = time.perf_counter() + timeout
    while (traffic.latest_versions != wanted and time.perf_counter() < deadline
           and server.process.poll() is None):
        time.sleep(0.05)
    swapped = traffic.latest_versions == wanted
    time.sleep(2.0)
    traffic.stop()
    result = _cpu_use(summarize(traffic), traffic, server, server_cpu, busy)
    first_new = next((a.sent for a in traffic.records if a.versions == wanted), None)
    old_after = sum(1 for a in traffic.records
                    if first_new is not None and a.sent > first_new and a.versions != wanted)
    result.update({
        "swapped": swapped, **copied,
        "seconds_to_new_versions": round(first_new - published_at, 2) if first_new else None,
        "versions_seen": sorted({json.dumps(a.versions, sort_keys=True) for a in traffic.records}),
        "old_version_answers_after_switch": old_after})
    return result


def common_topics(base: pathlib.Path, count: int) -> list[str]:
    """The `count` topics carried by the most items (from the implicit index's topics.txt)."""
    from common import contract

    path = pathlib.Path(contract.index_dir(str(base), contract.IMPLICIT, 1)) / contract.INDEX_TOPICS
    counts = collections.Counter(t for line in path.read_text().splitlines() for t in line.split("|") if t)
    return [t for t, _ in counts.most_common(count)]


def run_breakdown(server: Server, base: pathlib.Path, users: list[dict], seconds: float,
                  budget: int) -> list[dict]:
    """One client, the same histories with other followed topics: none
    (implicit embeddings only) and the 5 most common topics (the relevance
    post-filter finds its carriers in the first search)."""
    rows = []
    for name, topics in (("no followed topics (implicit only)", []),
                         (f"followed = the {FOLLOWED} most common topics", common_topics(base, FOLLOWED))):
        rows.append({"requests_with": name, "topics": topics,
                     **run_level(server, users, 1, seconds, budget, topics)})
    return rows


def source_state() -> dict:
    """The commit measured and the uncommitted files of the stages it runs
    (other work in progress changes the figures)."""
    def git(*args):
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else None

    status = git("status", "--porcelain", "--", "serving", "common", "export", "mer")
    return {"commit": git("rev-parse", "--short", "HEAD"),
            "uncommitted": [line.split(maxsplit=1)[1] for line in (status or "").splitlines()]}


# -- report ----------------------------------------------------------------------------
def bars(result: dict) -> dict:
    levels = {r["clients"]: r for r in result["levels"]}
    one = levels.get(1)
    soak = levels.get(BARS["soak_clients"])
    soaked = soak is not None and soak["seconds"] >= BARS["soak_seconds"]
    swap = result.get("hot_swap")
    return {
        "p90_1_client": {"text": f"p90 <= {BARS['p90_1_client_ms']:g} ms with one client",
                         "value_ms": one["latency_ms"]["p90"] if one else None,
                         "met": (one["latency_ms"]["p90"] <= BARS["p90_1_client_ms"]) if one else None},
        "soak_16_clients": {"text": f"zero errors in a {BARS['soak_seconds']:g} s run at "
                                    f"{BARS['soak_clients']} clients",
                            "errors": soak["errors"] if soak else None,
                            "seconds": soak["seconds"] if soak else None,
                            "met": (soak["errors"] == 0) if soaked else None},
        "hot_swap": {"text": "zero failed requests across a version hot swap",
                     "failed": swap["failed_requests"] if swap else None,
                     "met": (swap["failed_requests"] == 0 and swap["swapped"]) if swap else None},
    }


def _fmt(value, digits=2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_report(result: dict) -> None:
    export, shutdown = result["export"], result["server"].get("shutdown")
    if shutdown is None:
        stopped = ""
    elif shutdown["exited_before_sigterm"]:
        stopped = f", exited by itself with status {shutdown['exit_code']}"
    else:
        stopped = (f", stopped by SIGTERM in {shutdown['seconds']:.1f} s, exit {shutdown['exit_code']}"
                   f"{' (killed after 60 s)' if shutdown['killed'] else ''}")
    print(f"\n## Serving load test ({export['items']:,} items, budget {result['budget']}, "
          f"{result['machine']['cpus']} CPUs; export {'cached' if export['reused'] else 'built'}; "
          f"`mer serve` ready in {result['server']['startup_seconds']:.1f} s{stopped})\n")
    print("| clients | seconds | requests | throughput req/s | p50 ms | p90 ms | p99 ms | errors | of which "
          "failed / short / duplicates | candidates min / mean | server CPU ms/req | embeddings im+ex | "
          "other processes' cores |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in result["levels"]:
        lat, emb, codes = r["latency_ms"], r["embeddings_per_request"], r["errors_by_code"]
        print(f"| {r['clients']} | {r['seconds']:.0f} | {r['requests']:,} | {r['throughput_rps']:.1f} | "
              f"{_fmt(lat['p50'])} | {_fmt(lat['p90'])} | {_fmt(lat['p99'])} | {r['errors']} | "
              f"{r['failed_requests']} / {codes.get('SHORT_RESPONSE', 0)} / "
              f"{codes.get('DUPLICATE_CANDIDATES', 0)} | {r['candidates_min']} / "
              f"{_fmt(r['candidates_mean'], 1)} | {r['server_cpu_ms_per_request']:.1f} | "
              f"{emb.get('implicit', 0):g}+{emb.get('explicit', 0):g} | {r['other_processes_cores']:.2f} |")
    print("\nStage split (ms, from `stage_ms`; client - total = gRPC transport and queueing):\n")
    print("| clients | stage | mean | p50 | p90 | p99 |")
    print("|---|---|---|---|---|---|")
    for r in result["levels"]:
        for stage, s in r["stage_ms"].items():
            print(f"| {r['clients']} | {stage} | {_fmt(s['mean'])} | {_fmt(s['p50'])} | {_fmt(s['p90'])} | "
                  f"{_fmt(s['p99'])} |")
    if result.get("breakdown"):
        print("\nOne client, other followed topics (same histories):\n")
        print("| requests with | p50 ms | p90 ms | " + " | ".join(f"{k} mean" for k in STAGES)
              + " | short answers | other processes' cores |")
        print("|---|---|---|" + "---|" * len(STAGES) + "---|---|")
        one = next((r for r in result["levels"] if r["clients"] == 1), None)
        rows = ([{"requests_with": f"{FOLLOWED} followed topics (as above)", **one}] if one else [])
        for r in rows + result["breakdown"]:
            st = r["stage_ms"]
            lat = r["latency_ms"]
            print(f"| {r['requests_with']} | {_fmt(lat['p50'])} | {_fmt(lat['p90'])} | "
                  + " | ".join(_fmt(st[k]["mean"]) for k in STAGES)
                  + f" | {r['errors_by_code'].get('SHORT_RESPONSE', 0)} of {r['answered']} | "
                  f"{r['other_processes_cores']:.2f} |")
    swap = result.get("hot_swap")
    if swap:
        lat = swap["latency_ms"]
        print(f"\nHot swap ({swap['clients']} clients): {swap['requests']:,} requests in "
              f"{swap['seconds']:.1f} s, failed {swap['failed_requests']} (errors incl. short/duplicate "
              f"answers {swap['errors']}); versions 2 answered {_fmt(swap['seconds_to_new_versions'], 1)} s "
              f"after publishing (copy: towers {swap['towers_seconds']:.1f} s, indexes "
              f"{swap['indexes_seconds']:.1f} s); p50/p90/p99 {_fmt(lat['p50'])}/{_fmt(lat['p90'])}/"
              f"{_fmt(lat['p99'])} ms; versions seen {', '.join(swap['versions_seen'])}; other processes' "
              f"cores {swap['other_processes_cores']:.2f}")
    print()
    for name, bar in result["bars"].items():
        state = "not run" if bar["met"] is None else ("met" if bar["met"] else "NOT met")
        print(f"bar {name} ({bar['text']}): {state}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=None,
                        help="corpus size (default 1,000,000; --quick 20,000)")
    parser.add_argument("--quick", action="store_true", help="20,000 items, 3 s per level, no soak")
    parser.add_argument("--seconds", type=float, default=None,
                        help="seconds per level (default 20; --quick 3)")
    parser.add_argument("--soak_seconds", type=float, default=None,
                        help="seconds of the largest level when longer (default 60; --quick 0)")
    parser.add_argument("--levels", default="1,4,16", help="comma-separated concurrent clients")
    parser.add_argument("--swap_clients", type=int, default=4,
                        help="clients during the hot swap (0 = no swap)")
    parser.add_argument("--swap_timeout", type=float, default=600.0)
    parser.add_argument("--no_breakdown", dest="breakdown", action="store_false",
                        help="skip the one-client runs with other followed topics")
    parser.add_argument("--budget", type=int, default=1000)
    parser.add_argument("--serve_args", default="", help="more `mer serve` flags, space-separated "
                        "(e.g. '--tensorflow_intra_op_parallelism 1')")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", default="benchmarks/results/serving_export",
                        help="synthetic exports, one directory per size and seed (reused)")
    parser.add_argument("--out", default="benchmarks/results/serving.json")
    args = parser.parse_args(argv)
    items = args.items or (20_000 if args.quick else 1_000_000)
    seconds = args.seconds if args.seconds is not None else (3.0 if args.quick else 20.0)
    soak = args.soak_seconds if args.soak_seconds is not None else (0.0 if args.quick else 60.0)
    levels = [int(c) for c in args.levels.split(",") if c]
    if not levels or min(levels) < 1:
        parser.error(f"--levels {args.levels!r}: positive client counts, e.g. 1,4,16")

    from common.logs import setup_logging

    setup_logging()  # before TensorFlow loads (only the export build loads it here)
    import trainer  # noqa: F401  (legacy-Keras switch before TensorFlow loads)

    export, base, users = served_export(pathlib.Path(args.cache), items, args.seed)
    command = " ".join(["python -m benchmarks.serving", *(sys.argv[1:] if argv is None else argv)])
    result = {"command": command, "quick": args.quick, "budget": args.budget, "serve_args": args.serve_args,
              "export": export,
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "python": platform.python_version()}, "source": source_state(),
              "levels": []}
    server = Server(base, base.parent / "server.log", extra_args=args.serve_args.split())
    try:
        result["server"] = {"startup_seconds": round(server.startup_seconds, 1), "ready": server.ready}
        warm = Traffic(server.address, users, 1, args.budget).start()
        time.sleep(min(3.0, seconds))  # first requests: lazy gRPC/TF paths, caches
        result["warmup_requests"] = len(warm.stop().records)
        largest = max(levels)
        for clients in levels:
            run_s = max(seconds, soak) if clients == largest else seconds
            result["levels"].append(run_level(server, users, clients, run_s, args.budget))
        if args.breakdown:
            result["breakdown"] = run_breakdown(server, base, users, seconds, args.budget)
        if args.swap_clients:
            result["hot_swap"] = run_hot_swap(server, base, users, args.swap_clients, args.budget,
                                              args.swap_timeout)
    finally:
        server.stop()
        result.setdefault("server", {})["shutdown"] = server.shutdown
        drop_versions_above(base, 1)
    result["bars"] = bars(result)
    print_report(result)
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
