import pytest

from mer import cli


@pytest.mark.parametrize("stage", ["train", "evaluate", "export", "serve", "demo"])
def test_unbuilt_stages_say_so(stage, capsys):
    assert cli.main([stage]) == 2
    assert "does not exist yet" in capsys.readouterr().err
