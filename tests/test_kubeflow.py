"""The Kubeflow pipeline (`mer.kubeflow`): its compiled YAML runs the six
stages in order on the training image, each through the real `mer` CLI,
and KFP's local runner runs it end to end on a shrunk synthetic world into
an export whose index answers a user's query."""

import ast
import json
import sys

import numpy as np
import pytest
import yaml

from beam.run import IN_MEMORY
from mer.kubeflow import DEFAULT_IMAGE, build_pipeline, compile_pipeline
from mer_testing import REPO

IMAGE = "example.com/mer/mer-train:test"
# display name -> (`mer` stage it runs, display names it waits for)
STAGES = {
    "prepare": ("prepare", set()),
    "train-implicit": ("train", {"prepare"}),
    "train-explicit": ("train", {"prepare"}),
    "evaluate": ("evaluate", {"train-implicit", "train-explicit"}),
    "export": ("export", {"train-implicit", "train-explicit", "evaluate"}),
    "embed-items": ("embed-items", {"export"}),
    "build-index": ("build-index", {"embed-items", "prepare"}),
}
# (display name, input) -> display name of the task whose output it is
WIRING = {
    ("train-implicit", "data_dir"): "prepare", ("train-explicit", "data_dir"): "prepare",
    ("evaluate", "implicit_model_dir"): "train-implicit", ("evaluate", "explicit_model_dir"): "train-explicit",
    ("export", "implicit_model_dir"): "train-implicit", ("export", "explicit_model_dir"): "train-explicit",
    ("embed-items", "export_dir"): "export",
    ("build-index", "export_dir"): "embed-items", ("build-index", "data_dir"): "prepare",
}
TINY = ["data.synthetic.num_users=60", "train.epochs=1", "train.steps_per_epoch=4", "train.batch_size=16",
        "model.sequence_layers=0"]


def _kfp():
    return pytest.importorskip("kfp", reason="the Kubeflow Pipelines SDK is not installed: "
                                             "pip install 'mer[kubeflow]' (make test installs it)")


def test_building_without_kfp_names_the_extra(monkeypatch):
    for name in [n for n in sys.modules if n == "kfp" or n.startswith("kfp.") or n == "mer.kubeflow.stages"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "kfp", None)  # import fails as if not installed
    with pytest.raises(ImportError, match=r"pip install 'mer\[kubeflow\]'"):
        build_pipeline()


# -- the compiled pipeline -------------------------------------------------------
@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    _kfp()
    path = compile_pipeline(str(tmp_path_factory.mktemp("kfp") / "mer-pipeline.yaml"), IMAGE)
    with open(path) as f:
        return yaml.safe_load(f)


def _tasks(spec: dict) -> dict:
    """Display name -> task spec of the root DAG."""
    return {task["taskInfo"]["name"]: task for task in spec["root"]["dag"]["tasks"].values()}


def _display(spec: dict) -> dict:
    """Task key -> display name."""
    return {key: task["taskInfo"]["name"] for key, task in spec["root"]["dag"]["tasks"].items()}


def _container(spec: dict, task: dict) -> dict:
    label = spec["components"][task["componentRef"]["name"]]["executorLabel"]
    return spec["deploymentSpec"]["executors"][label]["container"]


def _mer_stage(container: dict) -> str:
    """The `mer` stage the task's component function runs: parsed from the
    Python source KFP embeds in the container command."""
    function = container["args"][container["args"].index("--function_to_execute") + 1]
    for part in container["command"]:
        try:
            module = ast.parse(part)
        except SyntaxError:  # the shell lines
            continue
        defs = [n for n in module.body if isinstance(n, ast.FunctionDef) and n.name == function]
        if defs:
            break
    else:
        raise AssertionError(f"no source of {function} in the container command")
    (run,) = [n for n in ast.walk(defs[0]) if isinstance(n, ast.Call) and ast.unparse(n.func) == "subprocess.run"]
    argv = run.args[0]
    assert ast.unparse(argv.elts[0]) == "sys.executable"
    prefix = [e.value for e in argv.elts[1:4]]
    assert prefix[:2] == ["-m", "mer"], prefix
    assert {k.arg: ast.literal_eval(k.value) for k in run.keywords} == {"check": True}  # a failing stage fails the task
    return prefix[2]


