"""The catalogue of bad inputs (docs/bad_inputs.md).

Each case runs the way ``kedro run`` runs it (a Kedro session with the project's
hooks, in this process to keep it quick; ``tests/test_user_errors.py`` checks that the
CLI turns a user error into one message and exit status 1) and must stop with a user
error whose message holds ``expect``, leaving the data folder as it was: no new,
changed or half-written file.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import re
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import copy_project
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from multitask_cnn.errors import user_error_in

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "bad_inputs.md"
RAW = Path("data/01_raw")
FASHION = RAW / "fashion_mnist"
MODELS = Path("data/smoke/06_models")


@dataclass(frozen=True)
class Case:
    expect: str  # in the one message the user sees
    params: dict[str, Any] = field(default_factory=dict)  # as --params gives them
    setup: Callable[[Path], None] | None = None  # breaks a file of the project copy
    base: str = "bare"  # bare | prepared (model input built) | manifest
    pipeline: str | None = None  # None: the default pipeline
    nodes: tuple[str, ...] = ()  # only these nodes of it

    @property
    def env(self) -> str:
        return "manifest_example" if self.base == "manifest" else "smoke"


def _run(project: Path, env: str, pipeline: str | None = None,
         nodes: tuple[str, ...] = (), **params: Any) -> None:  # fmt: skip
    bootstrap_project(project)
    with KedroSession.create(project_path=project, env=env,
                             runtime_params=params or None) as session:  # fmt: skip
        session.run(pipeline_name=pipeline, node_names=list(nodes) or None)


# -- Fashion-MNIST files, broken -------------------------------------------------------


def _idx(array: np.ndarray, type_code: int = 0x08) -> bytes:
    header = struct.pack(">I", (type_code << 8) | array.ndim)
    return (
        header + b"".join(struct.pack(">I", n) for n in array.shape) + array.tobytes()
    )


def _read(stem: str) -> bytes:
    with gzip.open(Path("/usr/share/datasets/fashion-mnist") / f"{stem}.gz") as f:
        return f.read()


def _fashion(change: Callable[[dict[str, bytes]], None]) -> Callable[[Path], None]:
    """A copy of Fashion-MNIST in the project's raw folder (searched first), changed."""

    def setup(project: Path) -> None:
        stems = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                 "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")  # fmt: skip
        files = {stem: _read(stem) for stem in stems}
        change(files)
        (project / FASHION).mkdir(parents=True, exist_ok=True)
        for stem, data in files.items():
            (project / FASHION / stem).write_bytes(data)

    return setup


def _truncated(files: dict[str, bytes]) -> None:
    files["train-images-idx3-ubyte"] = files["train-images-idx3-ubyte"][:1_000_000]


def _not_idx(files: dict[str, bytes]) -> None:
    files["t10k-labels-idx1-ubyte"] = b"<html>404 Not Found</html>\n"


def _float_images(files: dict[str, bytes]) -> None:
    images = np.full((100, 28, 28), np.nan, dtype=">f4")
    files["t10k-images-idx3-ubyte"] = _idx(images, 0x0D)


def _label_out_of_range(files: dict[str, bytes]) -> None:
    labels = np.frombuffer(files["train-labels-idx1-ubyte"][8:], np.uint8).copy()
    labels[4321] = 12
    files["train-labels-idx1-ubyte"] = _idx(labels)


def _wrong_size(files: dict[str, bytes]) -> None:
    files["t10k-images-idx3-ubyte"] = _idx(np.zeros((10000, 32, 32), np.uint8))


def _fewer_labels(files: dict[str, bytes]) -> None:
    files["t10k-labels-idx1-ubyte"] = _idx(np.zeros(9999, np.uint8))


def _empty(files: dict[str, bytes]) -> None:
    files["t10k-images-idx3-ubyte"] = _idx(np.zeros((0, 28, 28), np.uint8))
    files["t10k-labels-idx1-ubyte"] = _idx(np.zeros(0, np.uint8))


def _bad_gzip(project: Path) -> None:
    _fashion(lambda files: None)(project)
    os.remove(project / FASHION / "train-labels-idx1-ubyte")
    (project / FASHION / "train-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b\x08junk")


# -- a manifest, broken -----------------------------------------------------------------


def _manifest(change: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[Path], None]:
    def setup(project: Path) -> None:
        path = project / RAW / "manifest" / "manifest.csv"
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
        change(table).to_csv(path, index=False)

    return setup


def _set(row: int, column: str, value: str) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def change(table: pd.DataFrame) -> pd.DataFrame:
        table.loc[row, column] = value
        return table

    return change


