"""Serving merge latency per request: the vectorised round-robin, the
one-candidate-at-a-time loop it replaced, and the score policy.

  python -m benchmarks.merge [--requests 200] [--repeats 3] [--seed 0]
      [--out benchmarks/results/merge.json]

A request is what the retrieval service merges (SPEC §2.5): K = 12 lists, 7
implicit embeddings (budgets by importance, weights scaled to average 1) and
5 explicit ones (weight 1), one `budgets` apportionment of total = 1000;
each list 1000-1500 deep (-1 padded to 1500), int64 ids with float32 scores,
best first. Lists are drawn from one shared Zipf-ish pool (Gumbel top-k on
log popularity, so popular ids sit near the top of many lists), with two
overlaps: `realistic`, where ~30% of all list entries repeat an id of
another list, and `heavy`, where ~30% of the candidates the round-robin
merge examines are skipped as already taken (the de-duplication work the
merge cannot vectorise), and `parallel`, where the 7 implicit lists are
nearly the same ranking (near-parallel embeddings, as trained DCMs end on
MovieLens: the merge skips most of what it reads). Each implementation runs on the same requests, one
request at a time, interleaved; prints wall-clock p50/p99 µs per request
(and the thread's CPU-time p99, which leaves out waiting for a core), writes
JSON. The old loop is `round_robin` in tests/numpy_reference.py.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import pathlib
import platform
import sys
import time

import numpy as np

from common.merging import DEFAULT_FLOOR, budgets, round_robin, round_robin_sources, score_merge
from benchmarks import write_result

K_IMPLICIT, K_EXPLICIT, TOTAL, DEPTH = 7, 5, 1000, (1000, 1500)
SCENARIOS = {  # name: (pool size, Zipf exponent, implicit noise: None = independent lists)
    "realistic": (24_000, 0.5, None),
    "heavy": (20_000, 1.2, None),
    "parallel": (24_000, 0.5, 0.05),
}


def request(rng: np.random.Generator, pool: int, exponent: float, noise: float | None = None) -> dict:
    """One request's lists, scores and budgets; with `noise`, the implicit
    lists rank one shared key plus `noise` x their own Gumbel draws (near-
    parallel embeddings: every implicit list nearly the same).

    Returns: {"lists": [K, 1500] int64, "scores": [K, 1500] float32, "budget": [K] int64}.
    """
    k = K_IMPLICIT + K_EXPLICIT
    log_popularity = -exponent * np.log(np.arange(pool) + 50.0)
    ids = rng.permutation(pool)
    lists = np.full((k, DEPTH[1]), -1, np.int64)
    scores = np.full((k, DEPTH[1]), -np.inf, np.float32)
    shared = log_popularity + rng.gumbel(size=pool)
    for j in range(k):
        depth = int(rng.integers(DEPTH[0], DEPTH[1] + 1))
        if noise is not None and j < K_IMPLICIT:
            key = shared + noise * rng.gumbel(size=pool)
        else:
            key = log_popularity + rng.gumbel(size=pool)
        top = np.argpartition(-key, depth)[:depth]
        top = top[np.argsort(-key[top])]
        lists[j, :depth], scores[j, :depth] = ids[top], key[top]
    importance = rng.exponential(size=K_IMPLICIT)
    weight = np.concatenate([importance * K_IMPLICIT / importance.sum(), np.ones(K_EXPLICIT)])
    return {"lists": lists, "scores": scores, "budget": budgets(weight[None], np.ones((1, k), bool), TOTAL)[0]}


def overlap(req: dict) -> dict:
    """Share of list entries whose id an earlier list holds, and share of the
    candidates round-robin examines that it skips as taken."""
    lists = req["lists"]
    valid = lists[lists >= 0]
    items, source, position = round_robin_sources(lists, req["budget"], TOTAL)
    examined = sum(int(position[source == j].max()) + 1 for j in np.unique(source))
    return {"duplicate_entries": 1.0 - len(np.unique(valid)) / len(valid),
            "skipped_examined": 1.0 - len(items) / examined}


def _reference():
    """`round_robin` of tests/numpy_reference.py (the loop `round_robin` replaced)."""
    path = pathlib.Path(__file__).resolve().parents[1] / "tests" / "numpy_reference.py"
    spec = importlib.util.spec_from_file_location("_merge_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.round_robin


def implementations() -> dict:
    """name -> fn(request) for every timed merge."""
    reference = _reference()
    return {
        "round_robin": lambda r: round_robin_sources(r["lists"], r["budget"], TOTAL),
        "round_robin (list)": lambda r: round_robin(r["lists"], r["budget"], TOTAL),
        "old loop": lambda r: reference(r["lists"], r["budget"], TOTAL),
        "score_merge": lambda r: score_merge(r["lists"], r["scores"], r["budget"], TOTAL, DEFAULT_FLOOR),
    }


def measure(requests: list[dict], fns: dict, repeats: int) -> dict:
    """name -> wall-clock p50/p99/mean and thread-CPU p50/p99 (µs) over
    `repeats` passes of every request. CPU time leaves out the time the
    thread waited for a core, which dominates the wall p99 on a shared machine."""
    wall, cpu = {name: [] for name in fns}, {name: [] for name in fns}
    for _ in range(repeats):
        for req in requests:
            for name, fn in fns.items():
                start, start_cpu = time.perf_counter(), time.thread_time()
                fn(req)
                cpu[name].append(time.thread_time() - start_cpu)
                wall[name].append(time.perf_counter() - start)
    return {name: {"p50_us": float(np.percentile(wall[name], 50) * 1e6),
                   "p99_us": float(np.percentile(wall[name], 99) * 1e6),
                   "mean_us": float(np.mean(wall[name]) * 1e6),
                   "cpu_p50_us": float(np.percentile(cpu[name], 50) * 1e6),
                   "cpu_p99_us": float(np.percentile(cpu[name], 99) * 1e6)} for name in fns}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200, help="distinct requests per scenario")
    parser.add_argument("--repeats", type=int, default=3, help="passes over the requests")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/merge.json")
    args = parser.parse_args(argv)
    fns = implementations()
    report = {"command": "python -m benchmarks.merge " + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "loadavg_before": os.getloadavg(), "python": platform.python_version(),
                          "numpy": np.__version__},
              "request": {"k_implicit": K_IMPLICIT, "k_explicit": K_EXPLICIT, "total": TOTAL, "depth": DEPTH,
                          "score_floor": DEFAULT_FLOOR},
              "scenarios": {}}
    lines = ["| overlap | dup. entries | skipped when examined | merge | p50 µs | p99 µs | CPU p99 µs "
             "| old loop p50 / p50 |", "|---|---|---|---|---|---|---|---|"]
    for name, (pool, exponent, noise) in SCENARIOS.items():
        rng = np.random.default_rng(args.seed)
        requests = [request(rng, pool, exponent, noise) for _ in range(args.requests)]
        for req in requests[:20]:  # the timed paths agree before they are timed
            assert round_robin(req["lists"], req["budget"], TOTAL) == fns["old loop"](req)[0]
        shares = [overlap(req) for req in requests]
        stats = {key: float(np.mean([s[key] for s in shares])) for key in shares[0]}
        timings = measure(requests, fns, args.repeats)
        report["scenarios"][name] = {"pool": pool, "zipf_exponent": exponent, "implicit_noise": noise, **stats,
                                     "timings": timings}
        for fn, t in timings.items():
            lines.append(f"| {name} | {stats['duplicate_entries']:.0%} | {stats['skipped_examined']:.0%} | {fn} "
                         f"| {t['p50_us']:.0f} | {t['p99_us']:.0f} | {t['cpu_p99_us']:.0f} "
                         f"| {timings['old loop']['p50_us'] / t['p50_us']:.1f}x |")
    report["machine"]["loadavg_after"] = os.getloadavg()
    print("\n".join(lines))
    out = write_result(args.out, report)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
