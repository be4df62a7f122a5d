import pytest

from mer import cli


@pytest.mark.parametrize("stage", ["demo"])
def test_unbuilt_stages_say_so(stage, capsys):
    assert cli.main([stage]) == 2
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
