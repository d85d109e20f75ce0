"""What each insight part costs: the four ``assess_*`` nodes of the ``insight``
pipeline, each with only its own part on, timed on the models and data the last
``kedro run`` left on disk (the catalog's files), against that run's training time.

    KEDRO_DISABLE_TELEMETRY=1 .venv/bin/python bench/insight_cost.py  # after `make run`
    ... --env smoke                                                  # after `make smoke`

Prints seconds per part (median of ``--repeats``) and each as a share of the training
the run did (the multi-task model and the single-task models: their checkpoints'
``train_seconds``).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time

from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from multitask_cnn.pipelines.insight import nodes

PARTS = {
    "sharing": (nodes.assess_sharing, ["model_input_test", "normalisation_stats"]),
    "saliency": (nodes.assess_saliency, ["model_input_test", "normalisation_stats"]),
    "robustness": (nodes.assess_robustness, ["model_input_test", "normalisation_stats"]),
    "generalisation": (
        nodes.assess_generalisation,
        ["model_input_train", "model_input_val", "model_input_test",
         "normalisation_stats", "fashion_mnist", "params:data_prep"],
    ),
}  # fmt: skip
MODELS = ["multitask_checkpoint", "baseline_checkpoints"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--env", default=None, help="Kedro environment (default: local)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    bootstrap_project(".")
    with KedroSession.create(env=args.env) as session:
        catalog = session.load_context().catalog
        load = {name: catalog.load(name) for name in
                {*MODELS, *(n for _, names in PARTS.values() for n in names)}}  # fmt: skip
        settings = [
            catalog.load(f"params:{p}") for p in ("tasks", "evaluation", "insight")
        ]
    logging.getLogger("multitask_cnn").setLevel(logging.WARNING)  # the nodes' progress
    multitask, baselines = load["multitask_checkpoint"], load["baseline_checkpoints"]
    trained = multitask["train_seconds"] + sum(
        baselines[task]["train_seconds"] for task in settings[0]
    )
    print(f"training in the run: {trained:.1f} s (multi-task and single-task models)")
    print(f"{'part':<16}{'seconds':>9}{'share of training':>20}")
    for part, (node, inputs) in PARTS.items():
        insight = settings[2] | {p: p == part for p in PARTS}
        seconds = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            node(multitask, baselines, *(load[n] for n in inputs), settings[0],
                 settings[1], insight)  # fmt: skip
            seconds.append(time.perf_counter() - start)
        median = statistics.median(seconds)
        print(f"{part:<16}{median:>9.2f}{median / trained:>19.1%}")


if __name__ == "__main__":
    main()
