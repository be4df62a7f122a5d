"""The quality report states each bar from the numbers in its tables."""

from __future__ import annotations

import pytest

from benchmarks.quality import bars, write_docs


def _row(hr50, hr100, coverage=None, filtered=None):
    block = lambda v: {"mean": v, "ci95": [v - 0.01, v + 0.01]}  # noqa: E731
    row = {"seeds": 3, "hr": {k: block(v) for k, v in (("20", hr50 / 2), ("50", hr50), ("100", hr100),
                                                         ("200", hr100))},
           "segments": {"1-4": {"records": 5, "hr": {"50": block(hr50)}}}, "records": 5}
    if coverage:
        row["coverage"] = {t: {"mean": v, "ci95": [v, v]} for t, v in coverage.items()}
        row["topic_diversity"] = 10.0
    if filtered is not None:
        row["filtered_hr"] = {k: block(filtered) for k in ("20", "50", "100", "200")}
    return row


def test_bars_compare_dcm_with_each_baseline(tmp_path):
    """A bar is met only when the paired difference's CI lies above 0: a
    higher mean with a CI that includes 0 is level, not met (the issue's
    rule); without a paired difference the line says it compares means."""
    from benchmarks.quality import bar_key

    def diff(mean, lo, hi):
        return {"mean": mean, "ci95": [lo, hi]}

    report = {"command": "python -m benchmarks.quality", "seeds": [0, 1, 2], "epochs": 6, "datasets": {
        "ml-100k": {"prepared": "p", "corpus": 10, "base_overrides": [], "tables": {"main": {
            "single": _row(0.30, 0.40), "co-occurrence": _row(0.35, 0.45), "dcm": _row(0.33, 0.50), "mind": _row(0.32, 0.49),
            "not_run": ["sa"]}, "cr": {"not_run": ["cr item-interest", "cr source-interest"]}},
            "paired": {bar_key("dcm", "single", "HR@50"): diff(0.03, 0.01, 0.05),
                       bar_key("dcm", "single", "HR@100"): diff(0.10, -0.01, 0.2),
                       bar_key("dcm", "co-occurrence", "HR@50"): diff(-0.02, -0.03, -0.01),
                       bar_key("dcm", "mind", "HR@50"): diff(0.01, -0.02, 0.0),  # the CI's top at 0: level
                       bar_key("dcm", "mind", "HR@100"): diff(float("nan"), float("nan"), float("nan"))}},
        "synthetic": {"prepared": "s", "corpus": 10, "base_overrides": [], "tables": {
            "main": {"single": _row(0.3, 0.4, {"torso": 0.5, "tail": 0.4}),
                     "dcm": _row(0.3, 0.4, {"torso": 0.6, "tail": 0.3})},
            "cr": {"cr item-interest": _row(0.5, 0.6, filtered=0.6),
                   "cr source-interest": _row(0.5, 0.6, filtered=0.7)}},
            "paired": {bar_key("dcm", "single", "coverage torso"): diff(0.1, 0.05, 0.15),
                       bar_key("dcm", "single", "coverage tail"): diff(-0.1, -0.15, -0.05),
                       bar_key("cr source-interest", "cr item-interest", "filtered HR@50"): diff(0.1, 0.0, 0.2)}}}}
    lines = bars(report)
    assert "ml-100k HR@50: DCM 0.3300 vs single 0.3000: met (paired difference +0.0300 [+0.0100, +0.0500])" in lines
    assert ("ml-100k HR@100: DCM 0.5000 vs single 0.4000: NOT met (level: the CI includes 0) "
            "(paired difference +0.1000 [-0.0100, +0.2000])") in lines
    assert ("ml-100k HR@50: DCM 0.3300 vs co-occurrence 0.3500: NOT met (below) "
            "(paired difference -0.0200 [-0.0300, -0.0100])") in lines
    assert "ml-100k HR@100: DCM 0.5000 vs co-occurrence 0.4500: ahead by the means (+0.0500; no paired CI)" in lines
    assert ("ml-100k HR@50: DCM 0.3300 vs mind 0.3200: NOT met (level: the CI includes 0) "
            "(paired difference +0.0100 [-0.0200, +0.0000])") in lines
    assert "ml-100k HR@100: DCM 0.5000 vs mind 0.4900: no verdict (no record to compare)" in lines
    assert any("torso interests" in x and ": met (paired" in x for x in lines)
    assert any("tail interests" in x and "NOT met (below)" in x for x in lines)
    assert ("synthetic CR filtered HR@50: source-interest 0.7000 vs item-interest 0.6000: "
            "NOT met (level: the CI includes 0) (paired difference +0.1000 [+0.0000, +0.2000])") in lines
    write_docs(report, tmp_path / "results.md")
    text = (tmp_path / "results.md").read_text()
    assert "| dcm | 3 | 0.1650 [0.155, 0.175] | 0.3300 [0.320, 0.340]" in text
    assert "NOT met (below)" in text
    assert "Not run yet: sa." in text
    assert "corpus 10 items, 5 eval records." in text
    assert text.count("Not run yet: cr item-interest, cr source-interest.") == 1


