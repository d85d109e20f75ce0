"""CSV image manifests: three task kinds, empty cells as missing labels, text labels,
RGB to grey, a split column; every bad manifest stops before decoding, naming row and
column."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from multitask_cnn.config import parse_tasks
from multitask_cnn.data.manifest import ManifestError, decode_images
from multitask_cnn.io import ImageManifestDataset, TorchDataset
from multitask_cnn.pipelines.data_prep.nodes import (
    build_model_input,
    compute_normalisation,
    prepare_manifest,
    report_class_balance,
)
from multitask_cnn.provenance import fingerprint
from multitask_cnn.training import labelled_counts, task_splits

TASKS = {
    "animal": {"kind": "multiclass", "num_classes": 3, "source": "manifest",
               "class_names": ["cat", "dog", "owl"]},
    "night": {"kind": "binary", "source": "manifest", "label": "nocturnal"},
    "mass": {"kind": "regression", "source": "manifest", "label": "weight"},
}  # fmt: skip
N = 40


def _write(root: Path, rows: list[dict] | None = None) -> Path:
    """``N`` images (grey PNGs; every third an RGB JPEG) and their manifest."""
    (root / "img").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    if rows is None:
        rows = []
        for i in range(N):
            value = 40 + 5 * i
            if i % 3 == 2:
                name = f"img/{i}.jpg"
                pixels = np.full(
                    (20, 24, 3), value, dtype=np.uint8
                )  # not square: resized
                Image.fromarray(pixels, mode="RGB").save(root / name, quality=100)
            else:
                name = f"img/{i}.png"
                Image.fromarray(
                    np.full((36, 36), value, dtype=np.uint8), mode="L"
                ).save(root / name)
            rows.append({
                "path": name, "split": ["train", "train", "val", "test"][i % 4] if i > 3 else "train",
                "animal": ["cat", "dog", "owl"][i % 3], "nocturnal": str(i % 2),
                "weight": f"{1000 + 10 * i}",
            })  # fmt: skip
        table = pd.DataFrame(rows)
        for column in ("animal", "nocturnal", "weight"):  # about 30 % missing per task
            table.loc[rng.random(N) < 0.3, column] = ""
    else:
        table = pd.DataFrame(rows)
    table.to_csv(root / "manifest.csv", index=False)
    return root / "manifest.csv"


def _prepare(path: Path, tasks=TASKS, **manifest):
    options = {"image_column": "path"} | manifest
    loaded = ImageManifestDataset(str(path), root=str(path.parent)).load()
    return prepare_manifest(loaded, {"manifest": options}, tasks, {})


def test_three_kinds_missing_labels_text_classes_rgb_to_grey_and_a_split_column(
    tmp_path,
):
    path = _write(tmp_path)
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    splits = _prepare(path)

    expected_rows = {
        s: [i for i in range(N) if table["split"][i] == s]
        for s in ("train", "val", "test")
    }
    assert {s: len(d["images"]) for s, d in splits.items()} == {
        s: len(r) for s, r in expected_rows.items()
    }
    train = splits["train"]
    assert train["images"].shape == (
        len(expected_rows["train"]),
        1,
        36,
        36,
    )  # grey, canvas size
    assert train["images"].dtype == np.uint8
    rgb_row = expected_rows["train"].index(2)  # row 2 is an RGB JPEG of value 50, 20x24
    assert (
        abs(int(train["images"][rgb_row].mean()) - 50) <= 1
        and train["images"][rgb_row].std() < 1.5
    )
    rows = expected_rows["train"]
    animal = [{"cat": 0, "dog": 1, "owl": 2}.get(table["animal"][i], -1) for i in rows]
    assert (
        train["labels"]["animal"].tolist() == animal
    )  # text -> declared ids, "" -> -1
    assert train["labels"]["nocturnal"].tolist() == [
        int(table["nocturnal"][i]) if table["nocturnal"][i] else -1 for i in rows
    ]
    weight = train["labels"]["weight"]
    assert weight.dtype == np.float32
    assert np.array_equal(np.isnan(weight), [table["weight"][i] == "" for i in rows])
    assert 0.15 < np.isnan(weight).mean() < 0.5

    # standardised with train statistics for training; labelled counts per split
    sources = {"manifest": splits}
    stats = compute_normalisation(sources)
    target = stats["manifest"]["targets"]["weight"]
    assert target["mean"] == pytest.approx(np.nanmean(weight)) and target["n"] == int(
        np.isfinite(weight).sum()
    )
    specs = parse_tasks(TASKS)
    train_input, val_input, _ = build_model_input(sources)
    by_split = {"train": task_splits(train_input, stats, specs, "train"),
                "val": task_splits(val_input, stats, specs, "val")}  # fmt: skip
    scaled = by_split["train"]["manifest"].labels["mass"]
    assert np.nanmean(scaled.numpy()) == pytest.approx(0, abs=1e-5)
    assert by_split["train"]["manifest"].unscale(
        "mass", scaled
    ).numpy() == pytest.approx(weight, nan_ok=True)
    counts = labelled_counts(specs, by_split)
    assert counts["animal"]["train"] == sum(a >= 0 for a in animal)
    report = report_class_balance(sources, TASKS)
    owl = report.query("split == 'train' and label == 'animal' and class_name == 'owl'")
    assert (
        owl["count"].item() == animal.count(2)
        and owl["labelled"].item() == counts["animal"]["train"]
    )


def test_without_a_split_column_the_split_is_seeded(tmp_path):
    path = _write(tmp_path)
    pd.read_csv(path, dtype=str, keep_default_na=False).drop(columns="split").to_csv(
        path, index=False
    )
    a, b = _prepare(path), _prepare(path)
    sizes = {s: len(d["images"]) for s, d in a.items()}
    assert sizes == {
        "test": 8,
        "val": 3,
        "train": 29,
    }  # 20 % test, val_fraction 0.1 of the rest
    assert np.array_equal(
        a["train"]["labels"]["weight"], b["train"]["labels"]["weight"], equal_nan=True
    )


def test_no_task_on_the_manifest_reads_nothing():
    assert (
        prepare_manifest(
            None, {}, {"left": {"kind": "multiclass", "num_classes": 10}}, {}
        )
        == {}
    )


def _break(tmp_path, change):
    path = _write(tmp_path)
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    change(table, tmp_path)
    table.to_csv(path, index=False)
    return path


def _set(column, row, value):
    def change(table, _root):
        table.loc[row, column] = value

    return change


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t, r: t.drop(columns=["weight"], inplace=True),
         r"no column 'weight' \(needed by task 'mass'\); its columns are \['path', 'split', 'animal', 'nocturnal'\]"),
        (_set("path", 5, "img/none.png"), r"row 5 \(CSV line 7\), column 'path': image 'img/none.png' does not exist"),
        (_set("path", 6, "../outside.png"), r"row 6 \(CSV line 8\), column 'path': image path '../outside.png' lies outside the dataset root"),
        (_set("animal", 7, "horse"), r"row 7 \(CSV line 9\), column 'animal': label 'horse' is not one of the declared classes \['cat', 'dog', 'owl'\]"),
        (_set("nocturnal", 8, "2"), r"row 8 \(CSV line 10\), column 'nocturnal': label '2' is not one of class ids 0..1"),
        (_set("weight", 9, "heavy"), r"row 9 \(CSV line 11\), column 'weight': regression target 'heavy' is not a number"),
        (_set("split", 10, "holdout"), r"row 10 \(CSV line 12\), column 'split': split 'holdout' is not one of"),
    ],
)  # fmt: skip
def test_a_bad_manifest_is_refused_naming_row_and_column(tmp_path, change, message):
    with pytest.raises(ManifestError, match=message):
        _prepare(_break(tmp_path, change))


def test_an_unreadable_image_names_its_row_and_file(tmp_path):
    path = _write(tmp_path)
    (tmp_path / "img" / "4.png").write_bytes(b"not a png at all")
    with pytest.raises(
        ManifestError,
        match=r"manifest row 4 \(CSV line 6\), column 'path': cannot read image '.*img/4.png'",
    ):
        _prepare(path)


def test_an_empty_manifest_and_a_missing_one_are_refused(tmp_path):
    (tmp_path / "manifest.csv").write_text("path,split,animal,nocturnal,weight\n")
    with pytest.raises(ManifestError, match="the manifest has no rows"):
        _prepare(tmp_path / "manifest.csv")
    (tmp_path / "manifest.csv").write_text("")
    with pytest.raises(ManifestError, match="the manifest has no rows"):
        _prepare(tmp_path / "manifest.csv")
    with pytest.raises(
        ManifestError,
        match=r"read source 'manifest' but the image_manifest catalog entry has no file",
    ):
        prepare_manifest(None, {}, TASKS, {})


def test_a_manifest_larger_than_the_memory_budget_streams_from_a_cache(tmp_path):
    path = _write(tmp_path / "raw")
    cache = tmp_path / "model_input" / "manifest_cache"
    in_memory = _prepare(path)
    loaded = ImageManifestDataset(str(path), cache_dir=str(cache)).load()
    options = {
        "image_column": "path",
        "memory_budget_mb": 0.01,
    }  # 40 x 36 x 36 B = 0.05 MB
    streamed = prepare_manifest(loaded, {"manifest": options}, TASKS, {})

    (key,) = list(cache.iterdir())  # one folder, named by the plan's key
    assert sorted(p.name for p in key.iterdir()) == ["test.npy", "train.npy", "val.npy"]
    for split, data in streamed.items():
        assert (
            isinstance(data["images"], np.memmap) and not data["images"].flags.writeable
        )
        assert np.array_equal(data["images"], in_memory[split]["images"])
        for label, values in data["labels"].items():
            assert np.array_equal(
                values, in_memory[split]["labels"][label], equal_nan=True
            )

    # the model input refers to the cache (a small .pt), and batches read the same
    sources = {"manifest": streamed}
    stats = compute_normalisation(sources)
    assert stats == compute_normalisation({"manifest": in_memory})
    dataset = TorchDataset(str(tmp_path / "model_input" / "train.pt"))
    dataset.save(build_model_input(sources)[0])
    assert (tmp_path / "model_input" / "train.pt").stat().st_size < 20_000
    train = dataset.load()
    assert isinstance(train["manifest"]["images"], np.memmap)
    specs = parse_tasks(TASKS)
    mapped = task_splits(train, stats, specs)["manifest"]
    held = task_splits(build_model_input({"manifest": in_memory})[0], stats, specs)[
        "manifest"
    ]
    rows = torch.tensor([5, 0, 17, 3])  # any order: rows come back as asked
    assert torch.equal(mapped.images_at(rows), held.images_at(rows))
    assert torch.equal(mapped.images_at(slice(2, 9)), held.images_at(slice(2, 9)))
    assert fingerprint(train) == fingerprint(
        build_model_input({"manifest": in_memory})[0]
    )


def test_a_failed_decode_into_the_cache_leaves_no_cache_file(tmp_path):
    path = _write(tmp_path / "raw")
    (tmp_path / "raw" / "img" / "39.png").write_bytes(b"broken")
    cache = tmp_path / "cache"
    loaded = ImageManifestDataset(str(path), cache_dir=str(cache)).load()
    with pytest.raises(
        ManifestError,
        match=r"manifest row 39 \(CSV line 41\), column 'path': cannot read image",
    ):
        prepare_manifest(
            loaded,
            {"manifest": {"image_column": "path", "memory_budget_mb": 0.01}},
            TASKS,
            {},
        )
    assert not cache.exists() or not any(cache.iterdir())


def test_decoding_in_worker_processes_gives_the_same_images(tmp_path):
    _write(tmp_path)
    paths = sorted((tmp_path / "img").iterdir())
    serial = decode_images(paths, 3, 16)
    threaded = decode_images(paths, 3, 16, workers=2, block=8)  # 5 blocks
    assert serial.shape == (N, 3, 16, 16) and np.array_equal(serial, threaded)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_set("split", 12, "test"),  # row 12 is train; rows 13.. keep theirs
         None),
        (lambda t, r: t.loc.__setitem__((t.index[t["split"] == "test"], "animal"), ""),
         r"column 'animal' has no label in the test split"),
        (lambda t, r: t.loc.__setitem__((6, "path"), t.loc[4, "path"]),
         r"row 6 \(CSV line 8\), column 'path': image '.*img/4.png' is in the val split, "
         r"and in the train split at row 4"),
    ],
)  # fmt: skip
def test_splits_need_labels_of_every_task_and_never_share_an_image(
    tmp_path, change, message
):
    path = _break(tmp_path, change)
    if message is None:
        assert len(_prepare(path)["test"]["images"]) == 10
        return
    with pytest.raises(ManifestError, match=message):
        _prepare(path)


def test_short_rows_two_tasks_on_one_column_and_a_missing_split_column(tmp_path):
    path = _write(tmp_path)
    lines = path.read_text().splitlines()
    lines[3] = ",".join(lines[3].split(",")[:3])  # row 2: path, split, animal only
    path.write_text("\n".join(lines) + "\n")
    splits = _prepare(path)  # missing trailing cells are empty: no label
    assert np.isnan(splits["train"]["labels"]["weight"][2])
    twice = TASKS | {"species": {"kind": "multiclass", "num_classes": 3, "source": "manifest",
                                 "label": "animal", "class_names": ["owl", "dog", "cat"]}}  # fmt: skip
    with pytest.raises(
        ManifestError,
        match=r"tasks 'animal' and 'species' both read manifest column 'animal'",
    ):
        _prepare(path, tasks=twice)
    with pytest.raises(
        ManifestError,
        match=r"no split column 'fold' \(data_prep.manifest.split_column\)",
    ):
        _prepare(path, split_column="fold")


def test_a_failed_decode_keeps_the_previous_cache_and_a_stale_reference_is_refused(
    tmp_path,
):
    path = _write(tmp_path / "raw")
    cache = tmp_path / "cache"
    options = {"manifest": {"image_column": "path", "memory_budget_mb": 0.01}}
    loaded = ImageManifestDataset(str(path), cache_dir=str(cache)).load()
    first = prepare_manifest(loaded, options, TASKS, {})
    (key,) = [p.name for p in cache.iterdir()]
    before = {p.name: p.read_bytes() for p in (cache / key).iterdir()}
    (tmp_path / "raw" / "img" / "39.png").write_bytes(b"broken")  # the plan changes too
    with pytest.raises(ManifestError, match="row 39"):
        prepare_manifest(
            ImageManifestDataset(str(path), cache_dir=str(cache)).load(),
            options,
            TASKS,
            {},
        )
    assert [p.name for p in cache.iterdir()] == [key]  # the previous cache, as it was
    assert {p.name: p.read_bytes() for p in (cache / key).iterdir()} == before
    # a part of a mapped file is not saved by reference; a changed file is refused
    dataset = TorchDataset(str(tmp_path / "input.pt"))
    with pytest.raises(Exception, match="part of the memory-mapped file"):
        dataset.save({"images": first["train"]["images"][:3]})
    dataset.save({"images": first["train"]["images"]})
    np.save(cache / key / "train.npy", np.zeros((2, 1, 36, 36), dtype=np.uint8))
    with pytest.raises(
        Exception, match=r"expects uint8 \(\d+, 1, 36, 36\): rerun data_prep"
    ):
        dataset.load()


def test_rgb_manifests_need_rgb_weights_or_no_transfer():
    from multitask_cnn.config import ConfigError, validate_parameters

    params = {"tasks": {"animal": TASKS["animal"]}, "data_prep": {"manifest": {"channels": 3}},
              "model": {"backbone_args": {"in_channels": 3}}}  # fmt: skip
    with pytest.raises(
        ConfigError, match=r"channels=3, but the pretrained backbone sees grey"
    ):
        validate_parameters(params)
    validate_parameters(params | {"transfer": {"enabled": False}})
    with pytest.raises(ConfigError, match=r"channels=3 but the backbone takes 1"):
        validate_parameters(params | {"model": {}, "transfer": {"enabled": False}})
