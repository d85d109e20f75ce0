"""The command line a run is tagged with repeats the run: Kedro's own CLI reads it back
to the same environment, selection and parameters."""

import shlex

import pytest
from kedro.framework.cli.project import run as kedro_run

from multitask_cnn.provenance import kedro_command


def _parse(command: str) -> dict:
    words = shlex.split(command)
    assert words[:2] == ["kedro", "run"]
    return kedro_run.make_context("run", words[2:]).params


@pytest.mark.parametrize(
    ("run_params", "expected"),
    [
        (
            {"env": "smoke", "pipeline_names": ["__default__"], "runtime_params": {}},
            {"env": "smoke", "pipelines": [], "params": {}},
        ),
        (
            {
                "env": "smoke",
                "runner": "<kedro.runner.parallel_runner.ParallelRunner "
                "object at 0x7f>",
                "runtime_params": None,
            },
            {"env": "smoke", "pipelines": [], "params": {}, "runner": "ParallelRunner"},
        ),
        (
            {
                "env": None,  # Kedro's default env
                "pipeline_names": ["pretraining", "multitask_training"],
                "node_names": ["train_multitask_model"],
                "only_missing_outputs": True,
                # what a `kedro run` from the command line records
                "runner": "<kedro.runner.sequential_runner.SequentialRunner object at 0x7f>",
                "runtime_params": {
                    "training": {"epochs": 3, "lr": 0.01, "deterministic": True},
                    "tasks": {"shoes": {"label": "foot wear", "kind": "binary"}},
                    "mlflow_run_id": "abc",  # where to log, not what to run
                },
            },
            {
                "env": "local",
                "pipelines": ["pretraining", "multitask_training"],
                "params": {
                    "training": {"epochs": 3, "lr": 0.01, "deterministic": True},
                    "tasks": {"shoes": {"label": "foot wear", "kind": "binary"}},
                },
            },
        ),
    ],
)
def test_the_tagged_command_reads_back_to_the_same_run(run_params, expected):
    command = kedro_command(run_params)
    parsed = _parse(command)
    assert parsed["env"] == expected["env"]
    assert parsed["pipelines"] == expected["pipelines"]
    assert (parsed["params"] or {}) == expected["params"]
    assert parsed["only_missing_outputs"] == bool(
        run_params.get("only_missing_outputs")
    )
    assert parsed["node_names"] == (run_params.get("node_names") or [])
    assert parsed["runner"] == expected.get("runner")
