"""Evaluation memory and time at large corpora, and training input throughput.

Evaluation: SPEC §6 exact evaluation (`trainer.evaluation.evaluate_scorer`,
the `ModelScorer` scoring path) of `--records` records with K random user
embeddings against a corpus of random item embeddings, per corpus size, each
in a fresh subprocess so its peak RSS is its own. Reports seconds, records/s,
the peak of NumPy/Python allocations during the evaluation (tracemalloc),
the process's peak RSS, and the size the unchunked `[256, K, C]` score array
alone would have had.

Input: examples/s read and parsed in steady state (after 10 batches) by
`trainer.data.build_dataset` (shuffled, interleaved, validation time
filter, batch 256) from a prepared world's training TFRecords, for 1 and 2 parallel reads; and with 1 and 2 worker
processes of one MultiWorkerMirroredStrategy job on this machine (TF_CONFIG
on loopback, the training job's strategy and dataset sharding: with enough
files each worker reads only its own), each iterating the distributed
dataset: examples/s of the job = examples delivered on all workers / the
slowest worker's seconds.

  python -m benchmarks.evaluation [--corpus 100000,1000000] [--records 2000]
                                  [--prepared DIR] [--out benchmarks/results/evaluation.json]

Without `--prepared` it prepares the `synthetic-small` world into a temporary
directory.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np


def _scorer(items: np.ndarray, emb: np.ndarray, mask: np.ndarray):
    """A `ModelScorer` over fixed random embeddings (its scoring code, no model)."""
    from trainer import features
    from trainer.evaluation import ModelScorer

    class RandomScorer(ModelScorer):
        def __init__(self):
            self.items = items

        def embed(self, batch, with_importance=False):
            rows = np.asarray([int(u[1:]) for u in batch[features.USER_ID].tolist()])
            return emb[rows], mask[rows]

    return RandomScorer()


def measure_evaluation(size: int, records: int, k: int, dim: int, chunk_size: int) -> dict:
    """One corpus size, in this process (run it in a fresh one for RSS)."""
    import tracemalloc

    from trainer import features
    from trainer.evaluation import Corpus, evaluate_scorer

    rng = np.random.default_rng(0)
    ids = np.asarray([b"%d" % c for c in range(size)], object)
    corpus = Corpus(ids, {i: c for c, i in enumerate(ids)}, [frozenset()] * size, np.ones(size))
    items = rng.normal(size=(size, dim)).astype(np.float32)
    emb = rng.normal(size=(records, k, dim)).astype(np.float32)
    mask = rng.random((records, k)) < 0.8
    mask[:, 0] = True
    history = rng.integers(0, size, (records, 50))
    batches = []
    for lo in range(0, records, 256):
        hi = min(lo + 256, records)
        batches.append({
            features.USER_ID: np.asarray([b"u%d" % r for r in range(lo, hi)], object),
            features.TARGET_ITEM_ID: ids[rng.integers(0, size, hi - lo)],
            features.HISTORY_ITEM_IDS: ids[history[lo:hi]]})
    scorer = _scorer(items, emb, mask)
    tracemalloc.start()
    start = time.perf_counter()
    out = evaluate_scorer(scorer, corpus, iter(batches), coverage_k=100, chunk_size=chunk_size)
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"corpus": size, "records": records, "embeddings": k, "dim": dim, "chunk_size": chunk_size,
            "seconds": seconds, "records_per_s": records / seconds, "tracemalloc_peak_mib": peak / 2**20,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "corpus_embeddings_mib": items.nbytes / 2**20,
            "unchunked_scores_mib": 256 * k * size * 4 / 2**20,
            "hr_at_100": float((out.ranks <= 100).mean())}


INPUT_BATCH = 256
WARMUP_BATCHES = 10  # fill the 20,000-record shuffle buffer before the clock starts


def _training_input(prepared: str, **kwargs):
    """The training job's dataset (synthetic-small config, its training
    carve, batch 256, repeated) over `prepared`; `kwargs` to `build_dataset`.

    Returns: `(dataset, training file count)`.
    """
    from trainer.config import load_config
    from trainer.data import build_dataset, match_files
    from trainer.model_io import train_pattern
    from trainer.validation import training_carve

    cfg = load_config("synthetic-small")
    pattern = train_pattern(prepared, cfg)
    ds = build_dataset(pattern, INPUT_BATCH, cfg.data.history_length, seed=0, repeat=True,
                       time_range=training_carve(pattern, cfg)["train_range"], **kwargs)
    return ds, len(match_files(pattern))


def _steady_examples(next_examples, batches: int) -> tuple[int, float]:
    """`(examples, seconds)` of `batches` calls of `next_examples()` (examples
    in the next batch), after `WARMUP_BATCHES` untimed ones."""
    for _ in range(WARMUP_BATCHES):
        next_examples()
    start = time.perf_counter()
    n = sum(next_examples() for _ in range(batches))
    return n, time.perf_counter() - start


def measure_input(prepared: str, reads: int, batches: int, repeats: int) -> dict:
    """Examples/s of the training input pipeline (read, filter, parse, pad),
    steady state (`_steady_examples`)."""
    rates = []
    for _ in range(repeats + 1):  # the first round warms up
        ds = iter(_training_input(prepared, num_parallel_reads=reads)[0])
        n, seconds = _steady_examples(lambda: int(next(ds)["user_id"].shape[0]), batches)
        rates.append(n / seconds)
    return {"parallel_reads": reads, "batches": batches, "examples_per_s": statistics.median(rates[1:]),
            "range": [min(rates[1:]), max(rates[1:])]}


def measure_workers(prepared: str, workers: int, batches: int) -> dict:
    """Examples/s of the training input with `workers` worker processes of
    one job (`_input_worker` in each)."""
    import os

    from benchmarks import free_ports

    hosts = [f"127.0.0.1:{p}" for p in free_ports(workers)] if workers >= 2 else []
    procs = []
    for index in range(workers):
        env = dict(os.environ)
        if hosts:
            env["TF_CONFIG"] = json.dumps({"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}})
        cmd = [sys.executable, "-m", "benchmarks.evaluation", "--_input_worker", str(workers), "--prepared", prepared,
               "--input_batches", str(batches)]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    done = []
    for proc in procs:
        out, err = proc.communicate(timeout=900)
        if proc.returncode != 0:
            raise RuntimeError(f"input worker failed ({proc.returncode}): {err[-2000:]}")
        done.append(json.loads(out.strip().splitlines()[-1]))
    examples = sum(d["examples"] for d in done)
    seconds = max(d["seconds"] for d in done)
    return {"workers": workers, "global_batches": batches, "examples": examples, "seconds": round(seconds, 2),
            "examples_per_s": examples / seconds, "files_per_worker": [d["files"] for d in done],
            "sharded_by_file": done[0]["by_file"]}


def _input_worker(prepared: str, workers: int, batches: int) -> dict:
    """One worker: the training job's strategy and dataset, `batches` global
    batches in steady state (`_steady_examples`); its examples and seconds."""
    from trainer import runtime
    from trainer.data import shards_by_file

    strategy = runtime.make_strategy(runtime.resolve(model_dir="unused"))
    replicas = strategy.num_replicas_in_sync
    ds, files = _training_input(prepared, num_workers=workers, num_replicas=replicas)
    batches_in = iter(strategy.experimental_distribute_dataset(ds))

    def local_examples() -> int:
        values = strategy.experimental_local_results(next(batches_in))
        return sum(int(v["user_id"].shape[0]) for v in values)

    n, seconds = _steady_examples(local_examples, batches)
    by_file = workers >= 2 and shards_by_file(files, workers, INPUT_BATCH, replicas)
    return {"examples": n, "seconds": seconds, "files": files // workers if by_file else files,
            "by_file": bool(by_file)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", default="100000,1000000", help="comma-separated corpus sizes")
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--embeddings", type=int, default=4)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--chunk_size", type=int, default=0, help="0 = trainer.evaluation.CHUNK_SIZE")
    parser.add_argument("--prepared", default="", help="a prepared synthetic world (default: prepare one)")
    parser.add_argument("--input_batches", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/evaluation.json")
    parser.add_argument("--input_workers", default="1,2", help="worker processes of one job (comma-separated)")
    parser.add_argument("--_one", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--_input_worker", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._input_worker:
        import trainer  # noqa: F401  (legacy-Keras switch before TensorFlow loads)

        print(json.dumps(_input_worker(args.prepared, args._input_worker, args.input_batches)))
        return 0

    from trainer.evaluation import CHUNK_SIZE

    chunk = args.chunk_size or CHUNK_SIZE
    if args._one:
        print(json.dumps(measure_evaluation(args._one, args.records, args.embeddings, args.dim, chunk)))
        return 0
    evaluation = []
    for size in (int(s) for s in args.corpus.split(",") if s):
        cmd = [sys.executable, "-m", "benchmarks.evaluation", "--_one", str(size), "--records", str(args.records),
               "--embeddings", str(args.embeddings), "--dim", str(args.dim), "--chunk_size", str(chunk)]
        done = subprocess.run(cmd, check=True, capture_output=True, text=True)
        evaluation.append(json.loads(done.stdout.strip().splitlines()[-1]))

    import trainer  # noqa: F401  (legacy-Keras switch before TensorFlow loads)

    with tempfile.TemporaryDirectory() as tmp:
        prepared = args.prepared
        if not prepared:
            from beam.run import IN_MEMORY, run_prepare
            from trainer.config import load_config

            prepared = f"{tmp}/synthetic-small"
            run_prepare(load_config("synthetic-small"), prepared, list(IN_MEMORY))
        inputs = [measure_input(prepared, reads, args.input_batches, args.repeats) for reads in (1, 2)]
        workers = [measure_workers(prepared, int(w), args.input_batches)
                   for w in args.input_workers.split(",") if w]

    print(f"Exact evaluation, {args.records} records, K={args.embeddings}, d={args.dim}, chunk {chunk} columns")
    print("| corpus | s | records/s | peak tracemalloc MiB | peak RSS MiB | corpus embeddings MiB "
          "| unchunked [256, K, C] MiB |")
    print("|---|---|---|---|---|---|---|")
    for r in evaluation:
        print(f"| {r['corpus']:,} | {r['seconds']:.1f} | {r['records_per_s']:.0f} | "
              f"{r['tracemalloc_peak_mib']:.0f} | {r['peak_rss_mib']:.0f} | {r['corpus_embeddings_mib']:.0f} | "
              f"{r['unchunked_scores_mib']:,.0f} |")
    print(f"\nTraining input ({args.input_batches} batches of 256, median of {args.repeats})")
    print("| parallel reads | examples/s | range |")
    print("|---|---|---|")
    for r in inputs:
        print(f"| {r['parallel_reads']} | {r['examples_per_s']:,.0f} | "
              f"{r['range'][0]:,.0f}-{r['range'][1]:,.0f} |")
    print(f"\nTraining input, worker processes of one job ({args.input_batches} global batches of 256)")
    print("| workers | examples/s (all workers) | seconds (slowest) | files read per worker | sharded by file |")
    print("|---|---|---|---|---|")
    for r in workers:
        print(f"| {r['workers']} | {r['examples_per_s']:,.0f} | {r['seconds']:.1f} | "
              f"{', '.join(map(str, r['files_per_worker']))} | {'yes' if r['sharded_by_file'] else 'no'} |")
    from benchmarks import write_result

    write_result(args.out, {"evaluation": evaluation, "input": inputs, "input_workers": workers,
                            "prepared": args.prepared or "synthetic-small"})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
