"""The shipped deployment paths work as written: the Kubeflow / Vertex specs
and the Dockerfiles run the real entry points with flags they accept, every
path, module and command that deploy/ and docs/deploy.md name exists, the
serving dependencies are an extra imported lazily, and an installed wheel
carries the config presets."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import os
import pathlib
import re
import sys

import pytest
import yaml

from mer_testing import REPO
from trainer.config import config_to_dict
from trainer.task import parser


def _task_args(container: dict) -> list[str]:
    assert container["command"] == ["python", "-m", "trainer.task"]
    return container["args"]


def test_kubeflow_tfjob_runs_trainer_task_on_two_workers():
    job = yaml.safe_load((REPO / "deploy" / "kubeflow-tfjob.yaml").read_text())
    assert job["kind"] == "TFJob" and job["apiVersion"] == "kubeflow.org/v1"
    worker = job["spec"]["tfReplicaSpecs"]["Worker"]
    assert worker["replicas"] >= 2
    container = worker["template"]["spec"]["containers"][0]
    assert container["name"] == "tensorflow"
    args = parser().parse_args(_task_args(container))
    assert args.data_dir.startswith("gs://") and args.checkpoint_dir.startswith("gs://")


def test_vertex_customjob_pools_run_the_same_job():
    spec = yaml.safe_load((REPO / "deploy" / "vertex-customjob.yaml").read_text())
    pools = spec["workerPoolSpecs"]
    assert len(pools) == 2 and pools[0]["replicaCount"] == 1
    argv = [_task_args(p["containerSpec"]) for p in pools]
    assert argv[0] == argv[1]
    args = parser().parse_args(argv[0])
    assert args.model_dir is None  # Vertex provides AIP_MODEL_DIR
    assert spec["baseOutputDirectory"]["outputUriPrefix"].startswith("gs://")


# -- helpers -------------------------------------------------------------------
DEPLOY = REPO / "deploy"
DOCKERFILES = sorted(DEPLOY.glob("Dockerfile.*"))
SPECS = sorted(DEPLOY.glob("*.yaml"))
PACKAGE_DIRS = ("common", "trainer", "serving", "beam", "export", "mer")
SERVING_MODULES = ("scann", "grpc_health", "prometheus_client")


def _setup_kwargs() -> dict:
    """What setup.py passes to `setup()` (run with `setup` captured)."""
    import runpy

    import setuptools

    captured = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(setuptools, "setup", lambda **kwargs: captured.update(kwargs))
        mp.chdir(REPO)
        runpy.run_path(str(REPO / "setup.py"))
    return captured


def _dockerfile(path: pathlib.Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    lines, pending = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        word, _, rest = line.partition(" ")
        lines.append((word.upper(), rest.strip()))
    return lines


def _instruction(path: pathlib.Path, name: str) -> list[str]:
    return [rest for word, rest in _dockerfile(path) if word == name]


def _exec_form(path: pathlib.Path, name: str) -> list[str]:
    (rest,) = _instruction(path, name)
    value = json.loads(rest)  # exec form, so signals reach the process
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), (path.name, name, rest)
    return value


def _extras(path: pathlib.Path) -> list[str]:
    """The extras of the image's `pip install ".[a,b]"`."""
    (run,) = [r for r in _instruction(path, "RUN") if "pip install" in r]
    found = re.findall(r"\.\[([\w,-]+)\]", run)
    return found[0].split(",") if found else []


def _containers(spec: dict) -> list[dict]:
    """Every container of a Kubeflow TFJob or Vertex (custom / tuning) job spec."""
    if spec.get("kind") == "TFJob":
        replicas = spec["spec"]["tfReplicaSpecs"].values()
        return [c for replica in replicas for c in replica["template"]["spec"]["containers"]]
    pools = spec.get("workerPoolSpecs") or spec["trialJobSpec"]["workerPoolSpecs"]
    return [{"image": p["containerSpec"]["imageUri"], **p["containerSpec"]} for p in pools]


