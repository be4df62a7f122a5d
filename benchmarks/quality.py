"""Reproduction benchmark: the paper's Tables 1, 2 and 6 with SPEC §6 numbers.

  python -m benchmarks.quality [--datasets synthetic,ml-100k,movielens-small]
      [--seeds 0,1,2] [--tables main,ablation,cr] [--variants single,mind,dcm]
      [--baselines popularity,co-occurrence,als,ease] [--epochs 10] [--work runs/quality]
      [--out benchmarks/results/quality.json] [--docs docs/results.md]

Only the references, no model training; `--baselines ease` for EASE alone
(measured on one busy core: 1.5 min for ml-100k, 6 min for movielens-small,
mostly the Cholesky inverses of its 8586 x 8586 Gram matrix, one per λ):

  python -m benchmarks.quality --tables main --variants= --baselines ease

Every model is trained by the production job (`trainer.task.train`, early
stopping on the validation carve of the training data) and scored by the
production evaluator (`trainer.evaluation`); baselines (popularity,
co-occurrence, ALS and EASE tuned on the validation carve) go through the
same scorer.
Runs are cached per (dataset, variant, seed) under `--work`, so an
interrupted benchmark resumes; the tables show only what ran. Prints the
tables, writes JSON and the markdown report.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import shutil
import sys
import time

import numpy as np

import trainer  # noqa: F401  (legacy-Keras switch before TensorFlow loads)

# name -> config overrides (paper Table 1 / Table 2 / Table 6 rows).
MAIN = {
    "single": ["model.kind=single"],
    "mind": ["model.kind=mind"],
    "sa": ["model.kind=sa"],
    "sa+gumbel": ["model.kind=sa", "model.association=gumbel"],
    "tokens": ["model.kind=tokens"],
    "tokens+gumbel": ["model.kind=tokens", "model.association=gumbel"],
    "pfs": ["model.kind=pfs"],
    "dcm": ["model.kind=dcm"],
}
ABLATION = {
    "dcm w/o VA-FPI (gaussian init)": ["model.kind=dcm", "model.init=gaussian"],
    "dcm w/o SAR": ["model.kind=dcm", "model.single_assignment=false"],
    "dcm w/o validity filter": ["model.kind=dcm", "model.validity_filter=false", "model.init=fpi"],
    "dcm K_im=2": ["model.kind=dcm", "model.num_interests=2"],
    "dcm K_im=4": ["model.kind=dcm", "model.num_interests=4"],
    "dcm K_im=7": "dcm",  # the default K: the Table 1 DCM runs, not trained twice
}
# Issue 14's levers, each an ablation row on top of the Table 1 model it
# names (validation HR decides; eval only reports).
_DCM = ["model.kind=dcm"]
_MAX = _DCM + ["model.association=max"]
LEVERS = {
    "dcm max association": _DCM + ["model.association=max"],
    "dcm global interest": _DCM + ["model.global_interest=true"],
    "dcm max + global": _DCM + ["model.association=max", "model.global_interest=true"],
    "dcm recent first centroid": _DCM + ["model.first_centroid=recent"],
    "dcm routing gradient all": _DCM + ["model.routing_gradient=all"],
    "dcm skip negative targets": _DCM + ["train.negative_targets=skip"],
    "dcm logQ warm start": _DCM + ["train.logq_warm_start=true"],
    "single skip negative targets": ["model.kind=single", "train.negative_targets=skip"],
    "single logQ warm start": ["model.kind=single", "train.logq_warm_start=true"],
    "dcm sequence encoder": _DCM + ["model.sequence_layers=1"],
    "single sequence encoder": ["model.kind=single", "model.sequence_layers=1"],
    "dcm dynamic interests": _DCM + ["model.dynamic_interests=true"],
    "mind (paper eq. 1)": ["model.kind=mind", "model.mind_routing=eq1"],
    # On top of the max association (the lever that closed the gap to single).
    "dcm max + sequence encoder": _MAX + ["model.sequence_layers=1"],
    "dcm max + recent first centroid": _MAX + ["model.first_centroid=recent"],
    "dcm max + dynamic interests": _MAX + ["model.dynamic_interests=true"],
    "dcm max + logQ warm start": _MAX + ["train.logq_warm_start=true"],
    "dcm max K_im=4": _MAX + ["model.num_interests=4"],
    "dcm max 12 epochs": _MAX + ["train.epochs=12"],
    "single 12 epochs": ["model.kind=single", "train.epochs=12"],
    "dcm max + global + logQ warm start": _MAX + ["model.global_interest=true", "train.logq_warm_start=true"],
    "dcm max + global + logQ warm start + recent first centroid": _MAX + [
        "model.global_interest=true", "train.logq_warm_start=true", "model.first_centroid=recent"],
    # On the session-9 defaults (max, global, recent first centroid, sequence
    # field, logQ warm start): what the default DCM still lacks.
    "dcm diversity 1": _DCM + ["model.diversity_weight=1"],
    "dcm diversity 4": _DCM + ["model.diversity_weight=4"],
    # Session 14: the global embedding also trained alone, as single is.
    "dcm global loss 1": _DCM + ["model.global_loss_weight=1"],
    "dcm global loss 3": _DCM + ["model.global_loss_weight=3"],
    # Session 15: which of today's defaults makes MIND's embeddings near-parallel
    # (session 9's 0.875 pairwise cosine had argmax association, no global interest,
    # no sequence field, cold logQ): the two suspects, each alone.
    "mind argmax association": ["model.kind=mind", "model.association=argmax"],
    "mind w/o global interest": ["model.kind=mind", "model.global_interest=false"],
    # Session 16: today's defaults, one adopted default reverted each (the
    # session-9 rows above changed one thing on the *old* defaults, 1 seed).
    "dcm argmax association": _DCM + ["model.association=argmax"],
    "dcm random first centroid": _DCM + ["model.first_centroid=random"],
    "dcm w/o sequence field": _DCM + ["model.sequence_layers=0"],
    "dcm cold logQ": _DCM + ["train.logq_warm_start=false"],
    "dcm lr 0.001": _DCM + ["train.learning_rate=0.001"],
    "dcm lr 0.01": _DCM + ["train.learning_rate=0.01"],
    # Why EASE beats the two-tower models on ml-latest-small's head targets:
    # a stronger popularity correction ranks popular items higher.
    "single logQ weight 2": ["model.kind=single", "train.logq_weight=2"],
    "single logQ weight 0": ["model.kind=single", "train.logq_weight=0"],
}
CR = {"cr item-interest": ("item", ["model.kind=cr"]), "cr source-interest": ("source", ["model.kind=cr"])}
DATASETS = {"synthetic": "synthetic-small", "ml-100k": "ml-100k", "movielens-small": "movielens-small"}
SYNTHETIC_USERS = 1000


def ablation_run(name: str) -> tuple[str, list[str]]:
    """(cached run name, overrides) of an ablation row; a row equal to a
    Table 1 row (the default K_im) reads that row's runs."""
    spec = ABLATION[name]
    return (spec, MAIN[spec]) if isinstance(spec, str) else (name, spec)


