import json
import re

import pytest

from trainer.config import (_RANGES, CONFIG_DIR, MerConfig, _leaves, config_to_dict, dump_config,
                            load_config, validate)


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


@pytest.mark.parametrize("preset", sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
def test_every_preset_states_its_epochs(preset):
    """The code default (`train.epochs=1`) must not apply to a preset silently."""
    import yaml

    raw = yaml.safe_load((CONFIG_DIR / f"{preset}.yaml").read_text())
    assert isinstance(raw.get("train", {}).get("epochs"), int), f"{preset}.yaml: no train.epochs"


def test_overrides_are_typed():
    cfg = load_config("synthetic-small", ["data.history_length=7", "data.negative_actions=[a, b]"])
    assert cfg.data.history_length == 7
    assert cfg.data.negative_actions == ["a", "b"]


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.histroy_length=3", "unknown key(s) ['histroy_length']"),
        ("data.history_length=abc", "data.history_length: expected int"),
        ("data.split.mode=random", "'random' is not one of ['quantile', 'timestamp', 'per_user']"),
        ("data.derive_follows=maybe", "expected true/false"),
    ],
)
def test_bad_overrides_name_key_and_allowed(override, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        load_config("synthetic-small", [override])


def test_unknown_preset_lists_presets():
    with pytest.raises(FileNotFoundError, match="presets:"):
        load_config("nope")


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.history_length=-3", "data.history_length=-3: expected >= 1"),
        ("data.min_history=0", "data.min_history=0: expected >= 1"),
        ("data.num_shards=0", "data.num_shards=0: expected >= 1"),
        ("data.synthetic.num_shards=0", "data.synthetic.num_shards=0: expected >= 1"),
        ("data.synthetic.num_users=0", "data.synthetic.num_users=0: expected >= 1"),
        ("data.synthetic.explicit_share=1.5", "data.synthetic.explicit_share=1.5: expected in [0, 1]"),
        ("data.split.quantile=1.5", "data.split.quantile=1.5: expected in (0, 1)"),
        ("data.split.quantile=0", "data.split.quantile=0.0: expected in (0, 1)"),
        ("data.follow_min_share=-0.1", "data.follow_min_share=-0.1: expected in [0, 1]"),
        ("data.source.item_vector_dim=-1", "data.source.item_vector_dim=-1: expected >= 0"),
        ("train.batch_size=0", "train.batch_size=0: expected >= 1"),
        ("train.epochs=0", "train.epochs=0: expected >= 1"),
        ("train.learning_rate=-0.1", "train.learning_rate=-0.1: expected >= 0"),
        ("train.learning_rate=.inf", "train.learning_rate=inf: expected >= 0"),
        ("train.validation_fraction=1", "train.validation_fraction=1.0: expected in [0, 1)"),
        ("train.steps_per_epoch=-1", "train.steps_per_epoch=-1: expected >= 0"),
        ("model.num_interests=0", "model.num_interests=0: expected >= 1"),
        ("model.temperature=0", "model.temperature=0.0: expected > 0"),
        ("model.temperature=.nan", "model.temperature=nan: expected > 0"),
        ("model.frequency_alpha=0", "model.frequency_alpha=0.0: expected in (0, 1]"),
        ("model.dhen.transformer_heads=0", "model.dhen.transformer_heads=0: expected >= 1"),
        ("model.kind=dnn", "'dnn' is not one of ['single', 'dcm', 'mind', 'sa', 'tokens', 'pfs', 'cr']"),
        ("model.association=soft", "'soft' is not one of ['argmax', 'gumbel', 'max']"),
        ("model.init=zeros", "'zeros' is not one of ['va_fpi', 'fpi', 'gaussian']"),
        ("data.split.timestamp=0", "data.split.timestamp=0: data.split.mode=timestamp needs the cutoff"),
        ("data.split.timestamp=100", "data.split.timestamp=100: outside the synthetic world"),
    ],
)
def test_out_of_range_values_name_key_value_and_allowed(override, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        load_config("synthetic-small", [override])


def test_timestamp_split_without_a_timestamp_is_an_error():
    with pytest.raises(ValueError, match=re.escape("data.split.timestamp=0: data.split.mode=timestamp needs")):
        load_config(None, ["data.split.mode=timestamp"])


def test_a_global_loss_needs_the_global_interest():
    load_config("synthetic-small", ["model.global_loss_weight=1"])  # dcm + global interest: fine
    for overrides, got in ((["model.global_interest=false"], "global_interest=False, kind='dcm'"),
                           (["model.kind=single"], "global_interest=True, kind='single'")):
        with pytest.raises(ValueError, match=re.escape(
                "model.global_loss_weight=1.0: trains the global interest embedding, which needs "
                f"model.global_interest=true and an implicit model.kind (dcm, mind, sa, tokens, pfs); got {got}")):
            load_config("synthetic-small", ["model.global_loss_weight=1", *overrides])


def test_validate_checks_a_config_built_in_code():
    cfg = load_config("synthetic-small")
    cfg.model.routing_gradient = "some"
    cfg.train.seed = -1
    with pytest.raises(ValueError, match=re.escape("model.routing_gradient='some': expected one of ['last', 'all']; "
                                                   "train.seed=-1: expected >= 0")):
        validate(cfg)


def test_every_numeric_key_has_a_range():
    numeric = {key for key, value in _leaves(MerConfig()).items()
               if isinstance(value, (int, float)) and not isinstance(value, bool)}
    assert numeric == set(_RANGES)


def test_json_config_equals_yaml(tmp_path):
    cfg = load_config("synthetic-small", ["data.history_length=9"])
    (tmp_path / "c.json").write_text(json.dumps(config_to_dict(cfg)))
    assert load_config(str(tmp_path / "c.json")) == cfg


@pytest.mark.parametrize("name, text, message", [
    ("bad.json", '{"data": ', "config file {path}: not valid JSON: Expecting value"),
    ("bad.yaml", "data: [1,", "config file {path}: not valid YAML: "),
    ("list.json", "[1, 2]", "config <root>: expected a mapping"),
    ("c.txt", "{}", "config file {path}: unknown extension '.txt'; allowed: .yaml .yml .json"),
])
def test_malformed_config_files_are_one_line_errors(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError) as err:
        load_config(str(path))
    assert message.format(path=path) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["missing.yaml", "missing.json", "conf/missing"])
def test_missing_config_file_is_named(tmp_path, name):
    with pytest.raises(FileNotFoundError, match=re.escape(f"config file not found: {tmp_path / name}")):
        load_config(str(tmp_path / name))