# -- every path, module and command named by deploy/ exists ---------------------
def test_deploy_dir_has_the_specs_and_both_dockerfiles():
    assert {p.name for p in DOCKERFILES} == {"Dockerfile.train", "Dockerfile.serve"}
    assert {p.name for p in SPECS} >= {"kubeflow-tfjob.yaml", "vertex-customjob.yaml", "vertex-hptuning.yaml"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_copies_the_package_and_installs_an_existing_extra(dockerfile):
    assert _instruction(dockerfile, "FROM") == ["python:3.11-slim"]
    copied = set()
    for rest in _instruction(dockerfile, "COPY"):
        *sources, _ = rest.split()
        for source in sources:
            assert (REPO / source).exists(), f"{dockerfile.name}: COPY {source}: no such path in the repo"
            copied.add(source.rstrip("/"))
    # Every package setup.py builds is copied in (else `pip install .` silently drops it).
    tops = {name.split(".")[0] for name in _setup_kwargs()["packages"]}
    assert tops <= copied and "setup.py" in copied, (dockerfile.name, tops - copied)
    extras = _extras(dockerfile)
    assert extras, f"{dockerfile.name}: installs the package with an extra"
    for extra in extras:
        assert extra in _setup_kwargs()["extras_require"], (dockerfile.name, extra)


def test_train_image_entrypoint_is_the_training_module():
    dockerfile = DEPLOY / "Dockerfile.train"
    entry = _exec_form(dockerfile, "ENTRYPOINT")
    assert entry == ["python", "-m", "trainer.task"]
    assert importlib.util.find_spec(entry[2]) is not None
    assert "gcp" in _extras(dockerfile)
    # The Kubeflow pipeline runs every stage in this image: ScaNN for build-index, KFP's executor.
    assert {"serving", "kubeflow"} <= set(_extras(dockerfile))


def test_serve_image_entrypoint_is_the_mer_console_script_and_exposes_its_ports():
    from serving.main import serve_parser

    dockerfile = DEPLOY / "Dockerfile.serve"
    entry = _exec_form(dockerfile, "ENTRYPOINT")
    assert entry[:2] == ["mer", "serve"]
    scripts = dict(s.split("=", 1) for s in _setup_kwargs()["entry_points"]["console_scripts"])
    module, _, function = scripts["mer"].partition(":")
    cli = importlib.import_module(module)
    assert callable(getattr(cli, function)) and "serve" in cli.DELEGATED
    args = serve_parser().parse_args(_exec_form(dockerfile, "CMD"))
    assert args.host == "0.0.0.0" and args.export_dir == "/models"
    exposed = {int(p) for rest in _instruction(dockerfile, "EXPOSE") for p in rest.split()}
    assert exposed == {args.port, args.model_server_port} == {8600, 8500}
    # ScaNN, gRPC health and Prometheus come with the image.
    assert "serving" in _extras(dockerfile)


@pytest.mark.parametrize("spec_path", SPECS, ids=lambda p: p.name)
def test_specs_run_the_train_image_entrypoint_with_flags_it_accepts(spec_path):
    from trainer.task import config_from_args, parse_args

    spec = yaml.safe_load(spec_path.read_text())
    entry = _exec_form(DEPLOY / "Dockerfile.train", "ENTRYPOINT")
    for container in _containers(spec):
        assert container["image"].endswith("/mer-train:latest"), container["image"]
        assert container["command"] == entry  # same as the image's ENTRYPOINT
        args = parse_args(container["args"])
        config_from_args(args)  # preset and every override resolve


@pytest.mark.parametrize("path", [*SPECS, *DOCKERFILES, REPO / "docs" / "deploy.md"], ids=lambda p: p.name)
def test_paths_modules_and_commands_named_in_deploy_files_exist(path):
    from mer.cli import STAGES

    text = path.read_text()
    dirs = "deploy|docs|tests|trainer|serving|export|beam|common|mer"
    for named in re.findall(rf"(?<![\w/.])((?:{dirs})/[\w./-]*\w|setup\.py)", text):
        assert (REPO / named).exists(), f"{path.name} names {named}, which is not in the repo"
    for module in re.findall(r"python -m ([\w.]+)", text):
        assert importlib.util.find_spec(module) is not None, f"{path.name}: python -m {module}"
    for stage in re.findall(r"(?:^|[\s`\"(])mer ([a-z][\w-]*)", text):
        assert stage in STAGES, f"{path.name}: mer {stage} is not a stage"
    for preset in re.findall(r"--config[= ]([\w-]+)(?![\w./-])", text):
        from trainer.config import resolve_config_path

        resolve_config_path(preset)


def _doc_commands(text: str) -> list[list[str]]:
    """The commands of the ```bash blocks, continuation lines joined, comments dropped."""
    import shlex

    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            words = shlex.split(line, comments=True)
            if words:
                commands.append(words)
    return commands


def test_docs_commands_parse_with_the_real_parsers():
    from serving.main import query_parser, serve_parser
    from trainer.task import config_from_args, parse_args

    parsed = 0
    for words in _doc_commands((REPO / "docs" / "deploy.md").read_text()):
        images = [i for i, w in enumerate(words) if re.search(r"/mer-(train|serve):", w)]
        if words[:2] == ["docker", "run"] and images:  # arguments after the image go to its ENTRYPOINT
            train = "/mer-train:" in words[images[0]]
            entry = ["python", "-m", "trainer.task"] if train else ["mer", "serve"]
            words = entry + words[images[0] + 1:]
        if words[:3] == ["python", "-m", "trainer.task"]:
            config_from_args(parse_args(words[3:]))
        elif words[:2] == ["mer", "serve"]:
            serve_parser().parse_args(words[2:])
        elif words[:2] == ["mer", "query"]:
            query_parser().parse_args(words[2:])
        else:
            continue
        parsed += 1
    assert parsed >= 4


def test_vertex_tuning_parameters_are_trainer_flags_and_the_metric_is_reported():
    """Vertex passes `--<parameterId>=<value>` to every trial."""
    from trainer.task import config_from_args, parse_args

    spec = yaml.safe_load((DEPLOY / "vertex-hptuning.yaml").read_text())
    (container,) = _containers(spec)
    base = config_from_args(parse_args(container["args"]))
    (metric,) = spec["studySpec"]["metrics"]
    assert metric["metricId"] == f"val_hr_at_{base.train.validation_k}" and metric["goal"] == "MAXIMIZE"
    for param in spec["studySpec"]["parameters"]:
        if "doubleValueSpec" in param:
            value = param["doubleValueSpec"]["maxValue"]
        elif "integerValueSpec" in param:
            value = param["integerValueSpec"]["maxValue"]
        else:
            value = float(param["discreteValueSpec"]["values"][-1])  # Vertex sends discrete values as doubles
        cfg = config_from_args(parse_args([*container["args"], f"--{param['parameterId']}={value}"]))
        changed = {k: v for k, v in _flat(config_to_dict(cfg)).items() if _flat(config_to_dict(base))[k] != v}
        assert list(changed.values()) == [pytest.approx(value)], (param["parameterId"], changed)


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key: value})
    return out