PICKED = "dcm (picked on validation)"


def run_dir(name: str) -> str:
    return name.replace(" ", "_").replace("/", "-")


def pick_on_validation(runs: pathlib.Path, seeds: list[int]) -> dict | None:
    """The DCM variant (Table 1 DCM or an ablation) with the best mean
    validation HR over `seeds` (validation carve of the training data, never
    the eval split); only variants with every seed trained compete, and
    there is no pick without at least two of them."""
    candidates = {"dcm": "dcm"}  # row name -> cached run name; an alias of a run competes once
    for name in ABLATION:
        run_name = ablation_run(name)[0]
        if run_name not in candidates.values():
            candidates[name] = run_name
    scores = {}
    for name, run_name in candidates.items():
        value = validation_hr(runs, run_name, seeds)
        if value is not None:
            scores[name] = value
    if len(scores) < 2:
        return None
    best = max(scores, key=scores.get)
    return {"variant": best, "validation_hr": scores}


def log(msg: str) -> None:
    print(f"[quality {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def prepare(dataset: str, work: pathlib.Path, association: str = "source") -> tuple[str, list[str]]:
    from beam.run import IN_MEMORY, run_prepare
    from trainer.config import load_config

    overrides = [f"data.explicit_association={association}"]
    if dataset == "synthetic":
        overrides.append(f"data.synthetic.num_users={SYNTHETIC_USERS}")
    out = work / dataset / f"prepared-{association}"
    if not (out / "manifest.json").exists():
        log(f"prepare {dataset} ({association} association)")
        run_prepare(load_config(DATASETS[dataset], overrides), str(out), list(IN_MEMORY))
    return str(out), overrides


def run_config(cfg) -> dict:
    """The resolved model + train config a cached run was trained with: a
    cached run is reused only while it matches (defaults change in code)."""
    return json.loads(json.dumps({"model": dataclasses.asdict(cfg.model),
                                  "train": dataclasses.asdict(cfg.train)}))


# Config keys added with a default that changed what a run does, and the
# runs it changed (a cached one of those without the key is not the same run).
_IMPLICIT = ("dcm", "mind", "sa", "tokens", "pfs")
NEW_BEHAVIOUR = {
    ("model", "mind_routing"): lambda config: config["model"]["kind"] == "mind",
    ("model", "global_interest"): lambda config: config["model"]["kind"] in _IMPLICIT,
    ("model", "first_centroid"): lambda config: config["model"]["kind"] == "dcm",
    ("model", "sequence_layers"): lambda config: True,
    ("train", "logq_warm_start"): lambda config: True,
}


def same_config(cached: dict | None, resolved: dict) -> bool:
    """A cached run's config is the resolved one, up to keys added to the
    code since it ran that are at their defaults (they do not change the
    run: a new option's default is the old behaviour)."""
    from trainer.config import MerConfig

    if cached is None:
        return False
    defaults = run_config(MerConfig())
    for (section, key), changed in NEW_BEHAVIOUR.items():  # a default that is not the old behaviour
        if changed(resolved):
            defaults.get(section, {}).pop(key, None)

    def fill(old, new, default):
        if not isinstance(new, dict):
            return old
        out = dict(old)
        for key, value in new.items():
            if key not in out and isinstance(default, dict) and default.get(key) == value:
                out[key] = value
            elif key in out and isinstance(value, dict):
                out[key] = fill(out[key], value, (default or {}).get(key))
        return out

    return fill(cached, resolved, defaults) == resolved


def validation_hr(runs: pathlib.Path, name: str, seeds: list[int]) -> float | None:
    """Mean best validation HR of a row's cached runs under `runs` (None
    unless every seed ran)."""
    files = [runs / run_dir(name) / f"seed{s}" / "run.json" for s in seeds]
    if not all(f.exists() for f in files):
        return None
    return float(np.mean([json.loads(f.read_text())["summary"]["best_validation"] for f in files]))


def _save(path: pathlib.Path, results, extra: dict) -> None:
    arrays = {"ranks": results.ranks, "segments": results.segments.astype(str),
              "diversity": results.diversity}
    if results.filtered_ranks is not None:
        arrays["filtered_ranks"] = results.filtered_ranks
    for tier, values in (results.coverage or {}).items():
        arrays[f"coverage_{tier}"] = values
    np.savez(path / "ranks.npz", **arrays)
    (path / "run.json").write_text(json.dumps(extra, indent=2, default=float) + "\n")


def _load(path: pathlib.Path):
    from trainer.evaluation import RecordResults

    z = np.load(path / "ranks.npz", allow_pickle=False)
    coverage = {k[len("coverage_"):]: z[k] for k in z.files if k.startswith("coverage_")}
    return RecordResults(ranks=z["ranks"], segments=z["segments"].astype(object),
                         filtered_ranks=z["filtered_ranks"] if "filtered_ranks" in z.files else None,
                         coverage=coverage or None, diversity=z["diversity"])


def add(rows: dict, name: str, runs: list, ks, kept: dict | None = None) -> None:
    """A table row from the runs that exist (a cached-only pass may lack
    some); rows with no run are listed under `not_run`. `kept`: row name ->
    its runs, for the paired comparisons of the bars."""
    done = [r for r in runs if r is not None]
    if done:
        rows[name] = summarize(done, ks)
        if kept is not None:
            kept[name] = done
    else:
        rows.setdefault("not_run", []).append(name)


# The rows each DCM row is compared with in the MovieLens bars; the CR bar's pair.
BAR_OTHERS = ("single", "mind", "co-occurrence", "ALS (tuned)", "EASE (tuned)")
BASELINES = ("popularity", "co-occurrence", "als", "ease")
CR_PAIR = ("cr source-interest", "cr item-interest")


def paired(a_runs: list, b_runs: list, value) -> dict:
    """Per-record difference a - b of `value(run)` averaged over each row's
    seeds (both rows score the same eval records): mean and 95% bootstrap CI
    over records, so a bar's margin can be told from noise."""
    from trainer.evaluation import bootstrap_ci

    diff = np.mean([value(r) for r in a_runs], axis=0) - np.mean([value(r) for r in b_runs], axis=0)
    lo, hi = bootstrap_ci(diff)
    return {"mean": float(np.nanmean(diff)), "ci95": [lo, hi]}


def paired_bars(kept: dict, synthetic: bool) -> dict:
    """The bars' comparisons as paired differences, keyed like `bar_key`."""
    out = {}
    for dcm, other in [(d, o) for d in ("dcm", PICKED) for o in BAR_OTHERS if not synthetic]:
        for k in (50, 100) if dcm in kept and other in kept else ():
            out[bar_key(dcm, other, f"HR@{k}")] = paired(kept[dcm], kept[other],
                                                         lambda r, k=k: (r.ranks <= k).astype(float))
    if synthetic and "dcm" in kept and "single" in kept and kept["dcm"][0].coverage:
        for tier in ("torso", "tail"):
            out[bar_key("dcm", "single", f"coverage {tier}")] = paired(kept["dcm"], kept["single"],
                                                                       lambda r, t=tier: r.coverage[t])
    if all(name in kept for name in CR_PAIR):
        out[bar_key(*CR_PAIR, "filtered HR@50")] = paired(kept[CR_PAIR[0]], kept[CR_PAIR[1]],
                                                          lambda r: (r.filtered_ranks <= 50).astype(float))
    return out


def bar_key(a: str, b: str, metric: str) -> str:
    return f"{a} - {b} {metric}"


def _verdict(entry: dict, a: str, b: str, metric: str, difference: float) -> str:
    """A bar "a beats b" judged as the issue asks: met only when the paired
    difference's 95% CI lies above 0; a CI that includes 0 is level, not met.
    Without a paired difference (a row scored on other records) only the
    means can be compared, and the verdict says so."""
    d = entry.get("paired", {}).get(bar_key(a, b, metric))
    if not d:
        return f"{'ahead' if difference > 0 else 'NOT ahead'} by the means ({difference:+.4f}; no paired CI)"
    lo, hi = d["ci95"]
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "no verdict (no record to compare)"
    verdict = "met" if lo > 0 else "NOT met (below)" if hi < 0 else "NOT met (level: the CI includes 0)"
    return f"{verdict} (paired difference {d['mean']:+.4f} [{lo:+.4f}, {hi:+.4f}])"


def summarize(runs, ks):
    from trainer.evaluation import summarize as pooled

    return pooled(runs, ks)


def run_model(dataset, data_dir, base_overrides, name, overrides, seed, epochs, work, corpus, truth,
              cached_only=False, eval_dir=None):
    """Trains (unless cached) and scores one (variant, seed); `eval_dir`:
    prepared data whose eval split scores it (default `data_dir`)."""
    from trainer import runtime
    from trainer.config import load_config
    from trainer.evaluate import evaluate_model
    from trainer.layers._keras import keras
    from trainer.model_io import load_trained
    from trainer.task import train

    path = work / dataset / "runs" / run_dir(name) / f"seed{seed}"
    # A row's own overrides come last: a lever may set its own epochs.
    cfg = load_config(DATASETS[dataset], base_overrides + [f"train.seed={seed}", f"train.epochs={epochs}"]
                      + overrides)
    resolved = run_config(cfg)
    if (path / "ranks.npz").exists():
        cached = json.loads((path / "run.json").read_text()).get("config")
        if same_config(cached, resolved):
            return _load(path)
        if cached_only:
            log(f"{dataset} {name} seed {seed}: cached run has another config; not used (--cached_only)")
            return None
        log(f"{dataset} {name} seed {seed}: cached run has another config (code defaults changed); retraining")
        shutil.rmtree(path)
    if cached_only:
        return None
    keras.backend.clear_session()
    rt = runtime.resolve(str(path / "model"), env={})
    started = time.time()
    if (path / "model" / "training.json").exists():  # trained, not yet scored
        summary = json.loads((path / "model" / "training.json").read_text())
    else:
        summary = train(cfg, data_dir, rt, verbose=0)
    trained_cfg, model, _ = load_trained(rt.model_dir, data_dir)
    if not same_config(run_config(trained_cfg), resolved):  # an unscored model from other code defaults
        log(f"{dataset} {name} seed {seed}: trained model has another config; retraining")
        shutil.rmtree(path / "model")
        return run_model(dataset, data_dir, base_overrides, name, overrides, seed, epochs, work, corpus,
                         truth, cached_only, eval_dir)
    results = evaluate_model(model, cfg, eval_dir or data_dir, corpus, truth)
    seconds = time.time() - started
    log(f"{dataset} {name} seed {seed}: HR@50 {np.mean(results.ranks <= 50):.4f} "
        f"(best val {summary['best_validation']}, {summary['optimizer_steps']} steps, {seconds:.0f} s)")
    _save(path, results, {"summary": {k: summary[k] for k in ("best_validation", "optimizer_steps",
                                                               "steps_per_epoch", "seconds", "history")},
                          "seconds": seconds, "overrides": base_overrides + overrides, "config": resolved})
    return results


def run_baselines(dataset, data_dir, work, corpus, truth, seeds, which=BASELINES,
                  ease_max_items: int | None = None) -> tuple[dict, dict]:
    """Scores the reference rows named in `which` (cached per dataset under
    `work`). ALS and EASE are tuned on the validation carve of the training
    data (`trainer.validation.training_carve`), never on the eval split.

    Returns: row name -> runs, and row name -> its tuning (picked
    hyperparameters and every trial's validation HR).
    """
    from trainer import baselines, features
    from trainer.config import load_config
    from trainer.evaluation import evaluate_scorer, iter_records
    from trainer.validation import training_carve, validation_set

    cfg = load_config(DATASETS[dataset])
    train_pattern = f"{data_dir}/{features.TRAIN_IMPLICIT}-*{features.TFRECORD_SUFFIX}"
    eval_pattern = f"{data_dir}/{features.EVAL_IMPLICIT}-*{features.TFRECORD_SUFFIX}"
    unknown = set(which) - set(BASELINES)
    if unknown:
        raise ValueError(f"--baselines: unknown {sorted(unknown)}; expected some of {', '.join(BASELINES)}")
    out, tuning, sequences, split = {}, {}, None, None

    def score(name, make, seed=0, params=None):
        """`params`: the hyperparameters the run must have; a cached run
        with others (an older tuning) is scored again."""
        nonlocal sequences
        path = work / dataset / "runs" / name / f"seed{seed}"
        if (path / "ranks.npz").exists():
            if params is None or json.loads((path / "run.json").read_text()).get("params") == params:
                return _load(path)
            log(f"{dataset} {name} seed {seed}: cached run has other parameters; scoring again")
        path.mkdir(parents=True, exist_ok=True)
        if sequences is None:
            sequences = baselines.training_sequences(train_pattern, cfg.data.history_length)
        started = time.time()
        scorer, extra = make(seed)
        results = evaluate_scorer(scorer, corpus, iter_records(eval_pattern, 256, cfg.data.history_length),
                                  truth=truth)
        log(f"{dataset} {name} seed {seed}: HR@50 {np.mean(results.ranks <= 50):.4f}")
        _save(path, results, {**extra, "seconds": time.time() - started})
        return results

    def carve():
        nonlocal split
        if split is None:
            split = training_carve(train_pattern, cfg)
        return split

    if "popularity" in which:
        out["popularity"] = [score("popularity", lambda s: (baselines.Popularity(corpus), {}))]
    if "co-occurrence" in which:
        out["co-occurrence"] = [score("co-occurrence",
                                      lambda s: (baselines.CoOccurrence(corpus, sequences), {}))]
    if "als" in which:
        tuned = work / dataset / "als_tuning.json"
        if not tuned.exists():
            log(f"{dataset}: tuning ALS on the validation carve ({carve()['validation_records']} records)")
            best, trials = baselines.tune_als(corpus, train_pattern, carve(), cfg.data.history_length)
            tuned.write_text(json.dumps({"best": best, "trials": trials}, indent=2) + "\n")
        tuning["ALS (tuned)"] = json.loads(tuned.read_text())
        best = tuning["ALS (tuned)"]["best"]
        out["ALS (tuned)"] = [score("als", lambda s: (baselines.ALS(corpus, sequences, seed=s, **best),
                                                      {"params": best}), seed) for seed in seeds]
    if "ease" in which:
        max_items = ease_max_items or baselines.EASE_MAX_ITEMS
        if len(corpus.ids) > max_items:
            log(f"{dataset}: EASE not run: corpus {len(corpus.ids)} items > --ease_max_items {max_items}")
            out["EASE (tuned)"] = [None]
            return out, tuning
        tuned = work / dataset / "ease_tuning.json"
        grid = [float(x) for x in baselines.EASE_GRID]
        if not tuned.exists() or json.loads(tuned.read_text()).get("grid") != grid:
            log(f"{dataset}: tuning EASE λ on the validation carve ({carve()['validation_records']} records)")
            started = time.time()
            scored = {"max_records": 5000, "seed": 0}  # what tune_ease scores, as recorded below
            best, trials = baselines.tune_ease(corpus, train_pattern, carve(), cfg.data.history_length,
                                               grid=grid, max_items=max_items, **scored)
            tuned.write_text(json.dumps({"best": {"l2": best}, "grid": grid, "trials": trials,
                                         "validation_set": validation_set(carve(), **scored),
                                         "seconds": time.time() - started}, indent=2) + "\n")
        tuning["EASE (tuned)"] = json.loads(tuned.read_text())
        best = tuning["EASE (tuned)"]["best"]
        # Deterministic: one run, as popularity and co-occurrence.
        out["EASE (tuned)"] = [score("ease", lambda s: (baselines.EASE(corpus, sequences, max_items=max_items,
                                                                       **best), {"params": best}),
                                     params=best)]
    return out, tuning


def _cell(block: dict, k: str) -> str:
    b = block[k]
    return f"{b['mean']:.4f} [{b['ci95'][0]:.3f}, {b['ci95'][1]:.3f}]"


def table(rows: dict, ks, key: str = "hr", extra_cols=()) -> list[str]:
    missing = rows.get("not_run", [])
    rows = {n: r for n, r in rows.items() if n != "not_run"}
    if not rows:
        return [f"Not run yet: {', '.join(missing)}."]
    head = "| model | seeds | " + " | ".join(f"{'filtered ' if key == 'filtered_hr' else ''}HR@{k}" for k in ks)
    head += "".join(f" | {c}" for c, _ in extra_cols) + " |"
    lines = [head, "|---|---|" + "---|" * (len(ks) + len(extra_cols))]
    for name, s in rows.items():
        cells = [_cell(s[key], str(k)) for k in ks]
        cells += [fn(s) for _, fn in extra_cols]
        lines.append(f"| {name} | {s['seeds']} | " + " | ".join(cells) + " |")
    if missing:
        lines += ["", f"Not run yet: {', '.join(missing)}."]
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", default="synthetic,ml-100k,movielens-small")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--tables", default="main,ablation,cr")
    parser.add_argument("--variants", default=",".join(MAIN),
                        help="Table 1 rows to train; empty (--variants=) trains none")
    parser.add_argument("--baselines", default=",".join(BASELINES),
                        help=f"reference rows of Table 1, some of {','.join(BASELINES)}; empty for none")
    parser.add_argument("--ease_max_items", type=int, default=None,
                        help="EASE is not run on a larger corpus (its items x items matrices are dense); "
                             "default trainer.baselines.EASE_MAX_ITEMS")
    parser.add_argument("--cached_only", action="store_true",
                        help="train nothing: tabulate the runs already cached under --work")
    parser.add_argument("--epochs", type=int, default=10)  # docs/results.md's setting
    parser.add_argument("--work", default="runs/quality")
    parser.add_argument("--out", default="benchmarks/results/quality.json")
    parser.add_argument("--docs", default="docs/results.md")
    parser.add_argument("--cr_rows", default=",".join(CR), help="rows of the CR table (--tables cr)")
    parser.add_argument("--levers", default=",".join(LEVERS),
                        help="rows of the levers table (--tables levers)")
    args = parser.parse_args(argv)
    from common.logs import setup_logging

    setup_logging()  # before TensorFlow loads: its C++ noise and Beam's INFO lines stay hidden
    from trainer.evaluation import load_corpus, load_truth
    from trainer.evaluate import overlap, truth_pattern
    from trainer.model_io import load_trained

    work = pathlib.Path(args.work)
    seeds = [int(s) for s in args.seeds.split(",")]
    tables = args.tables.split(",")
    variants = [v for v in args.variants.split(",") if v]
    reference = [b for b in args.baselines.split(",") if b]
    levers = [v for v in args.levers.split(",") if v]
    cr_rows = [v for v in args.cr_rows.split(",") if v]
    for name in cr_rows:
        if name not in CR:
            parser.error(f"--cr_rows: unknown {name!r}; expected some of {', '.join(CR)}")
    for name in levers:
        if name not in LEVERS:
            parser.error(f"--levers: unknown {name!r}; expected some of {', '.join(LEVERS)}")
    for name in variants:
        if name not in MAIN:
            parser.error(f"--variants: unknown {name!r}; expected some of {', '.join(MAIN)}")
    given = argv if argv is not None else sys.argv[1:]
    if not any(a == "--epochs" or a.startswith("--epochs=") for a in given):
        given = [*given, "--epochs", str(args.epochs)]  # the recorded command reproduces the runs' epochs
    report = {"command": "python -m benchmarks.quality " + " ".join(given),
              "seeds": seeds, "epochs": args.epochs, "datasets": {}}
    for dataset in args.datasets.split(","):
        synthetic = dataset == "synthetic"
        data_dir, base = prepare(dataset, work, "source")
        corpus = load_corpus(data_dir)
        truth = load_truth(truth_pattern(data_dir)) if synthetic else None
        ks = (20, 50, 100, 200)
        entry = {"prepared": data_dir, "corpus": len(corpus.ids), "base_overrides": base, "tables": {}}
        kept: dict = {}  # row name -> runs, for the paired comparisons
        report["datasets"][dataset] = entry
        ds_tables = tables
        if "main" in ds_tables:
            rows = {}
            runs_by_row, tuning = run_baselines(dataset, data_dir, work, corpus, truth, seeds, reference,
                                                args.ease_max_items)
            for name, runs in runs_by_row.items():
                add(rows, name, runs, ks, kept)
            if tuning:
                entry["tuning"] = tuning
            for name in variants:
                add(rows, name, [run_model(dataset, data_dir, base, name, MAIN[name], s, args.epochs, work, corpus,
                                           truth, args.cached_only) for s in seeds], ks, kept)
            entry["tables"]["main"] = rows
        if "ablation" in ds_tables:
            rows = {}
            for name, overrides in ABLATION.items():
                run_name, overrides = ablation_run(name)
                add(rows, name, [run_model(dataset, data_dir, base, run_name, overrides, s, args.epochs, work,
                                           corpus, truth, args.cached_only) for s in seeds], ks, kept)
            entry["tables"]["ablation"] = rows
            picked = pick_on_validation(work / dataset / "runs", seeds)
            source = {**entry["tables"].get("main", {}), **rows}
            if picked and "main" in entry["tables"] and picked["variant"] in source:
                entry["picked_dcm"] = picked
                entry["tables"]["main"][PICKED] = source[picked["variant"]]
                kept[PICKED] = kept[picked["variant"]]
        if "levers" in ds_tables:
            rows, validation = {}, {}
            for name in levers:
                add(rows, name, [run_model(dataset, data_dir, base, name, LEVERS[name], s, args.epochs, work,
                                           corpus, truth, args.cached_only) for s in seeds], ks, kept)
                validation[name] = validation_hr(work / dataset / "runs", name, seeds)
            for name in ("single", "dcm"):  # the rows the levers are measured against
                validation[name] = validation_hr(work / dataset / "runs", name, seeds)
            entry["tables"]["levers"] = rows
            entry["lever_validation"] = validation
        if "cr" in ds_tables:
            rows = {}
            for name, (association, overrides) in ((n, CR[n]) for n in cr_rows):
                cr_dir, cr_base = prepare(dataset, work, association)
                # Both associations are scored on the same eval records: the
                # logged source topic, which is what serving conditions on.
                add(rows, name, [run_model(dataset, cr_dir, cr_base, name, overrides, s, args.epochs,
                                           work, corpus, truth, args.cached_only, eval_dir=data_dir)
                                 for s in seeds], ks, kept)
            entry["tables"]["cr"] = rows
            dcm_dir = work / dataset / "runs" / "dcm" / f"seed{seeds[0]}" / "model"
            cr_dir = work / dataset / "runs" / "cr_source-interest" / f"seed{seeds[0]}" / "model"
            if (dcm_dir / "training.json").exists() and (cr_dir / "training.json").exists():
                _, dcm, _ = load_trained(str(dcm_dir), data_dir)
                cr_cfg, cr, _ = load_trained(str(cr_dir), data_dir)
                entry["overlap_at_50"] = overlap(dcm, cr, cr_cfg, data_dir, corpus, 50)
        entry["paired"] = paired_bars(kept, synthetic)
        json_out = pathlib.Path(args.out)
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report, indent=2, default=float) + "\n")
        write_docs(report, pathlib.Path(args.docs))
    return 0