def test_cached_run_is_reused_only_with_the_same_config(tmp_path):
    """A cached (dataset, variant, seed) run is tabulated only while the
    resolved config it was trained with matches today's (code defaults move)."""
    import numpy as np

    from benchmarks.quality import _save, run_config, run_model
    from trainer.config import load_config
    from trainer.evaluation import RecordResults

    path = tmp_path / "synthetic" / "runs" / "dcm" / "seed0"
    path.mkdir(parents=True)
    cfg = load_config("synthetic-small", ["model.kind=dcm", "train.seed=0", "train.epochs=6"])
    results = RecordResults(ranks=np.array([1, 60]), segments=np.array(["core", "new"], dtype=object),
                            diversity=np.array([1.0, 2.0]))
    _save(path, results, {"config": run_config(cfg)})

    def cached(overrides):
        return run_model("synthetic", "unused", [], "dcm", overrides, 0, 6, tmp_path, None, None,
                         cached_only=True)

    assert cached(["model.kind=dcm"]).ranks.tolist() == [1, 60]
    assert cached(["model.kind=dcm", "model.implicit_fields=[]"]) is None
    assert (path / "ranks.npz").exists()  # --cached_only never deletes a run


def test_default_k_ablation_row_reads_the_dcm_runs():
    """`dcm K_im=7` is not trained twice: it is the Table 1 DCM, which holds
    only while the default K_im is 7."""
    from benchmarks.quality import DATASETS, ablation_run, run_config
    from trainer.config import load_config

    run_name, overrides = ablation_run("dcm K_im=7")
    assert run_name == "dcm"
    for preset in DATASETS.values():
        aliased = run_config(load_config(preset, overrides))
        assert aliased == run_config(load_config(preset, ["model.kind=dcm", "model.num_interests=7"]))
    assert ablation_run("dcm K_im=2") == ("dcm K_im=2", ["model.kind=dcm", "model.num_interests=2"])


def test_dcm_variant_is_picked_on_validation_hr(tmp_path):
    """The picked DCM is the variant with the best mean *validation* HR over
    all seeds; a variant missing a seed does not compete."""
    import json

    from benchmarks.quality import PICKED, bars, pick_on_validation

    def run(name, seed, val):
        path = tmp_path / name / f"seed{seed}"
        path.mkdir(parents=True)
        (path / "run.json").write_text(json.dumps({"summary": {"best_validation": val}}))

    for seed, (dcm, no_sar, k2) in enumerate([(0.40, 0.45, 0.60), (0.42, 0.47, 0.10)]):
        run("dcm", seed, dcm)
        run("dcm_w-o_SAR", seed, no_sar)
        run("dcm_K_im=2", seed, k2)
    run("dcm_K_im=4", 0, 0.99)  # seed 1 missing
    picked = pick_on_validation(tmp_path, [0, 1])
    assert picked["variant"] == "dcm w/o SAR"
    assert picked["validation_hr"]["dcm"] == pytest.approx(0.41)
    assert "dcm K_im=4" not in picked["validation_hr"]  # a seed missing
    assert "dcm K_im=7" not in picked["validation_hr"]  # the same runs as dcm
    assert pick_on_validation(tmp_path, [0, 1, 2]) is None  # nothing has all three seeds
    assert pick_on_validation(tmp_path / "none", [0]) is None
    run("dcm", 2, 0.5)
    assert pick_on_validation(tmp_path, [2]) is None  # dcm alone: nothing to pick from

    report = {"datasets": {"ml-100k": {"picked_dcm": picked, "tables": {"main": {
        "dcm": _row(0.30, 0.40), "single": _row(0.33, 0.45), PICKED: _row(0.35, 0.44)}}}}}
    lines = bars(report)
    assert "ml-100k HR@50: DCM 0.3000 vs single 0.3300: NOT ahead by the means (-0.0300; no paired CI)" in lines
    assert ("ml-100k HR@50: DCM picked on validation (dcm w/o SAR) 0.3500 vs single 0.3300: "
            "ahead by the means (+0.0200; no paired CI)") in lines
    assert ("ml-100k HR@100: DCM picked on validation (dcm w/o SAR) 0.4400 vs single 0.4500: "
            "NOT ahead by the means (-0.0100; no paired CI)") in lines


