import pytest

from mer import cli


def test_unbuilt_stages_say_so(monkeypatch, capsys):
    # Every stage exists now (`demo` was the last; calling it here ran the whole demo).
    monkeypatch.setattr(cli, "NOT_YET", {"later": "a later release"})
    assert cli.main(["later"]) == 2
    assert "does not exist yet" in capsys.readouterr().err


@pytest.mark.parametrize("stage", ["train", "evaluate", "export", "embed-items", "build-index", "serve", "query"])
def test_delegated_stages_name_missing_inputs(stage, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([stage])  # argparse: --data_dir / --model_dir are required
    assert exit_info.value.code == 2
    assert "required" in capsys.readouterr().err


def test_train_reports_missing_data(tmp_path, capsys):
    code = cli.main(["train", "--data_dir", str(tmp_path / "nothing"), "--model_dir", str(tmp_path / "m")])
    assert code == 2
    err = capsys.readouterr().err
    assert "matched no TFRecord files" in err and "nothing" in err


@pytest.mark.parametrize("stage", ["export", "embed-items", "build-index"])
def test_export_stages_name_a_missing_model(stage, tmp_path, capsys):
    args = {"export": ["--model_dir", str(tmp_path / "nomodel"), "--export_dir", str(tmp_path / "out")],
            "embed-items": ["--export_dir", str(tmp_path / "out"), "--retriever", "implicit"],
            "build-index": ["--export_dir", str(tmp_path / "out"), "--retriever", "implicit"]}[stage]
    assert cli.main([stage, *args]) == 2
    err = capsys.readouterr().err
    assert ("nomodel" in err or "no exported version" in err) and "Traceback" not in err, err


@pytest.mark.parametrize("stage", ["prepare", "synthesize"])
@pytest.mark.parametrize("typo", [["--confg", "my.yaml"], ["--sett", "data.num_shards=2"],
                                  ["--runner=DirectRunner"]])
def test_unknown_flags_are_errors_not_beam_options(stage, typo, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([stage, "--output_dir", str(tmp_path / "out"), *typo])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"mer {stage}: error: unrecognized arguments: {' '.join(typo)}" in err and "after `--`" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("stage", ["prepare", "synthesize"])
@pytest.mark.parametrize("args, message", [
    (["--config", "{tmp}/my.yaml"], "config file not found: {tmp}/my.yaml"),
    (["--config", "{tmp}/my.json"], "config file not found: {tmp}/my.json"),
    (["--set", "data.history_length=-3"], "config data.history_length=-3: expected >= 1"),
    (["--set", "data.num_shards=0"], "config data.num_shards=0: expected >= 1"),
    (["--set", "data.split.quantile=1.5"], "config data.split.quantile=1.5: expected in (0, 1)"),
    (["--set", "train.batch_size=0"], "config train.batch_size=0: expected >= 1"),
    (["--set", "model.num_interests=0"], "config model.num_interests=0: expected >= 1"),
    (["--set", "data.split.timestamp=0"], "config data.split.timestamp=0: data.split.mode=timestamp needs"),
])
def test_bad_config_is_one_line_and_exit_2(stage, args, message, tmp_path, capsys):
    args = [a.format(tmp=tmp_path) for a in args]
    assert cli.main([stage, "--output_dir", str(tmp_path / "out"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mer {stage}: error: {message.format(tmp=tmp_path)}"), err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_synthesize_refuses_an_earlier_world(tmp_path, capsys):
    out = tmp_path / "raw"
    out.mkdir()
    (out / "events-00000-of-00004.csv").write_text("user_id,item_id,timestamp\n")
    (out / "notes.txt").write_text("not a synthesize output: kept\n")
    assert cli.main(["synthesize", "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mer synthesize: error: output directory {out} already holds a `mer synthesize` run "
                          "(1 files") and "--overwrite" in err
