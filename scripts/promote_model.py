"""Point an alias of the registered multi-task model at a version (`make promote`).

    .venv/bin/python scripts/promote_model.py --version 3 [--alias champion] [--name multitask-cnn]

Uses the project's MLflow store (``mlflow.db`` at the project root) unless
``MLFLOW_TRACKING_URI`` names another. A caller then loads
``models:/multitask-cnn@champion``.
"""

from __future__ import annotations

import argparse
import logging

from mlflow.tracking import MlflowClient

from multitask_cnn.settings import mlflow_tracking_uri

logger = logging.getLogger("promote_model")


def promote(name: str, version: str, alias: str, tracking_uri: str) -> None:
    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_model_version(name, version)  # raises when there is none
    client.set_registered_model_alias(name, alias, found.version)
    logger.info(
        "%s@%s is version %s (run %s)", name, alias, found.version, found.run_id
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", required=True)
    parser.add_argument("--alias", default="champion")
    parser.add_argument("--name", default="multitask-cnn")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    promote(args.name, args.version, args.alias, mlflow_tracking_uri())


if __name__ == "__main__":
    main()
