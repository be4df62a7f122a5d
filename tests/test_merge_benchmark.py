"""`benchmarks/merge.py` times every merge on every overlap scenario, and
its scenarios have the overlap they are named for."""

from benchmarks import merge
from mer_testing import run_benchmark


def test_every_scenario_and_merge_is_timed(tmp_path):
    out = tmp_path / "merge.json"
    result, printed = run_benchmark(merge.main, ["--requests", "4", "--repeats", "1", "--out", str(out)], out)
    scenarios = result["scenarios"]
    assert set(scenarios) == set(merge.SCENARIOS)
    for name, row in scenarios.items():
        assert set(row["timings"]) == set(merge.implementations()), name
        assert all(t["p50_us"] > 0 for t in row["timings"].values()), name
        assert f"| {name} |" in printed
    # Near-parallel implicit lists: the merge skips far more of what it reads.
    assert scenarios["parallel"]["skipped_examined"] > 2 * scenarios["realistic"]["skipped_examined"]