# -- extras: the core install stays lean, serving deps are imported lazily -------
def test_serving_dependencies_are_an_extra_that_test_installs():
    kwargs = _setup_kwargs()
    names = lambda reqs: {re.split(r"[=<>\[; ]", r)[0].lower().replace("_", "-") for r in reqs}  # noqa: E731
    serving = names(kwargs["extras_require"]["serving"])
    assert serving == {"scann", "grpcio-health-checking", "prometheus-client"}
    assert not serving & names(kwargs["install_requires"])
    assert serving <= names(kwargs["extras_require"]["test"])  # `make test` installs .[test]
    assert names(kwargs["extras_require"]["gcp"]) == {"apache-beam"}
    assert any(r.startswith("apache-beam[gcp]==2.77") for r in kwargs["extras_require"]["gcp"])
    assert names(kwargs["extras_require"]["kubeflow"]) == {"kfp"}
    assert set(kwargs["extras_require"]["kubeflow"]) <= set(kwargs["extras_require"]["test"])  # CI runs the pipeline
    assert "configs/*.yaml" in kwargs["package_data"]["trainer"]


def test_no_module_imports_a_serving_dependency_at_import_time():
    """Module-level imports of scann / grpc_health / prometheus_client would
    break every stage of a core install; they go through common.extras."""
    offenders = []
    for package in PACKAGE_DIRS:
        for path in sorted((REPO / package).rglob("*.py")):
            tree = ast.parse(path.read_text())
            for node in tree.body:  # top level only: imports inside functions are lazy
                if isinstance(node, ast.Import):
                    modules = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom):
                    modules = [node.module or ""]
                else:
                    continue
                offenders += [f"{path.relative_to(REPO)}: {m}" for m in modules
                              if m.split(".")[0] in SERVING_MODULES]
    assert not offenders


