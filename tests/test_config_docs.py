"""The generated configuration reference (`docs/configuration.md`) is complete and current."""

import dataclasses

import pytest

from mer import config_docs


def test_every_config_field_has_a_description():
    assert config_docs.missing_descriptions() == [], (
        "describe each field in its dataclass's `Attributes:` docstring section")


def test_committed_page_is_up_to_date():
    committed = config_docs.DEFAULT_OUTPUT.read_text()
    assert committed == config_docs.render(), (
        f"{config_docs.DEFAULT_OUTPUT} is out of date: run `python -m mer.config_docs` and commit it")


def test_check_flag(tmp_path):
    page = tmp_path / "configuration.md"
    assert config_docs.main(["--check", "--output", str(page)]) == 1
    assert config_docs.main(["--output", str(page)]) == 0
    assert config_docs.main(["--check", "--output", str(page)]) == 0


def test_attribute_docs_parses_continuations_and_stops_at_the_section_end():
    @dataclasses.dataclass
    class Example:
        """Summary.

        Why it exists.

        Attributes:
          alpha: first line
            continued here.
          beta (int): typed form.

        Returns:
          gamma: not an attribute.
        """

        alpha: int = 1
        beta: int = 2

    assert config_docs.attribute_docs(Example) == {"alpha": "first line continued here.", "beta": "typed form."}
    assert config_docs.class_summary(Example) == "Summary.\n\nWhy it exists."


def test_every_key_appears_once_in_the_page():
    from trainer.config import config_keys

    page = config_docs.render()
    for key in config_keys():
        assert page.count(f"| `{key}` |") == 1, key


def test_a_missing_description_stops_the_generator(monkeypatch):
    real = config_docs.attribute_docs
    monkeypatch.setattr(config_docs, "attribute_docs",
                        lambda cls: {k: v for k, v in real(cls).items() if k != "learning_rate"})
    assert "TrainConfig.learning_rate: no description" in config_docs.missing_descriptions()
    with pytest.raises(ValueError, match="TrainConfig.learning_rate"):
        config_docs.render()
