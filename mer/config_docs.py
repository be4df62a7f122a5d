"""`python -m mer.config_docs`: the configuration reference, generated from the dataclasses.

Why generated: the dataclass docstrings (`Attributes:` sections) are the one
place a setting is described; a hand-written page would drift from them.
`tests/test_config_docs.py` fails when `docs/configuration.md` is out of
date or a field has no description, so the page and the code change
together:

  python -m mer.config_docs            # rewrite docs/configuration.md
  python -m mer.config_docs --check    # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import pathlib
import re
import sys
import typing
from typing import Any

DEFAULT_OUTPUT = pathlib.Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
_ENTRY = re.compile(r"^(\w+)(?: \([^)]*\))?:\s*(.*)$")


def _doc(cls: type) -> str:
    """The class's own docstring, dedented ('' for the dataclass-generated signature)."""
    return inspect.cleandoc(cls.__dict__.get("__doc__") or "")


def attribute_docs(cls: type) -> dict[str, str]:
    """`{field: description}` from the Google-style `Attributes:` section of `cls`'s docstring.

    An entry is `name: text` one level under `Attributes:`; deeper-indented
    lines continue it. The section ends at a blank line or a line at or
    above its own indentation.
    """
    lines = _doc(cls).splitlines()
    out: dict[str, str] = {}
    starts = [i for i, line in enumerate(lines) if line.strip() == "Attributes:"]
    if not starts:
        return out
    head = lines[starts[0]]
    section_indent = len(head) - len(head.lstrip())
    entry_indent = None
    name = None
    for line in lines[starts[0] + 1:]:
        if not line.strip():
            break
        indent = len(line) - len(line.lstrip())
        if indent <= section_indent:
            break
        if entry_indent is None:
            entry_indent = indent
        match = _ENTRY.match(line.strip()) if indent == entry_indent else None
        if match:
            name = match.group(1)
            out[name] = match.group(2)
        elif name is not None:
            out[name] = f"{out[name]} {line.strip()}".strip()
    return out


def class_summary(cls: type) -> str:
    """The docstring text before `Attributes:`, paragraphs joined into lines."""
    text = _doc(cls).split("Attributes:", 1)[0].strip()
    return "\n\n".join(" ".join(p.split()) for p in text.split("\n\n") if p.strip())