def _in_manifest(expect: str, change: Callable[[pd.DataFrame], pd.DataFrame]) -> Case:
    return Case(expect, setup=_manifest(change), base="manifest")


def _not_an_image(project: Path) -> None:
    table = pd.read_csv(project / RAW / "manifest/manifest.csv", dtype=str)
    (project / RAW / "manifest" / table.loc[7, "image"]).write_bytes(b"not a png")


# -- files that are not what they claim ---------------------------------------------------


def _write(relative: str, data: bytes) -> Callable[[Path], None]:
    def setup(project: Path) -> None:
        (project / relative).parent.mkdir(parents=True, exist_ok=True)
        (project / relative).write_bytes(data)

    return setup


def _save(relative: str, obj: Any) -> Callable[[Path], None]:
    def setup(project: Path) -> None:
        (project / relative).parent.mkdir(parents=True, exist_ok=True)
        torch.save(obj, project / relative)

    return setup


class _Anything:  # not a tensor: a weights_only load refuses it
    pass


def _resnet_state() -> dict[str, torch.Tensor]:
    from torchvision.models import resnet18

    return resnet18(weights=None).state_dict()


def _rebuilt(relative: str) -> Callable[[Path], None]:
    """The file as another data_prep build would have written it."""

    def setup(project: Path) -> None:
        data = torch.load(project / relative, weights_only=True)
        for entry in data.values():
            entry["build"] = "another build"
        torch.save(data, project / relative)

    return setup


def _pretraining(expect: str, images: torch.Tensor | bytes) -> Case:
    """A case of ``pretraining.source: file`` whose file holds ``images`` (bytes: the
    file's bytes)."""
    where = str(RAW / "pretraining.pt")
    labels = {"class": torch.zeros(50, dtype=torch.int64)}
    setup = (_write(where, images) if isinstance(images, bytes)
             else _save(where, {"images": images, "labels": labels}))  # fmt: skip
    return Case(expect, FILE, setup, base="prepared", pipeline="pretraining")


def _set_in(relative: str, group: str, key: str, value: Any) -> Callable[[Path], None]:
    """Set ``group.key`` in a parameters file of the project copy."""

    def setup(project: Path) -> None:
        tree = yaml.safe_load((project / relative).read_text())
        tree.setdefault(group, {})[key] = value
        (project / relative).write_text(yaml.safe_dump(tree))

    return setup


FILE = {"pretraining": {"source": "file"}, "transfer": {"exclude": []}}