def test_dag_has_the_six_stages_in_order_with_their_dependencies(compiled):
    tasks, display = _tasks(compiled), _display(compiled)
    assert set(tasks) == set(STAGES)
    for name, task in tasks.items():
        assert {display[d] for d in task.get("dependentTasks", [])} == STAGES[name][1], name
    # Topological order of the DAG: the flow's stage order.
    order, done = [], set()
    while len(done) < len(tasks):
        ready = sorted(n for n in tasks if n not in done and STAGES[n][1] <= done)
        assert ready, "cycle"
        order.append(ready)
        done |= set(ready)
    assert order == [["prepare"], ["train-explicit", "train-implicit"], ["evaluate"], ["export"], ["embed-items"],
                     ["build-index"]]


def test_directories_flow_from_task_outputs_and_parameters_from_the_run(compiled):
    tasks, display = _tasks(compiled), _display(compiled)
    for name, task in tasks.items():
        for key, value in task["inputs"]["parameters"].items():
            if "taskOutputParameter" in value:
                assert display[value["taskOutputParameter"]["producerTask"]] == WIRING[name, key], (name, key)
            else:
                assert (name, key) not in WIRING, (name, key)
    assert tasks["train-implicit"]["inputs"]["parameters"]["kind"] == {"componentInputParameter": "implicit_kind"}
    assert tasks["train-explicit"]["inputs"]["parameters"]["kind"] == {"runtimeValue": {"constant": "cr"}}
    for name in ("prepare", "train-implicit", "train-explicit", "export"):
        assert tasks[name]["inputs"]["parameters"]["run_dir"] == {"componentInputParameter": "run_dir"}
    (output,) = compiled["root"]["dag"]["outputs"]["parameters"].values()
    assert display[output["valueFromParameter"]["producerSubtask"]] == "build-index"
    run_inputs = compiled["root"]["inputDefinitions"]["parameters"]
    assert {"run_dir", "config", "seed", "overrides"} <= set(run_inputs)
    assert "defaultValue" not in run_inputs["run_dir"] and run_inputs["config"]["defaultValue"] == "synthetic-small"
    # No cache hits: the outputs live under run_dir, outside KFP's store.
    assert all(not task["cachingOptions"].get("enableCache") for task in tasks.values())


def test_every_task_runs_its_mer_stage_in_the_training_image(compiled):
    from mer.cli import STAGES as CLI_STAGES

    for name, task in _tasks(compiled).items():
        container = _container(compiled, task)
        assert container["image"] == IMAGE, name
        # The image carries kfp (the `kubeflow` extra): nothing is pip-installed when a pod starts.
        assert not any("pip install" in part for part in container["command"]), name
        stage = _mer_stage(container)
        assert stage == STAGES[name][0] and stage in CLI_STAGES, (name, stage)