def _nested(cls: type) -> dict[str, type]:
    """Fields of `cls` that are dataclasses themselves -> their class."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if dataclasses.is_dataclass(hints[f.name])}


def _walk(cls: type, prefix: str = "") -> list[tuple[str, type]]:
    """`(dotted prefix, class)` of `cls` and every nested config dataclass, depth first."""
    found = [(prefix, cls)]
    for name, sub in _nested(cls).items():
        found += _walk(sub, f"{prefix}{name}.")
    return found


def _sections() -> list[dict[str, Any]]:
    """The documented configs: what they configure, how to set them, their classes."""
    from common.item_index import KINDS, IndexConfig
    from serving.retrieval_config import RetrievalConfig
    from trainer.config import MerConfig

    return [
        {"title": "Pipeline config (`MerConfig`)", "root": MerConfig, "module": "trainer/config.py",
         "intro": "Read by `mer synthesize`, `mer prepare`, `mer train` (= `python -m trainer.task`) and "
                  "`mer demo` from `--config` (a preset name or a YAML/JSON file), then `--set key=value` "
                  "overrides (values parsed as YAML). The training job also takes every key as a flag: "
                  "`--train.learning_rate=0.01`, or `--learning_rate=0.01` where the last part of the key is "
                  "unique (what Vertex hyperparameter tuning passes). The resolved config is validated before "
                  "anything runs and written next to every artifact (`config.yaml`)."},
        {"title": "Retrieval service (`RetrievalConfig`)", "root": RetrievalConfig,
         "module": "serving/retrieval_config.py",
         "intro": "The settings of the retrieval service (`serving/retrieval_server.py`). `mer serve` sets "
                  f"{_serve_flags(RetrievalConfig)} from its flags of the same name "
                  "(`--model_server` defaults to starting the embedded model server); the other fields keep "
                  "their defaults unless the service is built in Python (`RetrievalServer(RetrievalConfig(...))`)."},
        {"title": "ScaNN index (`IndexConfig`)", "root": IndexConfig, "module": "common/item_index.py",
         "intro": "How `mer build-index` indexes a retriever's item embeddings; any field can be set with "
                  "`--set FIELD=VALUE` (repeatable), e.g. `mer build-index --export_dir runs/serving "
                  "--set kind=tree_ah --set leaves_to_search=60`. The resolved config is saved in the index's "
                  "`build.json`.",
         "allowed": {"kind": " ".join(f"`{k}`" for k in KINDS)}},
    ]


def _serve_flags(cls: type) -> str:
    """The `RetrievalConfig` fields that `mer serve` has a flag for, as Markdown."""
    from serving.main import serve_parser

    flags = {opt.lstrip("-") for action in serve_parser()._actions for opt in action.option_strings}
    names = [f"`{f.name}`" for f in dataclasses.fields(cls) if f.name in flags]
    return ", ".join(names[:-1]) + f" and {names[-1]}" if len(names) > 1 else "".join(names)


def _mer_allowed() -> dict[str, str]:
    """Dotted `MerConfig` key -> the values `trainer.config.validate` accepts."""
    from trainer import config

    allowed = {".".join(path): " ".join(f"`{v}`" for v in values) for path, values in config._CHOICES.items()}
    for key, (_, text) in config._RANGES.items():
        allowed.setdefault(key, text)
    return allowed


def _type_name(field: dataclasses.Field) -> str:
    return field.type if isinstance(field.type, str) else getattr(field.type, "__name__", str(field.type))


def _default(field: dataclasses.Field) -> str:
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        return "required"
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, (str, list)):
        return f"`{json.dumps(value)}`"
    return f"`{value}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def missing_descriptions() -> list[str]:
    """`Class.field` of every documented field without an `Attributes:` entry, and of
    every entry that names no field (a renamed or removed field)."""
    problems = []
    for section in _sections():
        for _, cls in _walk(section["root"]):
            documented = attribute_docs(cls)
            names = [f.name for f in dataclasses.fields(cls)]
            problems += [f"{cls.__name__}.{n}: no description" for n in names if not documented.get(n)]
            problems += [f"{cls.__name__}.{n}: described but not a field" for n in documented if n not in names]
    return problems


def render() -> str:
    """The whole Markdown page.

    Raises:
      ValueError: a field has no description (listing every one).
    """
    problems = missing_descriptions()
    if problems:
        raise ValueError("config docstrings: " + "; ".join(problems))
    from trainer.config import CONFIG_DIR

    out = [
        "# Configuration reference",
        "",
        "<!-- Generated by `python -m mer.config_docs` from the dataclass docstrings; do not edit by hand. -->",
        "",
        "Every setting of `mer`, generated from the typed dataclass configs and their docstrings "
        "(`python -m mer.config_docs` rewrites this page; `tests/test_config_docs.py` fails when it is out "
        "of date). \"allowed\" is what the config validation accepts.",
        "",
    ]
    presets = sorted(CONFIG_DIR.glob("*.yaml"))
    out += ["Presets (`--config NAME`, in `trainer/configs/`, shipped with the package):", ""]
    for path in presets:
        first = path.read_text().splitlines()[0] if path.read_text() else ""
        note = first.lstrip("#").strip() if first.startswith("#") else ""
        out.append(f"- `{path.stem}`" + (f": {note}" if note else ""))
    out.append("")
    for section in _sections():
        allowed = _mer_allowed() if section["root"].__name__ == "MerConfig" else section.get("allowed", {})
        out += [f"## {section['title']}", "", f"`{section['module']}`. {section['intro']}", ""]
        for prefix, cls in _walk(section["root"]):
            heading = f"`{prefix.rstrip('.')}`" if prefix else "top level"
            out += [f"### {heading} — `{cls.__name__}`", ""]
            summary = class_summary(cls)
            if summary:
                out += [summary, ""]
            docs = attribute_docs(cls)
            nested = _nested(cls)
            rows = [f for f in dataclasses.fields(cls) if f.name not in nested]
            if not rows:
                continue
            out += ["| key | type | default | allowed | description |", "|---|---|---|---|---|"]
            for field in rows:
                key = prefix + field.name
                out.append(f"| `{key}` | `{_cell(_type_name(field))}` | {_cell(_default(field))} | "
                           f"{_cell(allowed.get(key, ''))} | {_cell(docs[field.name])} |")
            out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mer.config_docs", description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT), help="the page to write (default: %(default)s)")
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if the page is out of date")
    args = parser.parse_args(argv)
    try:
        page = render()
    except ValueError as err:
        print(f"mer.config_docs: error: {err}", file=sys.stderr)
        return 1
    path = pathlib.Path(args.output)
    if args.check:
        if not path.is_file() or path.read_text() != page:
            print(f"mer.config_docs: {path} is out of date; run `python -m mer.config_docs`", file=sys.stderr)
            return 1
        return 0
    path.write_text(page)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
