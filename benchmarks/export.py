"""Export-stage benchmarks, one function per section; prints tables, writes JSON.

Sections:
  export `export.exporter.export_models` of a DCM and a CR model (both
         retrievers in one call), trained `TRAIN_STEPS` steps each with
         `trainer.task.train` on the `synthetic-small` world (`beam.run.
         run_prepare`); world and models are kept in `--scratch` and reused.
         Per tower: seconds to save + validate + write warmup, SavedModel MB,
         op types, warmup requests; the total.
  embed  `beam.embed_items.run_embed_items` (`mer embed-items`) at each
         `--sizes` catalog size, on DirectRunner multi-process (2 workers)
         and in-memory: items, seconds, items/s. The item tower (random init,
         `synthetic-small` model config, asset vocabularies) over a synthetic
         item table is saved as `item_implicit/1` with its catalog by
         `export.exporter.save_version`; the same tower in-process (and its
         SavedModel signature) is the ceiling.
  index  ScaNN item index (`common/item_index.py`) at each `--sizes` corpus size:
         item embeddings from the real item tower (`trainer.model`, random
         init, `synthetic-small` model config) over a synthetic item table;
         exact NumPy search (the reference) and ScaNN configurations: build
         seconds, recall@100 vs exact, and the latency of one 12-embedding
         request (`ItemIndex.search` of 12 queries, k=100), p50/p99.
         Bar (issue): at 1M items, a configuration with recall@100 >= 0.95
         answers a 12-embedding request in <= 5 ms p99 on 2 cores.

  python -m benchmarks.export [--sections export,embed,index] [--sizes 100000,1000000]
                              [--quick] [--scratch benchmarks/results/export-scratch]
                              [--out benchmarks/results/export.json]

`--quick`: fewer index queries and requests; models trained 8 steps of 64.
Run pinned to measure what a small serving replica gets, e.g.
`taskset -c 1 python -m benchmarks.export`. ScaNN's `search_batched` is
single-threaded, so one core measures the request latency of a 2-core
replica serving one request at a time. (Pinned, the 2 DirectRunner workers
of the embed section share that one core.)
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import numpy as np

from beam.run import IN_MEMORY, LOCAL_RUNNER, run_prepare
from benchmarks import write_result

REQUEST_EMBEDDINGS = 12  # user embeddings per request: K_im implicit + K_ex explicit, rounded up
K = 100
EMBED_BATCH = 65536
QUERY_NOISE = 0.15  # per-dimension Gaussian noise added to an item embedding to make a query
TRAINED_KINDS = ("dcm", "cr")  # one model per retriever: implicit, explicit
TRAIN_STEPS = 300
BEAM_BATCH = 4096  # SavedModelItemHandler's max_batch_size
EMBED_RUNNERS = (
    ("multi_processing, 2 workers",
     [f"--runner={LOCAL_RUNNER}", "--direct_running_mode=multi_processing", "--direct_num_workers=2"]),
    ("in_memory", list(IN_MEMORY)),
)


# -- export section ------------------------------------------------------------------
def _dir_mb(path: str) -> float:
    total = sum(f.stat().st_size for f in pathlib.Path(path).rglob("*") if f.is_file())
    return total / 2**20


def prepared_world(scratch: pathlib.Path) -> tuple[str, bool]:
    """The `synthetic-small` world prepared by `beam.run.run_prepare` under
    `scratch`, once: a directory with a manifest is reused.

    Returns: `(directory, reused)`.
    """
    import shutil

    from trainer import features
    from trainer.config import load_config

    world = scratch / "world-synthetic-small"
    if (world / features.MANIFEST).exists():
        return str(world), True
    if world.exists():
        shutil.rmtree(world)  # an interrupted prepare
    run_prepare(load_config("synthetic-small"), str(world), list(IN_MEMORY))
    return str(world), False


def trained_models(world: str, scratch: pathlib.Path, steps: int, batch_size: int) -> dict:
    """`synthetic-small` DCM and CR models trained `steps` steps on `world`
    with `trainer.task.train`, once per (kind, steps, batch): a model
    directory with its artifacts is reused.

    Returns: `{kind: {"dir", "reused", "train_seconds", "steps"}}`.
    """
    import shutil

    from trainer import runtime
    from trainer.config import load_config
    from trainer.model_io import has_artifacts
    from trainer.task import train

    out = {}
    for kind in TRAINED_KINDS:
        model_dir = scratch / "models" / f"{kind}-{steps}x{batch_size}"
        reused = has_artifacts(str(model_dir))  # artifacts are written last
        if not reused:
            if model_dir.exists():
                shutil.rmtree(model_dir)
            cfg = load_config("synthetic-small", [f"model.kind={kind}", "train.epochs=1",
                                                  f"train.steps_per_epoch={steps}",
                                                  f"train.batch_size={batch_size}"])
            train(cfg, world, runtime.resolve(model_dir=str(model_dir), env={}), verbose=0)
        summary = json.loads((model_dir / "training.json").read_text())
        out[kind] = {"dir": str(model_dir), "reused": reused, "train_seconds": summary["seconds"],
                     "steps": summary["optimizer_steps"]}
    return out


def export_section(scratch: pathlib.Path, quick: bool) -> dict:
    """Times `export_models` for a trained DCM and a CR model (one call, both retrievers)."""
    import shutil

    from export.exporter import export_models

    steps, batch_size = (8, 64) if quick else (TRAIN_STEPS, 256)
    world, world_reused = prepared_world(scratch)
    models = trained_models(world, scratch, steps, batch_size)
    base = scratch / "export"
    if base.exists():
        shutil.rmtree(base)
    start = time.perf_counter()
    summary = export_models([models[k]["dir"] for k in TRAINED_KINDS], str(base))
    total = time.perf_counter() - start
    rows = []
    for kind, exported in zip(TRAINED_KINDS, summary["exports"]):
        for tower in [k for k in exported if k not in ("retriever", "source")]:  # user, item
            saved = exported[tower]
            rows.append({"model": kind, "tower": tower, "seconds": saved["seconds"],
                         "size_mb": _dir_mb(saved["path"]), "op_types": saved["op_types"],
                         "warmup_requests": saved["warmup_requests"]})
    towers_s = sum(r["seconds"] for r in rows)
    return {"rows": rows, "total_seconds": total, "towers_seconds": towers_s,
            "other_seconds": total - towers_s, "version": summary["version"],
            "world": {"dir": world, "reused": world_reused},
            "models": models, "train": {"steps": steps, "batch_size": batch_size},
            "notes": [f"synthetic-small DCM and CR, each trained {steps} steps of batch {batch_size} "
                      "(trainer.task.train; cached in the scratch dir)",
                      "one export_models call for both; tower seconds = save_version: "
                      "tf.saved_model.save + core-op validation + warmup file + atomic rename",
                      "total - towers = restoring the trained models (asset vocabularies), sample "
                      "records, warmup requests, catalog, serving config files"]}


def print_export(result: dict) -> None:
    print("\n## Export (" + "; ".join(result["notes"]) + ")\n")
    print("| model | tower | seconds | SavedModel MB | op types | warmup requests |")
    print("|---|---|---|---|---|---|")
    for r in result["rows"]:
        print(f"| {r['model']} | {r['tower']} | {r['seconds']:.2f} | {r['size_mb']:.2f} | {r['op_types']} | "
              f"{r['warmup_requests']} |")
    print(f"| total | export_models | {result['total_seconds']:.2f} | "
          f"{sum(r['size_mb'] for r in result['rows']):.2f} | | |")
    print(f"\ntowers {result['towers_seconds']:.2f} s, rest {result['other_seconds']:.2f} s "
          f"(restore, samples, serving files); training: "
          + ", ".join(f"{k} {m['steps']} steps {m['train_seconds']:.0f} s{' (cached)' if m['reused'] else ''}"
                      for k, m in result["models"].items()))


# -- embed section -------------------------------------------------------------------
def write_vocabularies(table, directory: pathlib.Path) -> None:
    """Item and topic vocabulary files, so the item tower is built as `mer
    export` builds it (`asset_vocabularies=True`: the ids are a SavedModel
    asset, not a graph constant)."""
    from trainer import features

    files = {"items": directory / features.VOCAB_ITEMS, "topics": directory / features.VOCAB_TOPICS}
    for key, words in (("items", table.ids), ("topics", table.topics)):
        files[key].parent.mkdir(parents=True, exist_ok=True)
        files[key].write_text("\n".join(words) + "\n")
    table.vocab_files = {k: str(v) for k, v in files.items()}


def _rate(seconds: float, items: int) -> dict:
    return {"items": items, "seconds": seconds, "items_per_second": items / seconds}


def embed_section(sizes: list[int], scratch: pathlib.Path, seed: int = 0) -> dict:
    """`run_embed_items` on DirectRunner (multi-process and in-memory) per
    size, against the in-process item tower."""
    import shutil

    import tensorflow as tf

    from beam.embed_items import run_embed_items
    from common import contract
    from export.exporter import CATALOG, catalog_text, save_version
    from export.serving_files import warmup_requests
    from export.towers import ItemTower
    from trainer.config import load_config
    from trainer.model import build_model

    name = contract.ITEM_MODEL[contract.IMPLICIT]
    rows, models = [], []
    for size in sizes:
        work = scratch / f"embed-{size}"
        if work.exists():
            shutil.rmtree(work)
        table = synthetic_item_table(size, seed)
        table.train_count[1:] = np.maximum(table.train_count[1:], 1)  # every item in the corpus
        write_vocabularies(table, work / "vocab")
        model = build_model(load_config("synthetic-small").model, table, seed=seed, asset_vocabularies=True)
        ids = np.asarray(table.ids, dtype=object)
        model.item_embeddings(tf.constant(ids[:16]))  # builds the variables
        start = time.perf_counter()
        for lo in range(0, size, EMBED_BATCH):
            model.item_embeddings(tf.constant(ids[lo:lo + EMBED_BATCH])).numpy()
        rows.append({"items_total": size, "method": f"in-process model.item_embeddings ({EMBED_BATCH:,} a batch)",
                     **_rate(time.perf_counter() - start, size)})
        base = work / "base"
        catalog = catalog_text(table)
        warmup = warmup_requests(name, {contract.ITEM_IDS: ids[:64]})
        saved = save_version(ItemTower(model), str(base), name, 1, warmup, {CATALOG: catalog})
        models.append({"items": size, "save_seconds": saved["seconds"], "size_mb": _dir_mb(saved["path"]),
                       "op_types": saved["op_types"]})
        del model
        signature = tf.saved_model.load(saved["path"]).signatures[contract.SIGNATURE]
        signature(**{contract.ITEM_IDS: tf.constant(ids[:16].tolist())})
        start = time.perf_counter()
        for lo in range(0, size, BEAM_BATCH):
            signature(**{contract.ITEM_IDS: tf.constant(ids[lo:lo + BEAM_BATCH].tolist())})
        rows.append({"items_total": size, "method": f"in-process SavedModel signature ({BEAM_BATCH:,} a batch)",
                     **_rate(time.perf_counter() - start, size)})
        del signature, table, ids
        for mode, args in EMBED_RUNNERS:
            summary = run_embed_items(str(base), contract.IMPLICIT, beam_args=args)
            rows.append({"items_total": size, "method": f"run_embed_items, DirectRunner {mode}",
                         "beam_args": args, "output": summary["output"],
                         **_rate(summary["seconds"], summary["items"])})
    return {"rows": rows, "models": models,
            "notes": ["item tower: trainer.model.build_model(synthetic-small model config, RANDOM INIT, "
                      "asset vocabularies) over a synthetic item table, every item in the corpus; "
                      "saved by export.exporter.save_version as item_implicit/1 with its catalog",
                      "run_embed_items seconds = pipeline construction to output renamed (SDK worker "
                      f"start-up, catalog read, RunInference in batches of <= {BEAM_BATCH:,}, "
                      f"TFRecords in 4 shards)"]}


def print_embed(result: dict) -> None:
    print("\n## embed-items (" + "; ".join(result["notes"]) + ")\n")
    print("| items | method | items embedded | seconds | items/s |")
    print("|---|---|---|---|---|")
    for r in result["rows"]:
        print(f"| {r['items_total']:,} | {r['method']} | {r['items']:,} | {r['seconds']:.1f} | "
              f"{r['items_per_second']:,.0f} |")
    print()
    for m in result["models"]:
        print(f"item SavedModel at {m['items']:,} items: {m['size_mb']:.1f} MB, {m['op_types']} op types, "
              f"saved in {m['save_seconds']:.1f} s")


# -- index section -------------------------------------------------------------------
def synthetic_item_table(num_items: int, seed: int = 0, num_topics: int = 40, content_dim: int = 16):
    """An `ItemTable` of `num_items` synthetic items, built in memory (no Beam).

    Each item has 1-3 distinct topics drawn by Zipf(1.1) topic popularity, a
    content vector near the mean of its topics' centres (noise 0.3), one
    categorical column (`format`, 5 values) and a Zipf-ish train count.
    """
    from trainer.item_table import ItemTable

    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, num_topics + 1) ** 1.1
    popularity /= popularity.sum()
    n = num_items + 1
    topic_ids = np.zeros((n, 3), np.int32)
    content = np.zeros((n, content_dim), np.float32)
    centres = rng.normal(size=(num_topics, content_dim)).astype(np.float32)
    how_many = rng.integers(1, 4, size=num_items)
    for lo in range(0, num_items, 1 << 18):
        hi = min(num_items, lo + (1 << 18))
        # Gumbel top-3: three distinct topics drawn by popularity.
        keys = np.log(popularity) + rng.gumbel(size=(hi - lo, num_topics))
        top = np.argsort(-keys, axis=1)[:, :3].astype(np.int32)
        keep = np.arange(3)[None, :] < how_many[lo:hi, None]
        topic_ids[lo + 1:hi + 1] = np.where(keep, top + 1, 0)
        mean = (centres[top] * keep[..., None]).sum(1) / keep.sum(1, keepdims=True)
        content[lo + 1:hi + 1] = mean + 0.3 * rng.normal(size=mean.shape)
    categorical = np.zeros((n, 1), np.int32)
    categorical[1:, 0] = rng.integers(1, 6, size=num_items)
    valid = np.ones(n, np.int32)
    valid[0] = 0
    counts = np.zeros(n, np.int64)
    counts[1:] = np.floor(1000.0 / np.arange(1, num_items + 1) ** 0.8).astype(np.int64)
    return ItemTable(ids=[f"item{i}" for i in range(num_items)], content=content, topic_ids=topic_ids,
                     categorical_ids=categorical, valid=valid, train_count=counts,
                     topics=[f"topic{t}" for t in range(num_topics)], categorical_columns=["format"],
                     categorical_sizes=[5])


def item_tower_embeddings(table, seed: int = 0) -> tuple[np.ndarray, float]:
    """Runs the (randomly initialised) item tower over every item, 65,536 at a time.

    Returns:
      `([N, d] float32 embeddings, seconds)`.
    """
    import tensorflow as tf

    from trainer.config import load_config
    from trainer.model import build_model

    model = build_model(load_config("synthetic-small").model, table, seed=seed)
    start = time.perf_counter()
    ids = np.asarray(table.ids, dtype=object)
    out = [model.item_embeddings(tf.constant(ids[lo:lo + EMBED_BATCH])).numpy()
           for lo in range(0, len(ids), EMBED_BATCH)]
    return np.concatenate(out).astype(np.float32), time.perf_counter() - start


def noisy_queries(embeddings: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """`[count, d]` unit queries: random items' embeddings + N(0, QUERY_NOISE^2) noise."""
    base = embeddings[rng.integers(0, len(embeddings), size=count)]
    q = base + QUERY_NOISE * rng.normal(size=base.shape).astype(np.float32)
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def _latency(fn, requests: list[np.ndarray], warmup: int) -> dict:
    for q in requests[:warmup]:
        fn(q)
    wall, cpu = [], []
    for q in requests[warmup:]:
        start, start_cpu = time.perf_counter(), time.thread_time()
        fn(q)
        cpu.append(time.thread_time() - start_cpu)
        wall.append(time.perf_counter() - start)
    ms, cpu_ms = np.asarray(wall) * 1e3, np.asarray(cpu) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": float(ms.mean()), "cpu_p50_ms": float(np.percentile(cpu_ms, 50)),
            "cpu_p99_ms": float(np.percentile(cpu_ms, 99)), "requests": len(wall)}