CASES: dict[str, Case] = {
    # parameters (checked before anything is read)
    "lr_zero": Case(
        "parameter 'training.lr' (from --params): Input should be greater than 0 (got 0)",
        {"training": {"lr": 0}},
    ),
    "lr_zero_in_a_sub_folder": Case(
        "parameter 'training.lr' (from conf/smoke/parameters/extra.yaml): Input should",
        setup=_write("conf/smoke/parameters/extra.yaml", b"training:\n  lr: 0\n"),
    ),
    "lr_zero_in_the_env_s_file": Case(
        "parameter 'training.lr' (from conf/smoke/parameters.yml): Input should be",
        setup=_set_in("conf/smoke/parameters.yml", "training", "lr", 0),
    ),
    "lr_negative": Case("parameter 'training.lr'", {"training": {"lr": -0.01}}),
    "epochs_zero": Case("parameter 'training.epochs'", {"training": {"epochs": 0}}),
    "epochs_text": Case("parameter 'training.epochs'", {"training": {"epochs": "abc"}}),
    "batch_size_negative": Case(
        "parameter 'training.batch_size'", {"training": {"batch_size": -8}}
    ),
    "batch_larger_than_train_split": Case(
        "training.batch_size=5000 is larger than MultiFashion's train split (2700",
        {"training": {"batch_size": 5000}},
    ),
    "empty_dataset": Case(
        "parameter 'data_prep.n_train'", {"data_prep": {"n_train": 0}}
    ),
    "val_split_empty": Case(
        "leaves 0 val and 4 train composites",
        {"data_prep": {"n_train": 4, "val_fraction": 0.1}},
    ),
    "num_classes_against_the_labels": Case(
        "task 'left' (multiclass, 5 classes): label 'left' of 'multifashion' has 10 "
        "classes; use kind: multiclass with num_classes: 10",
        {"tasks": {"left": {"num_classes": 5}}},
    ),
    "unknown_key": Case("parameter 'training.lrr'", {"training": {"lrr": 0.1}}),
    "unknown_strategy": Case(
        "unknown weighting 'magic'", {"training": {"weighting": "magic"}}
    ),
    "unknown_backbone": Case(
        "unknown backbone 'vgg99'", {"model": {"backbone": "vgg99"}}
    ),
    "unknown_kind": Case(
        "unknown task kind 'ordinal'", {"tasks": {"left": {"kind": "ordinal"}}}
    ),
    "unknown_source": Case(
        "task 'left': unknown source 'imagenet'",
        {"tasks": {"left": {"source": "imagenet"}}},
    ),
    "unknown_pretraining_source": Case(
        "unknown pretraining source 'web'", {"pretraining": {"source": "web"}}
    ),
    "unknown_device": Case("'tpu' is not a device", {"training": {"device": "tpu"}}),
    "device_missing": Case("device 'cuda:7' but", {"training": {"device": "cuda:7"}}),
    "shared_stages_too_deep": Case(
        "model.shared_stages=9 but 'lenet' has 3 stages",
        {"model": {"shared_stages": 9}},
    ),
    "strategy_without_shared_layers": Case(
        "model.shared_stages=0 shares none",
        {"training": {"weighting": "pcgrad"}, "model": {"shared_stages": 0}},
    ),
    "soft_architecture_with_shared_stages": Case(
        "model.shared_stages=1 is hard sharing's setting",
        {"model": {"architecture": "mtan", "shared_stages": 1}},
    ),
    "bad_architecture_option": Case(
        "model.architecture_args.experts=1: a whole number, at least 2",
        {"model": {"architecture": "mmoe", "architecture_args": {"experts": 1}}},
    ),
    "flat_saliency_stage": Case(
        "insight.saliency_stage='fc': its output is flat",
        {"insight": {"saliency_stage": "fc"}},
    ),
    "bad_transfer_rename": Case(
        "rename 'conv1' is not of the form", {"transfer": {"renames": ["conv1"]}}
    ),
    "fusion_unknown_source": Case(
        "training.fusion.batch_size names sources ['digits']",
        {"training": {"fusion": {"batch_size": {"digits": 32}}}},
    ),
    # Fashion-MNIST files
    "idx_truncated": Case(
        "train-images-idx3-ubyte: the header says (60000, 28, 28)",
        setup=_fashion(_truncated),
    ),
    "idx_not_idx": Case(
        "t10k-labels-idx1-ubyte: not an unsigned-byte IDX file",
        setup=_fashion(_not_idx),
    ),
    "idx_nan_pixels": Case(
        "t10k-images-idx3-ubyte: not an unsigned-byte IDX file",
        setup=_fashion(_float_images),
    ),
    "idx_label_out_of_range": Case(
        "train split: label 12 at row 4321", setup=_fashion(_label_out_of_range)
    ),
    "idx_wrong_image_size": Case(
        "test split: images are 32x32", setup=_fashion(_wrong_size)
    ),
    "idx_count_mismatch": Case(
        "10000 images but 9999 labels", setup=_fashion(_fewer_labels)
    ),
    "idx_empty": Case("test split: no images", setup=_fashion(_empty)),
    "idx_bad_gzip": Case("train-labels-idx1-ubyte.gz: cannot read it", setup=_bad_gzip),
    # an image manifest (README "Your own images")
    "manifest_path_outside_root": _in_manifest(
        "image path '../../../etc/hostname' lies outside the dataset root",
        _set(3, "image", "../../../etc/hostname"),
    ),
    "manifest_absolute_path": _in_manifest(
        "image path '/etc/hostname' lies outside the dataset root",
        _set(3, "image", "/etc/hostname"),
    ),
    "manifest_missing_image": _in_manifest(
        "image 'images/nope.png' does not exist", _set(5, "image", "images/nope.png")
    ),
    "manifest_not_an_image": Case(
        "cannot read image", setup=_not_an_image, base="manifest"
    ),
    "manifest_label_out_of_range": _in_manifest(
        "label 'eleven' is not one of", _set(2, "digit", "eleven")
    ),
    "manifest_nan_target": _in_manifest(
        "regression target 'inf' is not finite", _set(4, "ink", "inf")
    ),
    "manifest_no_rows": _in_manifest("the manifest has no rows", lambda t: t.iloc[:0]),
    "manifest_missing_column": _in_manifest(
        "the manifest has no column 'parity'", lambda t: t.drop(columns="parity")
    ),
    "manifest_wrong_channels": Case(
        "data_prep.manifest.channels=3",
        {"data_prep": {"manifest": {"channels": 3}}},
        base="manifest",
    ),
    # a pretraining file (pretraining.source: file)
    "pretraining_file_nan_pixels": _pretraining(
        "images must be uint8 (N, 36, 36)", torch.full((50, 36, 36), float("nan"))
    ),
    "pretraining_file_wrong_size": _pretraining(
        "got uint8 (50, 20, 20)", torch.zeros((50, 20, 20), dtype=torch.uint8)
    ),
    "pretraining_file_not_torch": _pretraining(
        "is not a file torch.save wrote", b"images,labels\n"
    ),
    # checkpoints and saved progress
    "checkpoint_not_a_checkpoint": Case(
        "multitask_checkpoint.pt is not a file torch.save wrote",
        setup=_write(str(MODELS / "multitask_checkpoint.pt"), os.urandom(4096)),
        base="prepared",
        pipeline="evaluation",
        nodes=("predict_test",),
    ),
    "checkpoint_of_another_program": Case(
        "checkpoint format None is not 3",
        setup=_save(str(MODELS / "multitask_checkpoint.pt"), _resnet_state()),
        base="prepared",
        pipeline="evaluation",
        nodes=("predict_test",),
    ),
    "checkpoint_with_code": Case(
        "holds Python objects other than tensors",
        setup=_save(str(MODELS / "multitask_checkpoint.pt"), {"model": _Anything()}),
        base="prepared",
        pipeline="evaluation",
        nodes=("predict_test",),
    ),
    "evaluation_before_training": Case(
        "multitask_checkpoint.pt: no such file; run the pipeline that writes it first",
        base="prepared",
        pipeline="evaluation",
        nodes=("predict_test",),
    ),
    "training_before_transfer": Case(
        "run the weight_transfer pipeline first",
        base="prepared",
        pipeline="multitask_training",
    ),
    "transfer_checkpoint_missing": Case(
        "nope.pt' does not exist",
        {"transfer": {"checkpoint": "data/01_raw/nope.pt"}},
        base="prepared",
        pipeline="weight_transfer",
    ),
    "transfer_checkpoint_of_another_model": Case(
        "nothing transferable: no target tensor found a source of its shape",
        {"transfer": {"checkpoint": "data/01_raw/resnet.pt"}},
        _save("data/01_raw/resnet.pt", _resnet_state()),
        base="prepared",
        pipeline="weight_transfer",
    ),
    "model_input_from_two_builds": Case(
        "model_input_val and model_input_train (source 'multifashion') come from "
        "different data_prep runs",
        {"transfer": {"enabled": False}},
        _rebuilt("data/smoke/05_model_input/model_input_val.pt"),
        base="prepared",
        pipeline="multitask_training",
    ),
    "progress_file_damaged": Case(
        "delete it, or run with --params training.resume=false",
        {"transfer": {"enabled": False}},
        _write(str(MODELS / "training_progress.pt"), b"\x00" * 100),
        base="prepared",
        pipeline="multitask_training",
    ),
}


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> dict[str, Path]:
    """Project copies to start each case from: bare, with model input built, with a
    small image manifest."""
    made = {}
    for name in ("bare", "prepared", "manifest"):
        made[name] = copy_project(tmp_path_factory.mktemp(name))
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from make_sample_manifest import write_sample
    finally:
        sys.path.pop(0)
    write_sample(made["manifest"] / RAW / "manifest", 120, 0.3, 0)
    here, uri = os.getcwd(), os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        os.chdir(made["prepared"])
        _run(made["prepared"], "smoke", "data_prep")
    finally:
        os.chdir(here)
        if uri is not None:
            os.environ["MLFLOW_TRACKING_URI"] = uri
    return made


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.endswith(".run.lock")}  # fmt: skip


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, bases, tmp_path, monkeypatch):
    case = CASES[name]
    project = tmp_path / "project"
    shutil.copytree(bases[case.base], project)
    monkeypatch.chdir(project)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    if case.setup is not None:
        case.setup(project)
    before = _files(project / "data")
    with pytest.raises(Exception) as raised:
        _run(project, case.env, case.pipeline, case.nodes, **case.params)
    found = user_error_in(raised.value)
    assert found is not None, f"not a user error: {raised.value!r}"
    assert case.expect in str(found)
    assert _files(project / "data") == before  # nothing written, nothing half-written