@pytest.mark.parametrize("module", ["scann", "grpc_health", "prometheus_client"])
def test_a_missing_serving_dependency_says_how_to_install_it(module, monkeypatch):
    from common.extras import require

    for name in [n for n in sys.modules if n == module or n.startswith(module + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    with pytest.raises(ImportError, match=re.escape("pip install 'mer[serving]'")):
        require(f"{module}.anything" if module != "prometheus_client" else module)


def test_index_build_without_scann_names_the_extra(monkeypatch):
    import numpy as np

    from common.item_index import IndexConfig, build_index

    monkeypatch.setitem(sys.modules, "scann.scann_ops.py.scann_ops_pybind", None)
    with pytest.raises(ImportError, match=r"ScaNN index.*pip install 'mer\[serving\]'"):
        build_index(np.zeros((4, 2), np.float32), ["a", "b", "c", "d"], [[]] * 4, IndexConfig())


# -- the presets ship in the wheel -------------------------------------------------
def test_presets_are_package_data_and_configs_links_to_them():
    """The presets sit inside the `trainer` package (so a wheel carries
    them); `configs/` in the checkout is the same directory."""
    import trainer.config
    from trainer.config import CONFIG_DIR, load_config

    assert CONFIG_DIR == pathlib.Path(trainer.config.__file__).resolve().parent / "configs"
    assert (REPO / "configs").resolve() == CONFIG_DIR.resolve()
    assert load_config(str(REPO / "configs" / "paper.yaml")) == load_config("paper")


@pytest.mark.slow
def test_installed_wheel_resolves_the_presets_outside_the_checkout(tmp_path):
    """`pip install .` (not editable) + `--config paper` from another directory."""
    import shutil
    import subprocess

    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in _setup_kwargs()["packages"]:
        top = name.split(".")[0]
        if not (src / top).exists():
            shutil.copytree(REPO / top, src / top, ignore=ignore)
    shutil.copy(REPO / "setup.py", src / "setup.py")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    # No build isolation: setuptools comes from the venv (no index needed).
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"),
                    str(src)], check=True, cwd=tmp_path, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("mer-*.whl")
    target = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    probe = ("import json, trainer.config as c; cfg = c.load_config('paper'); "
             "print(json.dumps([c.__file__, str(c.resolve_config_path('paper')), cfg.name, "
             "sorted(p.stem for p in c.CONFIG_DIR.glob('*.yaml'))]))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=elsewhere, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(target)}, timeout=120)
    assert out.returncode == 0, out.stderr
    module, preset, name, presets = json.loads(out.stdout)
    assert module.startswith(str(target)) and preset.startswith(str(target)), (module, preset)
    assert name == "paper"
    assert presets == sorted(p.stem for p in (REPO / "trainer" / "configs").glob("*.yaml"))
