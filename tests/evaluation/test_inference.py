"""A checkpoint's Predictor answers, on raw images, what the evaluation pipeline
predicts on the same images."""

import numpy as np
import pytest
import torch

from multitask_cnn.evaluation.inference import Predictor
from multitask_cnn.pipelines.evaluation.nodes import predict_test
from multitask_cnn.pipelines.multitask_training.nodes import train_multitask_model

TRAINING = {"epochs": 1, "batch_size": 64, "seed": 3, "device": "cpu"}
MODEL = {"backbone": "lenet", "backbone_args": {"input_size": 36}}


@pytest.fixture(scope="module")
def trained(model_inputs, normalisation_stats):
    tasks = {"left": {"kind": "multiclass", "num_classes": 10},
             "right": {"kind": "multiclass", "num_classes": 10}}  # fmt: skip
    checkpoint, _, _ = train_multitask_model(
        model_inputs[0], model_inputs[1], normalisation_stats, tasks, MODEL, TRAINING,
        {}, None, {"enabled": False},
    )  # fmt: skip
    return checkpoint, tasks


def test_the_predictor_answers_what_the_evaluation_predicts(
    trained, model_inputs, normalisation_stats
):
    checkpoint, tasks = trained
    test = model_inputs[2]
    evaluated = predict_test(
        checkpoint, test, normalisation_stats, tasks, {"device": "cpu"}
    )
    images = test["multifashion"]["images"].numpy()  # uint8 (N, 1, 36, 36)
    predictor = Predictor(checkpoint)
    answers = predictor.predict(images, batch_size=100)
    for task in tasks:
        np.testing.assert_array_equal(answers[task], evaluated[task]["y_pred"])
    # (N, H, W) and whole numbers of another type are the same images
    again = predictor.predict(images[:, 0].astype(np.int64))
    np.testing.assert_array_equal(again["left"], answers["left"])
    assert predictor.class_names("left")[:2] == ["T-shirt/top", "Trouser"]


def test_images_the_model_cannot_take_are_named(trained):
    predictor = Predictor(trained[0])
    with pytest.raises(ValueError, match=r"images of shape \(1, 28, 28\) \(C, H, W\); "
                                         r"the model takes \(1, 36, 36\)"):  # fmt: skip
        predictor.predict(np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(ValueError, match="whole pixel values 0..255"):
        predictor.predict(np.full((2, 36, 36), 0.5))
    with pytest.raises(ValueError, match="unknown source 'digits'"):
        predictor.predict(torch.zeros((2, 36, 36), dtype=torch.uint8), source="digits")


def test_the_registered_model_answers_by_alias_with_class_names(
    trained, model_inputs, normalisation_stats, tmp_path, monkeypatch
):
    import mlflow

    from multitask_cnn.serving import log_multitask_model

    checkpoint, tasks = trained
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    images = model_inputs[2]["multifashion"]["images"].numpy()[:50]
    with mlflow.start_run():
        info = log_multitask_model(checkpoint, images[:2], "multitask-cnn-test")
    assert info.registered_model_version == 1
    loaded = mlflow.pyfunc.load_model("models:/multitask-cnn-test@candidate")
    answers = loaded.predict(images)
    assert list(answers.columns) == ["left", "right"] and len(answers) == 50
    predictor = Predictor(checkpoint)
    evaluated = predictor.predict(images)
    for task in tasks:
        names = predictor.class_names(task)
        assert answers[task].tolist() == [names[i] for i in evaluated[task]]
    assert list(loaded.metadata.signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == [
        -1, 1, 36, 36
    ]  # fmt: skip
    # asked for, the class probabilities: a column per class, rows summing to 1, the
    # most likely class the answer
    full = loaded.predict(images[:5], params={"probabilities": True})
    left = [f"left.p.{name}" for name in predictor.class_names("left")]
    assert list(full.columns) == ["left", "right", *left,
                                  *(f"right.p.{n}" for n in predictor.class_names("right"))]  # fmt: skip
    np.testing.assert_allclose(full[left].sum(axis=1), 1.0, rtol=1e-5)
    assert [c.removeprefix("left.p.") for c in full[left].idxmax(axis=1)] == full[
        "left"
    ].tolist()


def test_a_fused_model_answers_for_the_source_it_is_told():
    from multitask_cnn.models import build_model
    from multitask_cnn.serving import answer
    from multitask_cnn.tasks import TaskSpec

    tasks = {"left": {"kind": "multiclass", "num_classes": 10},
             "digit": {"kind": "multiclass", "num_classes": 10, "source": "digits"}}  # fmt: skip
    specs = {t: TaskSpec(**s) for t, s in tasks.items()}
    args = {"input_size": 36}
    stats = {"mean": 0.2, "std": 0.3, "targets": {}}
    checkpoint = {
        "config": {
            "tasks": tasks,
            "model": {"backbone": "lenet", "backbone_args": args},
        },
        "model": build_model(specs, "lenet", backbone_args=args).state_dict(),
        "normalisation": {"multifashion": stats, "digits": stats},
    }  # (untrained: only which heads answer matters here)
    predictor = Predictor(checkpoint)
    images = np.random.default_rng(0).integers(0, 256, (3, 36, 36))
    assert list(answer(predictor, images).columns) == [
        "left"
    ]  # the first task's source
    digits = answer(predictor, images, "digits")
    assert list(digits.columns) == ["digit"] and set(digits["digit"]) <= set(
        "0123456789"
    )