def test_the_compiler_cli_writes_the_yaml_and_refuses_an_empty_image(tmp_path, capsys):
    _kfp()
    from mer.kubeflow.pipeline import main

    with pytest.raises(SystemExit) as no_image:  # no placeholder default: the image must be named
        main(["--output", str(tmp_path / "p.yaml")])
    assert no_image.value.code == 2 and "--image" in capsys.readouterr().err
    assert main(["--output", str(tmp_path / "p.yaml"), "--image", DEFAULT_IMAGE]) == 0
    spec = yaml.safe_load((tmp_path / "p.yaml").read_text())
    assert {_container(spec, t)["image"] for t in _tasks(spec).values()} == {DEFAULT_IMAGE}
    tfjob = yaml.safe_load((REPO / "deploy" / "kubeflow-tfjob.yaml").read_text())
    (worker,) = tfjob["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]["containers"]
    assert DEFAULT_IMAGE == worker["image"]  # the training image deploy/ names
    assert main(["--output", str(tmp_path / "q.yaml"), "--image", ""]) == 2
    assert "image=''" in capsys.readouterr().err and not (tmp_path / "q.yaml").exists()


# -- the stage functions' commands, through the real parsers ----------------------
def _captured(monkeypatch, on_run=None) -> list[list[str]]:
    import subprocess

    calls, real_run = [], subprocess.run

    def fake_run(argv, *args, **kwargs):
        if argv[:3] != [sys.executable, "-m", "mer"]:  # not a stage: `uname -p` (platform.processor()) as TensorFlow loads
            return real_run(argv, *args, **kwargs)
        assert kwargs == {"check": True} and not args
        calls.append(argv[3:])
        if on_run:
            on_run(argv[3:])

    monkeypatch.setattr(subprocess, "run", fake_run)
    return calls


def test_train_command_resolves_with_the_kind_and_seed_winning(monkeypatch, tmp_path):
    _kfp()
    from mer.kubeflow import stages
    from trainer.task import config_from_args, parse_args

    calls = _captured(monkeypatch)
    out = stages.train(data_dir="gs://b/run/data", run_dir="gs://b/run/", name="explicit", kind="cr",
                       config="synthetic-small", overrides=["model.kind=dcm", "train.seed=1", *TINY], seed=7)
    (argv,) = calls
    assert argv[0] == "train" and out == "gs://b/run/explicit"
    args = parse_args(argv[1:])
    assert (args.data_dir, args.model_dir) == ("gs://b/run/data", out)
    cfg = config_from_args(args)
    assert (cfg.model.kind, cfg.train.seed, cfg.train.batch_size, cfg.model.sequence_layers) == ("cr", 7, 16, 0)


def test_evaluate_command_parses_and_its_numbers_become_kfp_metrics(monkeypatch, tmp_path):
    _kfp()
    from kfp.dsl import Metrics

    from mer.kubeflow import stages
    from trainer.evaluate import parser

    report = {"records": 40, "hr": {"20": {"mean": 0.25}, "50": {"mean": 0.5}}, "served_hr": {"20": {"mean": 0.2}},
              "overlap": 0.125, "overlap_k": 50}

    def write_report(argv):
        args = parser().parse_args(argv[1:])
        with open(args.output, "w") as f:
            json.dump(report, f)

    calls = _captured(monkeypatch, write_report)
    metrics = Metrics(name="metrics", uri=str(tmp_path / "metrics"))
    out = stages.evaluate(implicit_model_dir=str(tmp_path), explicit_model_dir="cr_dir", max_records=40,
                          seed=3, metrics=metrics)
    (argv,) = calls
    args = parser().parse_args(argv[1:])
    assert argv[0] == "evaluate" and args.served and out == args.output == str(tmp_path / "evaluation.json")
    assert (args.explicit_model_dir, args.max_records, args.bootstrap_seed) == ("cr_dir", 40, 3)
    assert metrics.metadata == {"hr@20": 0.25, "hr@50": 0.5, "served_hr@20": 0.2, "overlap@50": 0.125, "records": 40}


# -- KFP's local runner, end to end ------------------------------------------------
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:You may be attemping:RuntimeWarning")  # the image is not a python:* one
def test_local_run_on_the_small_synthetic_world_builds_an_index_that_answers(tmp_path):
    _kfp()
    import tensorflow as tf
    from kfp import local

    from common import contract
    from common.item_index import exact_search, load_index
    from mer.demo import eval_requests

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "kfp-root"),
               workspace_root=str(tmp_path / "kfp-workspace"))
    run_dir = tmp_path / "run"
    task = build_pipeline()(run_dir=str(run_dir), config="synthetic-small", seed=0, overrides=TINY,
                            eval_records=100, beam_options=list(IN_MEMORY))
    export_dir = task.output
    assert export_dir == str(run_dir / "export")
    for model in ("user_implicit", "item_implicit", "user_explicit", "item_explicit"):
        assert (run_dir / "export" / model / "1" / contract.SAVED_MODEL).exists(), model
    assert (run_dir / "export" / contract.MODELS_CONFIG).exists()
    (executor_output,) = (tmp_path / "kfp-root").glob("*/evaluate/executor_output.json")
    (metrics,) = json.loads(executor_output.read_text())["artifacts"]["metrics"]["artifacts"]
    assert metrics["metadata"]["records"] == 100 and 0 <= metrics["metadata"]["hr@50"] <= 1

    # One eval user's history through the exported user tower, then the ScaNN index.
    (request,) = eval_requests(str(run_dir / "data"), 1)
    user = tf.saved_model.load(f"{export_dir}/user_implicit/1").signatures[contract.SIGNATURE]
    out = user(**{contract.HISTORY_ITEM_IDS: tf.constant([request["history"]]),
                  contract.HISTORY_NEGATIVE: tf.constant([[int(n) for n in request["negative"]]], tf.int64)})
    queries = out[contract.EMBEDDINGS].numpy()[0][out[contract.MASK].numpy()[0]]
    index = load_index(f"{export_dir}/index/implicit/1")
    rows, scores = index.search(queries, k=10)
    assert rows.shape == (len(queries), 10) and (rows >= 0).all()
    # The NumPy reference: exact dot-product search over the item tower's embeddings.
    item = tf.saved_model.load(f"{export_dir}/item_implicit/1").signatures[contract.SIGNATURE]
    db = item(**{contract.ITEM_IDS: tf.constant(index.item_ids)})[contract.EMBEDDINGS].numpy()
    _, exact = exact_search(db, queries, 10)
    np.testing.assert_allclose(scores, exact, rtol=1e-4, atol=1e-5)
    assert load_index(f"{export_dir}/index/explicit/1").item_ids == index.item_ids
