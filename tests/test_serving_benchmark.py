"""`benchmarks/serving.py --quick`: a 20,000-item synthetic export served by
`mer serve` in a child process, 3 s per client level, the one-client
breakdown and a version hot swap under traffic: the fields it reports, no
failed request, no duplicate candidate (no assertions on wall-clock time).

Short answers (fewer than `budget` candidates) are reported, not asserted:
the round-robin merge leaves an explicit embedding's unused budget unused
when its topic-filtered list runs short (`common/merging.py`), which the
untrained towers of the benchmark make common."""


import pytest

from benchmarks import serving, serving_path
from mer_testing import run_benchmark

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One quick run: `(JSON result, printed tables)`."""
    tmp = tmp_path_factory.mktemp("serving_benchmark")
    out = tmp / "serving.json"
    result, printed = run_benchmark(serving.main, ["--quick", "--cache", str(tmp / "cache"), "--out", str(out)], out)
    return result, printed, tmp


def test_builds_the_export(run):
    result, _, tmp = run
    export = result["export"]
    assert result["quick"] is True and export["items"] == 20_000 and export["reused"] is False
    assert [t["model"] for t in export["towers"]] == ["user_implicit", "item_implicit",
                                                      "user_explicit", "item_explicit"]
    assert all(t["warmup_requests"] > 0 for t in export["towers"])
    assert [i["retriever"] for i in export["indexes"]] == ["implicit", "explicit"]
    assert all(i["config"]["kind"] == "tree_ah" and 0 < i["recall@100"] <= 1 for i in export["indexes"])
    base = tmp / "cache" / "items-20000-seed0" / "base"
    assert (base / "models.config").exists()
    assert (base / "user_explicit" / "1" / "assets" / "topics.txt").exists()  # file-backed topic lookup
    assert not (base / "user_implicit" / "2").exists() and not (base / "index" / "implicit" / "2").exists()


def test_levels_report_latency_stages_and_no_failures(run):
    result, printed, _ = run
    assert result["server"]["startup_seconds"] > 0 and result["server"]["ready"]["retrieval"]
    # `mer serve` shut down on SIGTERM by itself: exit 0, not killed after 60 s
    shutdown = result["server"]["shutdown"]
    assert shutdown["exit_code"] == 0 and not shutdown["killed"] and not shutdown["exited_before_sigterm"], shutdown
    assert "stopped by SIGTERM in" in printed
    assert [r["clients"] for r in result["levels"]] == [1, 4, 16]
    for r in result["levels"]:
        assert r["answered"] > 0 and r["throughput_rps"] > 0 and r["seconds"] >= 3
        assert r["failed_requests"] == 0, r["error_examples"]
        assert "DUPLICATE_CANDIDATES" not in r["errors_by_code"], r["error_examples"]
        assert r["errors"] == sum(r["errors_by_code"].values())
        assert r["requests"] == r["answered"] + r["failed_requests"] == r["ok"] + r["errors"]
        assert 0 < r["candidates_min"] <= r["candidates_mean"] <= result["budget"] == 1000
        lat = r["latency_ms"]
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"]
        assert set(r["stage_ms"]) == {"towers", "ann", "collect", "merge", "response", "total", "client - total"}
        assert r["stage_ms"]["total"]["mean"] >= r["stage_ms"]["ann"]["mean"] > 0
        assert r["embeddings_per_request"]["implicit"] > 0 and r["embeddings_per_request"]["explicit"] == 5
    assert "| clients | seconds | requests | throughput req/s | p50 ms | p90 ms | p99 ms |" in printed
    assert "| 16 | towers |" in printed


def test_breakdown_runs_without_and_with_common_topics(run):
    result, _, _ = run
    none, common = result["breakdown"]
    assert none["topics"] == [] and list(none["embeddings_per_request"]) == ["implicit"]
    assert len(common["topics"]) == 5 and common["embeddings_per_request"]["explicit"] == 5
    assert none["failed_requests"] == common["failed_requests"] == 0


def test_hot_swap_loses_no_request(run):
    result, printed, _ = run
    swap = result["hot_swap"]
    assert swap["swapped"] and swap["failed_requests"] == 0, swap["error_examples"]
    assert swap["versions_seen"][0] == '{"explicit": 1, "implicit": 1}'
    assert swap["versions_seen"][-1] == '{"explicit": 2, "implicit": 2}'
    assert swap["seconds_to_new_versions"] > 0
    bars = result["bars"]
    assert bars["hot_swap"]["met"] is True and bars["soak_16_clients"]["met"] is None
    assert bars["p90_1_client"]["met"] in (True, False)
    assert "bar hot_swap (zero failed requests across a version hot swap): met" in printed


def test_serving_path_times_one_request_at_a_time_on_the_same_export(run):
    _, _, tmp = run
    out = tmp / "serving_path.json"
    result, printed = run_benchmark(serving_path.main, ["--items", "20000", "--cache", str(tmp / "cache"),
                                                        "--requests", "12", "--out", str(out)], out)
    assert result["export_reused"] is True and result["requests"] == 12
    assert set(result["towers_alone"]) == {"user_implicit", "user_explicit"}
    assert all(0 < s["p50"] <= s["p90"] and s["cpu_ms"] > 0 for s in result["towers_alone"].values())
    marks = result["timeline_ms"]
    assert set(marks) == {"implicit tower answered", "explicit tower answered", "implicit searches done",
                          "explicit searches done", "answer ready"}
    assert list(marks)[-1] == "answer ready"  # ordered by median: the answer comes last
    for retriever in ("implicit", "explicit"):
        assert 0 < marks[f"{retriever} tower answered"]["p50"] <= marks[f"{retriever} searches done"]["p50"]
    assert result["cpu_ms_per_request"] > 0
    assert "| ms after the request started | mean | p50 | p90 |" in printed