def write_docs(report: dict, path: pathlib.Path) -> None:
    ks = (20, 50, 100, 200)
    cov = [("coverage torso", lambda s: f"{s['coverage']['torso']['mean']:.3f}" if "coverage" in s else "-"),
           ("coverage tail", lambda s: f"{s['coverage']['tail']['mean']:.3f}" if "coverage" in s else "-"),
           ("topics in top-50", lambda s: f"{s.get('topic_diversity', float('nan')):.1f}")]
    lines = ["# Results (generated by `benchmarks/quality.py`)", "",
             f"Command: `{report['command']}`; seeds {report['seeds']}; at most {report['epochs']} epochs "
             "with early stopping on the validation carve of the training data (never the eval split).",
             "Cells: mean over seeds [95% bootstrap CI over eval records of the seed-averaged hits]. "
             "Protocol: SPEC §6 (exact scoring over the corpus, max over the user's embeddings, history "
             "excluded). Baselines: popularity, co-occurrence and EASE are deterministic (1 run); ALS is "
             "tuned once on the validation carve, then refit per seed; EASE's λ is picked on the "
             "validation carve.", ""]
    for dataset, entry in report["datasets"].items():
        t = entry["tables"]
        scored = sorted({r["records"] for n, r in t.get("main", {}).items() if n != "not_run" and "records" in r})
        lines += [f"## {dataset}", "", f"Prepared data: `{entry['prepared']}` (config preset "
                  f"`{DATASETS[dataset]}` + `{' '.join(entry['base_overrides'])}`), corpus {entry['corpus']} items"
                  + (f", {' / '.join(map(str, scored))} eval records" if scored else "") + ".", ""]
        if "main" in t:
            lines += ["### Table 1 shape: models and baselines", ""]
            lines += table(t["main"], ks, extra_cols=cov if dataset == "synthetic" else ())
            lines += [""]
            segs = {n: s for n, s in t["main"].items() if n in ("single", "mind", "dcm", "co-occurrence",
                                                                "ALS (tuned)", "EASE (tuned)")}
            if segs:
                lines += ["Per segment, HR@50:", "", "| model | " + " | ".join(
                    next(iter(segs.values()))["segments"]) + " |",
                    "|---|" + "---|" * len(next(iter(segs.values()))["segments"])]
                for n, s in segs.items():
                    lines.append(f"| {n} | " + " | ".join(
                        f"{v['hr']['50']['mean']:.4f} (n={v['records']})" for v in s["segments"].values()) + " |")
                lines += [""]
            lines += tuning_lines(entry.get("tuning", {}))
        if "ablation" in t:
            lines += ["### Table 2 shape: DCM ablations", ""] + table(t["ablation"], ks, extra_cols=cov) + [""]
        if "picked_dcm" in entry:
            scores = entry["picked_dcm"]["validation_hr"]
            lines += [f"`{PICKED}` in Table 1 = `{entry['picked_dcm']['variant']}`, the DCM variant with the "
                      "best mean validation HR (validation carve of the training data): " + ", ".join(
                          f"{n} {v:.4f}" for n, v in sorted(scores.items(), key=lambda x: -x[1])) + ".", ""]
        if "levers" in t:
            val = entry.get("lever_validation", {})
            lines += ["### Levers (issue 14): one change each on top of the Table 1 row it names", ""]
            lines += table(t["levers"], ks) + [""]
            lines += ["Mean best validation HR@50 (the validation carve, which picks defaults): " + ", ".join(
                f"{n} {v:.4f}" for n, v in sorted(val.items(), key=lambda x: -(x[1] or 0)) if v is not None)
                + ".", ""]
        if "cr" in t:
            lines += ["### Table 6 shape: CR training association, both scored on the source-topic eval records",
                      "", "Filtered HR (only items carrying the condition topic compete), then plain HR:", ""]
            lines += table(t["cr"], ks, key="filtered_hr") + [""]
            if set(t["cr"]) - {"not_run"}:  # the plain-HR table, unless nothing ran (said once above)
                lines += table(t["cr"], ks) + [""]
            lines += ["Scored on the source-topic eval records "
                      f"(`{entry['prepared']}/eval/explicit-*`); each model trained on its own association's "
                      "training records.", ""]
        if "overlap_at_50" in entry:
            lines += [f"Overlap of DCM top-50 and CR (followed topics, equal budgets) candidates, seed "
                      f"{report['seeds'][0]}: {entry['overlap_at_50']:.4f} (paper §3.4: 0.032).", ""]
    lines += ["## The issue's bars, computed from the tables above", "",
              "A bar is met when the paired difference lies above 0 with its 95% CI (the issue's rule); a CI "
              "that includes 0 is level, not met; a line without a paired difference compares the means only. "
              "The paired difference: per eval record, each row's hits "
              "averaged over its seeds, first minus second; mean and 95% bootstrap CI over eval records "
              "(seed-to-seed variance is averaged, not resampled).", ""] + [f"- {b}" for b in bars(report)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def tuning_lines(tuning: dict) -> list[str]:
    """The hyperparameters each tuned baseline was scored with, and the
    validation HR that picked them."""
    out = []
    if "ALS (tuned)" in tuning:
        best = tuning["ALS (tuned)"]["best"]
        out.append("`ALS (tuned)`: " + ", ".join(f"{k} {v}" for k, v in best.items()) + ", the best of "
                   f"{len(tuning['ALS (tuned)']['trials'])} grid points by HR@50 on the validation carve.")
    if "EASE (tuned)" in tuning:
        ease = tuning["EASE (tuned)"]
        out.append(f"`EASE (tuned)`: λ = {ease['best']['l2']:g}, picked by HR@50 on the validation carve ("
                   + ", ".join(f"λ {t['l2']:g}: {t['val_hr_at_50']:.4f}" for t in ease["trials"]) + ").")
    return out + [""] if out else []


def bars(report: dict) -> list[str]:
    """Each bar as a sentence with its numbers; rows that did not run say so."""
    out = []
    for dataset, entry in report["datasets"].items():
        main = entry["tables"].get("main", {})
        if dataset != "synthetic":
            if "dcm" not in main:
                out.append(f"{dataset}: DCM did not run")
            picked = entry.get("picked_dcm", {}).get("variant")
            for label, row in (("DCM", "dcm"), (f"DCM picked on validation ({picked})", PICKED)):
                for k in ("50", "100"):
                    if row not in main:
                        break
                    dcm = main[row]["hr"][k]["mean"]
                    for other in BAR_OTHERS:
                        if other in main:
                            theirs = main[other]["hr"][k]["mean"]
                            out.append(f"{dataset} HR@{k}: {label} {dcm:.4f} vs {other} {theirs:.4f}: "
                                       + _verdict(entry, row, other, f"HR@{k}", dcm - theirs))
        elif "dcm" in main and "single" in main and "coverage" in main["dcm"]:
            for tier in ("torso", "tail"):
                a, b = main["dcm"]["coverage"][tier]["mean"], main["single"]["coverage"][tier]["mean"]
                out.append(f"synthetic coverage of {tier} interests (top-50): DCM {a:.3f} vs single {b:.3f}: "
                           + _verdict(entry, "dcm", "single", f"coverage {tier}", a - b))
        cr = entry["tables"].get("cr", {})
        if set(CR_PAIR) <= set(cr):
            a = cr[CR_PAIR[0]]["filtered_hr"]["50"]["mean"]
            b = cr[CR_PAIR[1]]["filtered_hr"]["50"]["mean"]
            out.append(f"{dataset} CR filtered HR@50: source-interest {a:.4f} vs item-interest {b:.4f}: "
                       + _verdict(entry, *CR_PAIR, "filtered HR@50", a - b))
    return out


if __name__ == "__main__":
    raise SystemExit(main())
