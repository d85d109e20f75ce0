"""Shared fixtures: small slices of the real Fashion-MNIST, a throw-away project copy."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ["KEDRO_DISABLE_TELEMETRY"] = "1"  # before anything imports kedro
os.environ["DO_NOT_TRACK"] = "true"  # MLflow compares with "true"
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ.pop("MLFLOW_TRACKING_URI", None)  # each test picks its own store
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    # One test process per core (pytest -n auto): one thread each, and the same for the
    # kedro runs and workers they start, or the processes would fight for the cores.
    os.environ["OMP_NUM_THREADS"] = "1"

import pytest  # noqa: E402

from multitask_cnn import pipeline_registry  # noqa: E402
from multitask_cnn.data.fashion_mnist import (  # noqa: E402
    DEBIAN_DIR,
    FashionMNIST,
    find_fashion_mnist,
    read_fashion_mnist,
)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SMALL_DATA_PREP = {"n_train": 1200, "n_test": 400, "val_fraction": 0.25, "seed": 3}


@pytest.fixture(autouse=True)
def _registry_without_a_session():
    """Each test starts as in a fresh process: the registry keeps no task names of an
    earlier test's Kedro session (its baselines' branches follow the default env)."""
    pipeline_registry.use_session_config(None)


@pytest.fixture(scope="session")
def fashion_mnist_dir() -> Path:
    """The folder holding the real Fashion-MNIST files (no download in tests)."""
    return find_fashion_mnist([PROJECT_ROOT / "data/01_raw/fashion_mnist", DEBIAN_DIR])


@pytest.fixture(scope="session")
def fashion_mnist(fashion_mnist_dir: Path) -> FashionMNIST:
    return read_fashion_mnist(fashion_mnist_dir)


@pytest.fixture(scope="session")
def fashion_mnist_small(fashion_mnist: FashionMNIST) -> FashionMNIST:
    """First 2000 train and 500 test images of the real data."""
    return FashionMNIST(
        fashion_mnist.train_images[:2000], fashion_mnist.train_labels[:2000],
        fashion_mnist.test_images[:500], fashion_mnist.test_labels[:500],
        source=fashion_mnist.source,
    )  # fmt: skip


@pytest.fixture
def data_prep_params() -> dict:
    return dict(SMALL_DATA_PREP)


@pytest.fixture
def tasks_params() -> dict:
    return {
        "left": {"kind": "multiclass", "num_classes": 10},
        "right": {"kind": "multiclass", "num_classes": 10},
    }


@functools.cache
def empty_mlflow_store() -> Path:
    """An empty MLflow SQLite store, its tables made once per test process: MLflow's
    migrations take seconds on each new file, and most tests run in a new project.
    Made in a subprocess, so that no connection stays open on the file copied."""
    path = Path(tempfile.mkdtemp(prefix="mlflow-store-")) / "mlflow.db"
    subprocess.run(
        [sys.executable, "-c", "import sys; from mlflow.tracking import MlflowClient; "
         "MlflowClient(tracking_uri=sys.argv[1]).search_experiments()",
         f"sqlite:///{path}"],
        check=True, capture_output=True, timeout=300,
        env=os.environ | {"MLFLOW_DISABLE_TELEMETRY": "true"},
    )  # fmt: skip
    return path


def copy_project(folder: Path, mlflow_store: bool = True) -> Path:
    """The project's configuration copied into ``folder`` (data and MLflow store land
    there too; the store starts as a copy of :func:`empty_mlflow_store` unless
    ``mlflow_store`` is false); the package itself is the installed one."""
    if mlflow_store:
        shutil.copy2(empty_mlflow_store(), folder / "mlflow.db")
    for name in ("pyproject.toml", ".telemetry", "requirements.lock", ".gitignore"):
        shutil.copy2(PROJECT_ROOT / name, folder / name)
    shutil.copytree(PROJECT_ROOT / "conf", folder / "conf",
                    ignore=shutil.ignore_patterns("local"))  # fmt: skip
    (folder / "conf" / "local").mkdir()
    (folder / "data").mkdir()
    (folder / "src").mkdir()  # bootstrap_project needs it; the package is installed
    return folder


@pytest.fixture
def project_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the project's configuration in ``tmp_path`` (data and MLflow store
    land there too), with the current directory set to it."""
    copy_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    # mlflow.set_tracking_uri() exports MLFLOW_TRACKING_URI, so an earlier session in
    # this process would otherwise send this project's runs to that project's store.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


