import pytest

from multitask_cnn.config import (
    ConfigError,
    TrainingConfig,
    parse,
    parse_tasks,
    validate_parameters,
)

TASKS = {"left": {"kind": "multiclass", "num_classes": 10}}


def test_defaults_are_valid():
    params = validate_parameters({"tasks": TASKS})
    assert params.training.device == "auto" and params.model.backbone == "lenet"


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"tasks": {"left": {"kind": "ordinal"}}},
         "parameter 'tasks.left.kind' (conf/base/parameters.yml or --params): Input should be"),
        ({"tasks": TASKS, "training": {"epochs": "abc"}},
         "parameter 'training.epochs' (conf/base/parameters_multitask_training.yml or --params): "
         "Input should be a valid integer"),
        ({"tasks": TASKS, "training": {"epochs": 3, "lr": -1}}, "parameter 'training.lr'"),
        ({"tasks": TASKS, "training": {"epoch": 3}},
         "parameter 'training.epoch' (conf/base/parameters_multitask_training.yml or --params): unknown key"),
        ({"tasks": TASKS, "training": {"device": "gpu"}}, "'gpu' is not a device"),
        ({"tasks": TASKS, "training": {"weighting": "magic"}}, "unknown weighting 'magic'"),
        ({"tasks": TASKS, "model": {"backbone": "vgg"}}, "unknown backbone 'vgg'"),
        ({"tasks": TASKS, "model": {"backbone_args": {"depth": 3}}},
         "backbone_args for 'lenet': lenet() got an unexpected keyword argument 'depth'"),
        ({"tasks": TASKS, "model": {"shared_stages": 5}},
         "model.shared_stages=5 but 'lenet' has 3 stages"),
        ({"tasks": {"middle": {"kind": "multiclass", "num_classes": 10}}},
         "source 'multifashion' has no label 'middle'"),
        ({"tasks": {"left": {"kind": "multiclass"}}}, "needs num_classes >= 2"),
        ({"tasks": {}}, "at least one task"),
        ({"tasks": {"left": {"kind": "multiclass", "num_classes": 3, "class_names": ["a"]}}},
         "class_names has 1 names, expected 3"),
    ],
)  # fmt: skip
def test_bad_parameters_name_the_key_and_file(params, expected):
    with pytest.raises(ConfigError) as error:
        validate_parameters(params)
    assert expected in str(error.value)


def test_wrong_type_shows_the_value_given():
    with pytest.raises(ConfigError, match=r"\(got 'abc'\)"):
        parse(TrainingConfig, {"batch_size": "abc"}, "training")


def test_report_class_names_come_from_the_spec_or_the_source():
    tasks = parse_tasks({
        "left": {"kind": "multiclass", "num_classes": 10},
        "right": {"kind": "multiclass", "num_classes": 10, "class_names": list("abcdefghij")},
        "flag": {"kind": "binary", "label": "left"},
        "named": {"kind": "binary", "label": "left", "class_names": ["no", "yes"]},
    })  # fmt: skip
    assert tasks["left"].display_classes()[9] == "Ankle boot"
    assert tasks["right"].display_classes()[0] == "a"
    assert tasks["flag"].display_classes() == ["0", "1"]
    assert tasks["named"].display_classes() == ["no", "yes"]  # binary names honoured
