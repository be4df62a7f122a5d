"""`mer demo --config ml-100k --raw_dir DIR`: the whole flow on downloaded GroupLens files.

The end-to-end run is shrunk (4 training steps, no validation carve, 300
evaluation records, 60 served records) and asserts on real outputs: every
stage's artifacts, served lists that are de-duplicated and hold no history
item, the HR@K tables. The argument checks need no data: a wrong `--raw_dir`
is one line naming the missing file, before the run directory is touched.
"""

import json
import re

import pytest
from mer_testing import movielens_dir


def _demo(*args):
    from mer import cli

    return cli.main(["demo", *map(str, args)])


@pytest.mark.data
@pytest.mark.slow
def test_demo_on_ml_100k(tmp_path, capsys):
    raw = movielens_dir("ml-100k")
    run = tmp_path / "demo"
    assert _demo("--config", "ml-100k", "--raw_dir", raw, "--run_dir", run, "--epochs", 1, "--steps", 4,
                 "--records", 60, "--eval_records", 300, "--set", "train.validation_fraction=0") == 0
    out = capsys.readouterr().out
    for path in ("data/manifest.json", "data/config.yaml", "dcm/evaluation.json", "cr/checkpoint",
                 "export/models.config", "export/user_implicit/1/saved_model.pb",
                 "export/user_explicit/1/saved_model.pb", "export/embeddings/implicit/1/embed.json",
                 "export/embeddings/explicit/1/embed.json", "export/index/implicit/1/build.json",
                 "export/index/explicit/1/recall.json", "demo.json"):
        assert (run / path).exists(), path
    manifest = json.load(open(run / "data" / "manifest.json"))
    assert manifest["config"]["data"]["source"] == {**manifest["config"]["data"]["source"], "format": "ml-100k",
                                                    "path": str(raw)}
    # ml-100k: 100,000 ratings, 943 users; the 0.9 quantile split leaves ~10% of the examples for eval.
    assert manifest["counts"]["examples/train/implicit"] > 80_000
    assert 5_000 < manifest["counts"]["examples/eval/implicit"] < 15_000
    report = json.load(open(run / "demo.json"))
    assert report["config"] == "ml-100k" and report["source"] == {"format": "ml-100k", "path": str(raw)}
    # The shown users' whole served lists (budget 100): no repeats, nothing the user already engaged with.
    assert len(report["users"]) == 3
    for user in report["users"]:
        candidates = user["candidates"]
        assert len(candidates) == 100 and len(set(candidates)) == 100, user["user"]
        assert not set(candidates) & set(user["history"]), user["user"]
        assert user["topics"]  # shown users follow topics, so explicit candidates are in the list
    tables = out.split("\nuser ")[1:]
    assert len(tables) == 3
    assert all("implicit[" in t and "explicit[" in t for t in tables)
    # HR@K: SPEC §6 exact (300 records) and served through the service (60 records).
    evaluation = json.load(open(run / "dcm" / "evaluation.json"))
    assert evaluation["records"] == 300 and evaluation["corpus"] > 1_000
    hr = [evaluation["hr"][k]["mean"] for k in ("20", "50", "100")]
    assert 0 <= hr[0] <= hr[1] <= hr[2] <= 1
    assert re.search(r"^\| HR \| ", out, flags=re.M)
    for name in ("implicit", "implicit+explicit"):
        row = report["served_hr"][name]
        assert row["records"] == 60 and 0 <= row["hr@20"] <= row["hr@50"] <= row["hr@100"] <= 1
        assert re.search(rf"^{re.escape(name)}\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+60$", out, flags=re.M)


@pytest.mark.parametrize("config, files, message", [
    ("ml-100k", ["u.data"], "u.item not found in"),
    ("movielens-small", ["movies.csv"], "ratings.csv not found in"),
    ("synthetic-small", ["events-00000-of-00001.csv"], "no items-*.csv"),
])
def test_raw_dir_missing_file_is_one_line(tmp_path, capsys, config, files, message):
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in files:
        (raw / name).write_text("")
    run = tmp_path / "run"
    run.mkdir()
    (run / "keep").write_text("")
    assert _demo("--config", config, "--raw_dir", raw, "--run_dir", run) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"mer demo: error: --raw_dir {raw}: ") and message in err[0]
    assert (run / "keep").exists()  # refused before the run directory is cleared


@pytest.mark.parametrize("args, message", [
    (["--config", "ml-100k", "--raw_dir", "{tmp}/nowhere"], "no such directory (expected GroupLens ml-100k"),
    (["--config", "ml-100k", "--raw_dir", "{tmp}/run/raw"], "inside --run_dir"),
    (["--config", "nopreset"], "no such file or preset"),
    (["--set", "train.epochs=0"], "train.epochs=0: expected >= 1"),
])
def test_bad_source_arguments_are_one_line(tmp_path, capsys, args, message):
    assert _demo(*[a.format(tmp=tmp_path) for a in args], "--run_dir", tmp_path / "run") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mer demo: error: ") and message in err[0], err


def test_generic_source_refuses_raw_dir(tmp_path, capsys):
    config = tmp_path / "generic.yaml"
    config.write_text("data:\n  source: {format: generic, events: e.csv, items: i.csv}\n")
    assert _demo("--config", config, "--raw_dir", tmp_path, "--run_dir", tmp_path / "run") == 2
    assert "uses the generic source" in capsys.readouterr().err
