"""The registry: one namespaced baselines branch (stl.<task>) per task of the run's own
configuration, its env and --params, known before any node runs."""

from conftest import PROJECT_ROOT
from kedro.framework.project import pipelines
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from multitask_cnn.pipeline_registry import register_pipelines


def _branches(pipeline) -> list[str]:
    return sorted(n.namespace.split(".")[1] for n in pipeline.nodes
                  if n.name.endswith(".train_baseline"))  # fmt: skip


def test_each_task_of_the_sessions_config_gets_a_branch_from_one_template():
    bootstrap_project(PROJECT_ROOT)
    # no session (kedro registry, kedro-viz): the default env's tasks
    assert _branches(register_pipelines()["baselines"]) == ["left", "right"]
    with KedroSession.create(project_path=PROJECT_ROOT, env="fusion") as session:
        session.load_context()
        baselines = pipelines["baselines"]
        assert _branches(baselines) == ["digit", "left", "right"]
        assert _branches(pipelines["__default__"]) == ["digit", "left", "right"]
    digit = next(n for n in baselines.nodes if n.name == "stl.digit.train_baseline")
    # its own previous checkpoint, progress and outputs; the run's data and parameters
    assert set(digit.inputs) == {
        "model_input_train", "model_input_val", "normalisation_stats", "provenance",
        "initial_state", "params:tasks", "params:model", "params:training",
        "params:transfer", "stl.digit.previous_baseline", "stl.digit.baseline_progress",
    }  # fmt: skip
    assert digit.outputs == [
        "stl.digit.baseline_checkpoint",
        "stl.digit.baseline_history",
    ]
    gather = next(n for n in baselines.nodes if n.name == "stl.collect_baselines")
    assert gather.outputs == ["baseline_checkpoints"]
    assert sorted(gather.inputs) == [f"stl.{t}.baseline_checkpoint"
                                     for t in ("digit", "left", "right")]  # fmt: skip

    # --params add a task: it gets a branch too
    shoes = {"tasks": {"shoes": {"kind": "binary", "label": "footwear"}}}
    with KedroSession.create(project_path=PROJECT_ROOT, env="smoke",
                             runtime_params=shoes) as session:  # fmt: skip
        session.load_context()
        assert _branches(pipelines["baselines"]) == ["left", "right", "shoes"]