def _recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a[a >= 0].tolist()) & set(b.tolist())) / len(b)
                          for a, b in zip(found, exact)]))


def index_configs(num_items: int) -> list[tuple[str, dict, dict]]:
    """The ScaNN configurations measured: (name, IndexConfig fields, search overrides).

    ScaNN brute force, the automatic choice (`resolve_config`), the automatic
    tree when `auto` chose brute force, and the automatic tree searching half
    and twice as many leaves. Rows whose configs resolve alike share one build.
    """
    from common.item_index import IndexConfig, resolve_config

    auto = resolve_config(num_items, IndexConfig(kind="tree_ah"))
    fewer = max(1, auto.leaves_to_search // 2)
    more = min(auto.num_leaves, auto.leaves_to_search * 2)
    rows = [("scann brute_force", {"kind": "brute_force"}, {}), ("scann auto", {"kind": "auto"}, {})]
    if resolve_config(num_items).kind != "tree_ah":
        rows.append((f"tree_ah leaves {auto.leaves_to_search}/{auto.num_leaves}", {"kind": "tree_ah"}, {}))
    return rows + [
        (f"tree_ah leaves {fewer}/{auto.num_leaves}", {"kind": "tree_ah"}, {"leaves_to_search": fewer}),
        (f"tree_ah leaves {more}/{auto.num_leaves}", {"kind": "tree_ah"}, {"leaves_to_search": more}),
    ]


def index_section(sizes: list[int], quick: bool, seed: int = 0) -> dict:
    """Build time, recall@100 vs exact and 12-embedding request latency per size and config."""
    from common.item_index import IndexConfig, build_index, exact_search, resolve_config

    recall_queries, requests, warmup = (200, 60, 10) if quick else (1000, 400, 30)
    rows, embeddings_info = [], []
    for size in sizes:
        table = synthetic_item_table(size, seed)
        emb, embed_s = item_tower_embeddings(table, seed)
        embeddings_info.append({"items": size, "dim": int(emb.shape[1]), "embed_seconds": embed_s,
                                "items_per_second": size / embed_s})
        rng = np.random.default_rng(seed + 1)
        queries = noisy_queries(emb, recall_queries, rng)
        batch = [noisy_queries(emb, REQUEST_EMBEDDINGS, rng) for _ in range(requests + warmup)]
        start = time.perf_counter()
        exact, _ = exact_search(emb, queries, K)
        exact_s = time.perf_counter() - start
        exact_lat = _latency(lambda q, emb=emb: exact_search(emb, q, K), batch, warmup)
        rows.append({"items": size, "method": "exact numpy (matmul+argpartition)", "kind": "exact",
                     "build_s": 0.0, "recall@100": 1.0, **exact_lat,
                     "recall_queries_s": exact_s, "config": {}})
        built = {}
        topics = [table.item_topics(i + 1) for i in range(size)]
        for name, fields, overrides in index_configs(size):
            key = json.dumps(vars(resolve_config(size, IndexConfig(**fields))), sort_keys=True)
            if key not in built:
                built[key] = build_index(emb, table.ids, topics, IndexConfig(**fields))
            index = built[key]
            found, _ = index.search(queries, K, **overrides)
            lat = _latency(lambda q: index.search(q, K, **overrides), batch, warmup)
            config = {k: v for k, v in vars(index.config).items() if v is not None}
            if fields["kind"] == "auto":
                name = f"{name} ({index.config.kind}"
                name += f", leaves {index.config.leaves_to_search}/{index.config.num_leaves})" \
                    if index.config.kind == "tree_ah" else ")"
            config.update(overrides)
            rows.append({"items": size, "method": name, "kind": index.config.kind,
                         "build_s": index.build_seconds, "recall@100": _recall(found, exact), **lat,
                         "config": config})
        del built, table, emb
    measured = any(r["items"] >= 1_000_000 for r in rows)

    def passing(p99):
        return [r["method"] for r in rows if r["items"] >= 1_000_000 and r["kind"] != "exact"
                and r["recall@100"] >= 0.95 and r[p99] <= 5.0]

    return {"rows": rows, "embeddings": embeddings_info,
            "bar": {"text": "1M items: recall@100 >= 0.95 and 12-embedding request p99 <= 5 ms",
                    "met": bool(passing("p99_ms")) if measured else None, "by": passing("p99_ms"),
                    "met_cpu": bool(passing("cpu_p99_ms")) if measured else None,
                    "by_cpu": passing("cpu_p99_ms")},
            "notes": ["item embeddings: item tower of trainer.model.build_model(synthetic-small model "
                      "config) with RANDOM INIT (untrained) over a synthetic item table",
                      f"queries: embeddings of random items + N(0, {QUERY_NOISE}^2) per-dimension noise, "
                      "renormalised",
                      f"request = one ItemIndex.search of {REQUEST_EMBEDDINGS} queries, k={K}; "
                      f"{requests} timed requests after {warmup} warm-up; "
                      "tree rows of one size share one build",
                      f"recall@{K} over {recall_queries} queries against exact_search",
                      "p50/p99 ms = wall time; CPU = the calling thread's CPU time (ScaNN searches in "
                      "the calling thread; NumPy's BLAS may use others), i.e. the latency without "
                      "waiting for a core shared with other processes"]}


def print_index(result: dict) -> None:
    print("\n## ScaNN index (" + "; ".join(result["notes"]) + ")\n")
    print("| items | method | build s | recall@100 | p50 ms | p99 ms | CPU p50 ms | CPU p99 ms |")
    print("|---|---|---|---|---|---|---|---|")
    for r in result["rows"]:
        print(f"| {r['items']:,} | {r['method']} | {r['build_s']:.1f} | {r['recall@100']:.4f} | "
              f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['cpu_p50_ms']:.2f} | {r['cpu_p99_ms']:.2f} |")
    print()
    for e in result["embeddings"]:
        print(f"item tower: {e['items']:,} items, d={e['dim']}, {e['embed_seconds']:.1f} s "
              f"({e['items_per_second']:,.0f} items/s)")
    bar = result["bar"]
    if bar["met"] is not None:
        print(f"bar ({bar['text']}): wall p99 {'met by ' + ', '.join(bar['by']) if bar['met'] else 'NOT met'}"
              f"; CPU p99 {'met by ' + ', '.join(bar['by_cpu']) if bar['met_cpu'] else 'NOT met'}")


SECTIONS = {
    "export": (lambda args: export_section(args.scratch, args.quick), print_export),
    "embed": (lambda args: embed_section(args.sizes, args.scratch, args.seed), print_embed),
    "index": (lambda args: index_section(args.sizes, args.quick, args.seed), print_index),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated: {list(SECTIONS)}")
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated corpus sizes")
    parser.add_argument("--quick", action="store_true", help="fewer queries and requests (smoke runs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/export.json")
    parser.add_argument("--scratch", default="benchmarks/results/export-scratch",
                        help="prepared world, trained models (both kept between runs), exports, embeddings")
    args = parser.parse_args(argv)
    args.scratch = pathlib.Path(args.scratch)
    args.sizes = [int(s) for s in args.sizes.split(",") if s]
    sections = [s for s in args.sections.split(",") if s]
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        parser.error(f"--sections {unknown}: allowed {list(SECTIONS)}")

    from common.logs import setup_logging

    setup_logging()  # before TensorFlow loads: hides Beam's INFO lines and TF's C++ logs
    import trainer  # noqa: F401  (legacy-Keras switch before TensorFlow loads)

    command = " ".join(["python -m benchmarks.export", *(sys.argv[1:] if argv is None else argv)])
    results = {"command": command, "quick": args.quick}
    for name in sections:
        run, show = SECTIONS[name]
        results[name] = run(args)
        show(results[name])
    write_result(args.out, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