def test_bars_state_the_paired_difference_of_each_comparison():
    import numpy as np

    from benchmarks.quality import PICKED, paired_bars
    from trainer.evaluation import RecordResults

    def runs(ranks_per_seed, filtered=False, coverage=None):
        return [RecordResults(ranks=np.asarray(r, float), segments=np.full(len(r), "all", object),
                              filtered_ranks=np.asarray(r, float) if filtered else None,
                              coverage=coverage, diversity=np.zeros(len(r))) for r in ranks_per_seed]

    inf = np.inf
    # 4 records. dcm hits @50: seed 0 [1,1,0,0], seed 1 [1,0,0,0] -> per record [1, .5, 0, 0];
    # single hits [0,1,0,0] -> per record difference [1, -.5, 0, 0], mean 0.125.
    kept = {"dcm": runs([[3, 10, inf, 60], [3, 70, inf, 60]]), "single": runs([[80, 40, inf, 200]])}
    kept[PICKED] = kept["dcm"]
    out = paired_bars(kept, synthetic=False)
    d = out["dcm - single HR@50"]
    assert d["mean"] == pytest.approx(0.125) and d["ci95"][0] <= 0.125 <= d["ci95"][1]
    assert out["dcm - single HR@100"]["mean"] == pytest.approx(0.25)  # [1,1,0,1] (both seeds) vs [1,1,0,0]
    assert out[f"{PICKED} - single HR@50"] == d
    assert "dcm - mind HR@50" not in out  # no mind runs

    cr = {"cr source-interest": runs([[1, 1, 1, 1]], filtered=True),
          "cr item-interest": runs([[inf, inf, inf, inf]], filtered=True)}
    d = paired_bars(cr, synthetic=True)["cr source-interest - cr item-interest filtered HR@50"]
    assert d == {"mean": 1.0, "ci95": [1.0, 1.0]}  # every record: hit vs miss

    cov = {"dcm": runs([[1, 1]], coverage={"torso": np.array([1.0, np.nan]), "tail": np.array([0.5, np.nan])}),
           "single": runs([[1, 1]], coverage={"torso": np.array([0.5, np.nan]), "tail": np.array([0.5, np.nan])})}
    out = paired_bars(cov, synthetic=True)
    assert out["dcm - single coverage torso"]["mean"] == pytest.approx(0.5)  # NaN: user without such interests
    assert out["dcm - single coverage tail"]["mean"] == pytest.approx(0.0)

    report = {"datasets": {"ml-100k": {"paired": {"dcm - single HR@50": {"mean": 0.03, "ci95": [0.01, 0.05]}},
                                       "tables": {"main": {"dcm": _row(0.33, 0.5), "single": _row(0.30, 0.4)}}}}}
    lines = bars(report)
    assert ("ml-100k HR@50: DCM 0.3300 vs single 0.3000: met (paired difference +0.0300 [+0.0100, +0.0500])"
            in lines)
    # no paired entry: no CI, so no verdict beyond the means
    assert "ml-100k HR@100: DCM 0.5000 vs single 0.4000: ahead by the means (+0.1000; no paired CI)" in lines


def test_ease_is_a_bar_reference_and_its_lambda_is_reported(tmp_path):
    from benchmarks.quality import BAR_OTHERS

    assert "EASE (tuned)" in BAR_OTHERS
    tuning = {"EASE (tuned)": {"best": {"l2": 200.0}, "grid": [50.0, 200.0],
                               "trials": [{"l2": 50.0, "val_hr_at_50": 0.31}, {"l2": 200.0, "val_hr_at_50": 0.33}]}}
    report = {"command": "python -m benchmarks.quality", "seeds": [0], "epochs": 6, "datasets": {
        "ml-100k": {"prepared": "p", "corpus": 10, "base_overrides": [], "tuning": tuning, "tables": {"main": {
            "EASE (tuned)": {**_row(0.38, 0.52), "seeds": 1}, "dcm": _row(0.39, 0.50)}}}}}
    lines = bars(report)
    assert "ml-100k HR@50: DCM 0.3900 vs EASE (tuned) 0.3800: ahead by the means (+0.0100; no paired CI)" in lines
    assert "ml-100k HR@100: DCM 0.5000 vs EASE (tuned) 0.5200: NOT ahead by the means (-0.0200; no paired CI)" in lines
    write_docs(report, tmp_path / "results.md")
    text = (tmp_path / "results.md").read_text()
    assert "| EASE (tuned) | 1 | 0.1900 [0.180, 0.200] | 0.3800 [0.370, 0.390]" in text
    assert ("`EASE (tuned)`: λ = 200, picked by HR@50 on the validation carve (λ 50: 0.3100, λ 200: 0.3300)."
            in text)
    assert "| EASE (tuned) | 0.3800 (n=5) |" in text  # per-segment row