@pytest.fixture(scope="session")
def prepared_smoke(tmp_path_factory) -> Path:
    """A project copy whose smoke data, pretrained backbone and transferred weights are
    made (data_prep, pretraining and weight_transfer in the smoke env), once."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    project = copy_project(tmp_path_factory.mktemp("prepared"))
    with pytest.MonkeyPatch.context() as patch:  # (the session sets MLflow's URI)
        patch.chdir(project)
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        bootstrap_project(project)
        with KedroSession.create(project_path=project, env="smoke") as session:
            session.run(pipeline_names=["data_prep", "pretraining", "weight_transfer"])
    return project


def git_commit_all(project: Path) -> str:
    """``project`` made a git repository with everything committed; the commit."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=project, check=True, capture_output=True,
                              text=True).stdout.strip()  # fmt: skip

    git("init", "-q")
    git("add", "-A")
    git(
        "-c",
        "user.name=test",
        "-c",
        "user.email=test@example.com",
        "commit",
        "-qm",
        "x",
    )
    return git("rev-parse", "HEAD")


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Path:
    """A project copy, committed to git, after one whole ``kedro run --env smoke
    --params training.lr=0.001`` (in a Kedro session): read it, do not change it
    (tests/test_run.py checks what it recorded)."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    project = copy_project(tmp_path_factory.mktemp("smoke-run"))
    git_commit_all(project)
    with pytest.MonkeyPatch.context() as patch:  # (the session sets MLflow's URI)
        patch.chdir(project)
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        bootstrap_project(project)
        with KedroSession.create(project_path=project, env="smoke",
                                 runtime_params={"training": {"lr": 0.001}}) as session:  # fmt: skip
            session.run()
    return project


@pytest.fixture
def prepared_project(prepared_smoke: Path, tmp_path: Path, monkeypatch) -> Path:
    """A copy of :func:`prepared_smoke`'s project with an empty MLflow store, ready for
    ``kedro run --env smoke --pipelines multitask_training``; the current directory."""
    project = tmp_path / "project"
    shutil.copytree(prepared_smoke, project,
                    ignore=shutil.ignore_patterns("mlflow.db*", "mlruns"))  # fmt: skip
    shutil.copy2(empty_mlflow_store(), project / "mlflow.db")
    monkeypatch.chdir(project)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return project


@pytest.fixture(scope="session")
def prepared(fashion_mnist_small):
    """Real MultiFashion through data_prep's nodes: ``(model inputs (train, val, test),
    normalisation statistics)``, each keyed by source (900 train / 300 val / 400 test)."""
    from multitask_cnn.pipelines.data_prep.nodes import (
        build_model_input,
        compose_splits,
        compute_normalisation,
    )

    raw = {"multifashion": compose_splits(fashion_mnist_small, SMALL_DATA_PREP)}
    return build_model_input(raw), compute_normalisation(raw)


@pytest.fixture(scope="session")
def model_inputs(prepared):
    """data_prep's model input per split: ``{"multifashion": {"images", "labels"}}``."""
    return prepared[0]


@pytest.fixture(scope="session")
def normalisation_stats(prepared):
    """data_prep's statistics: ``{"multifashion": {"mean", "std", ...}}``."""
    return prepared[1]


@pytest.fixture(scope="session")
def mf_splits(prepared):
    """``mf_splits({"left": "left"})``: train, val and test :class:`Split` of the real
    MultiFashion input with those labels (task: label), uint8 normalised when read."""
    from multitask_cnn.training import Split

    inputs, stats = prepared
    mean, std = stats["multifashion"]["mean"], stats["multifashion"]["std"]

    def make(label_of):
        return [
            Split(
                m["multifashion"]["images"],
                {t: m["multifashion"]["labels"][name] for t, name in label_of.items()},
                mean,
                std,
            )  # fmt: skip
            for m in inputs
        ]

    return make