# -- faults: a full disk, a read-only folder, a file in the way ---------------------------


@contextmanager
def _tmpfs(folder: Path, size: str) -> Iterator[Path]:
    """A small tmpfs on ``folder`` holding what ``folder`` held (root only)."""
    aside = folder.with_name(folder.name + ".aside")
    folder.rename(aside)
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                              str(folder)], capture_output=True, text=True)  # fmt: skip
    if mounted.returncode != 0:
        folder.rmdir()
        aside.rename(folder)
        pytest.skip(f"cannot mount a tmpfs here (root only): {mounted.stderr.strip()}")
    try:
        for file in aside.iterdir():
            shutil.copy2(file, folder / file.name)
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def _fill(folder: Path, leave: int) -> None:
    """Fill the file system of ``folder`` to the last byte, then free ``leave`` bytes."""
    with open(folder / "filler", "wb", buffering=0) as filler:
        for size in (65536, 512, 1):
            with contextlib.suppress(OSError):
                while True:
                    filler.write(b"\0" * size)
    os.truncate(folder / "filler", os.path.getsize(folder / "filler") - leave)


def _contents(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.endswith(".run.lock")}  # fmt: skip


def _fault(project: Path) -> tuple[Exception, dict[str, str]]:
    before = _contents(project / "data")
    with pytest.raises(Exception) as raised:
        _run(project, "smoke", "data_prep")
    found = user_error_in(raised.value)
    assert found is not None, f"not a user error: {raised.value!r}"
    return found, before


