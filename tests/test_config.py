import re

import pytest

from trainer.config import CONFIG_DIR, dump_config, load_config


@pytest.mark.parametrize("preset", ["synthetic-small", "movielens-small", "ml-100k", "paper"])
def test_presets_load_and_roundtrip(preset, tmp_path):
    cfg = load_config(preset)
    assert cfg.name == preset
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_config(cfg))
    assert load_config(str(path)) == cfg


def test_every_yaml_in_configs_is_tested():
    assert {p.stem for p in CONFIG_DIR.glob("*.yaml")} == {
        "synthetic-small", "movielens-small", "ml-100k", "paper"}


def test_overrides_are_typed():
    cfg = load_config("synthetic-small", ["data.history_length=7", "data.negative_actions=[a, b]"])
    assert cfg.data.history_length == 7
    assert cfg.data.negative_actions == ["a", "b"]


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.histroy_length=3", "unknown key(s) ['histroy_length']"),
        ("data.history_length=abc", "data.history_length: expected int"),
        ("data.split.mode=random", "'random' is not one of ['quantile', 'timestamp']"),
        ("data.derive_follows=maybe", "expected true/false"),
    ],
)
def test_bad_overrides_name_key_and_allowed(override, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        load_config("synthetic-small", [override])


def test_unknown_preset_lists_presets():
    with pytest.raises(FileNotFoundError, match="presets:"):
        load_config("nope")