@pytest.fixture
def prepared(bases, tmp_path, monkeypatch) -> Path:
    project = tmp_path / "project"
    shutil.copytree(bases["prepared"], project)
    monkeypatch.chdir(project)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return project


def test_a_full_disk_stops_the_run_and_keeps_the_earlier_model_input(prepared):
    model_input = prepared / "data/smoke/05_model_input"
    with _tmpfs(model_input, "8m"):
        _fill(model_input, leave=2 << 20)  # model_input_train.pt needs 3.5 MB
        builds = _builds(prepared)
        found, before = _fault(prepared)
        after = _contents(prepared / "data")
        assert _builds(prepared) == builds  # whole files, of the one build
    assert "no space left on the disk of" in str(found)
    assert "keeps its previous content, and no partial file is left" in str(found)
    assert after.keys() == before.keys()  # no temporary file left
    # (a smaller file of the same build may have been written before the full one)
    assert _unchanged_outside(before, after, "05_model_input")


def test_a_read_only_output_folder_stops_the_run_and_changes_nothing(prepared):
    model_input = prepared / "data/smoke/05_model_input"
    with _tmpfs(model_input, "8m"):
        subprocess.run(["mount", "-o", "remount,ro", str(model_input)], check=True)
        found, before = _fault(prepared)
        after = _contents(prepared / "data")
    assert "is not writable (Read-only file system)" in str(found)
    assert after == before


def test_a_file_where_an_output_folder_should_be_stops_the_run(prepared):
    feature = prepared / "data/smoke/04_feature"
    shutil.rmtree(feature)
    feature.write_text("not a folder")
    builds = _builds(prepared)
    found, before = _fault(prepared)
    assert f"{feature} is in the way of a folder" in str(found)
    after = _contents(prepared / "data")
    # the model input may have been written before the failing node: whole files, of
    # the same build (torch.save stamps each file, so the bytes differ)
    assert _builds(prepared) == builds
    assert after.keys() == before.keys()
    assert _unchanged_outside(before, after, "05_model_input")


def _unchanged_outside(
    before: dict[str, str], after: dict[str, str], folder: str
) -> bool:
    def outside(files: dict[str, str]) -> dict[str, str]:
        return {k: v for k, v in files.items() if folder not in k}

    return outside(after) == outside(before)


def _builds(project: Path) -> dict[str, set[str]]:
    folder = project / "data/smoke/05_model_input"
    return {file.name: {entry["build"] for entry in torch.load(file, weights_only=True).values()}
            for file in sorted(folder.glob("*.pt"))}  # fmt: skip


def test_the_catalogue_in_docs_lists_every_case_with_its_message():
    rows = [[cell.strip() for cell in line.split("|")[1:-1]]
            for line in DOC.read_text().splitlines()
            if line.startswith("| ") and line.rstrip().endswith("` |")]  # fmt: skip
    assert len(rows) >= 30
    listed = {}
    for _, seen, test in rows:
        case = re.fullmatch(r"`test_bad_input\[(\w+)\]`", test)
        if case:
            listed[case.group(1)] = seen.replace("`", "")
            continue
        path, name = test.strip("`").split("::")
        assert f"def {name}(" in (ROOT / path).read_text(), test
    assert set(listed) == set(CASES)
    for name, seen in listed.items():
        assert CASES[name].expect in seen, name
