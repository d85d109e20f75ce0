import re
from pathlib import Path

import pytest
import yaml

from multitask_cnn.config import (
    ConfigError,
    TrainingConfig,
    effective_parameters,
    parameter_origin,
    parse,
    parse_tasks,
    source_class_names,
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
         "parameter 'tasks.left.kind' (conf/base/parameters.yml or --params): unknown task kind 'ordinal'"),
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
         "model.backbone_args for 'lenet': got an unexpected keyword argument 'depth'"),
        ({"tasks": TASKS, "model": {"shared_stages": 5}},
         "model.shared_stages=5 but 'lenet' has 3 stages"),
        ({"tasks": {"middle": {"kind": "multiclass", "num_classes": 10}}},
         "source 'multifashion' has no label 'middle'"),
        ({"tasks": {"left": {"kind": "multiclass"}}}, "needs num_classes >= 2"),
        ({"tasks": {}}, "at least one task"),
        ({"tasks": {"left": {"kind": "multiclass", "num_classes": 3, "class_names": ["a"]}}},
         "class_names has 1 names, expected 3"),
        ({"tasks": {"left": {"kind": "binary"}}},
         "task 'left' (binary, 2 classes): label 'left' of 'multifashion' has 10 classes; "
         "use kind: multiclass with num_classes: 10"),
        ({"tasks": {"left": {"kind": "multiclass", "num_classes": 4}}},
         "task 'left' (multiclass, 4 classes): label 'left' of 'multifashion' has 10 classes"),
        ({"tasks": {"left": {"kind": "regression"}}}, "has 10 classes; use kind: multiclass"),
        ({"tasks": {"ink": {"kind": "multiclass", "num_classes": 10}}},
         "label 'ink' of 'multifashion' holds real values; use kind: regression"),
        ({"tasks": {"left": {"kind": "regression", "label": "ink", "class_names": ["x"]}}},
         "regression task has no classes"),
        ({"tasks": {"loss": {"kind": "multiclass", "num_classes": 10, "label": "left"}}},
         "task 'loss': task name 'loss' is reserved for metric names"),
        ({"tasks": {"left-item": {"kind": "multiclass", "num_classes": 10, "label": "left"}}},
         "task name 'left-item' is not an identifier"),
        ({"tasks": TASKS, "training": {"weighting": "pcgrad"}, "model": {"shared_stages": 0}},
         "training.weighting='pcgrad' works on the shared parameters' gradients, "
         "but model.shared_stages=0 shares none"),
        ({"tasks": TASKS, "training": {"weighting": "gradnorm"}, "model": {"shared_stages": 0}},
         "training.weighting='gradnorm' works on the shared parameters' gradients"),
        ({"tasks": TASKS, "training": {"weighting": "cagrad", "weighting_args": {"alpha": 1}}},
         "training.weighting_args for 'cagrad'"),
        ({"tasks": TASKS, "training": {"optimizer": "lbfgs"}},
         "parameter 'training.optimizer' (conf/base/parameters_multitask_training.yml or --params): "
         "unknown optimizer 'lbfgs'; choose from ['adam', 'adamw', 'sgd']"),
        ({"tasks": TASKS, "training": {"seed": -1}}, "parameter 'training.seed'"),
        ({"tasks": TASKS, "data_prep": {"missing_labels": {"middle": 0.5}}},
         "parameter 'data_prep.missing_labels' (conf/base/parameters_data_prep.yml or --params): "
         "unknown labels ['middle']"),
        ({"tasks": TASKS, "data_prep": {"missing_labels": {"left": 1.0}}},
         "parameter 'data_prep.missing_labels.left'"),
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
        "wide": {"kind": "multiclass", "num_classes": 12, "label": "left"},
        "flag": {"kind": "binary", "label": "footwear"},
        "named": {"kind": "binary", "label": "footwear", "class_names": ["no", "yes"]},
    })  # fmt: skip
    names = {task: source_class_names(spec, task) for task, spec in tasks.items()}
    assert names["left"][9] == "Ankle boot"
    assert names["right"][0] == "a"
    assert names["wide"][-1] == "11"  # 12 classes: the source's 10 names do not fit
    assert names["flag"] == ["no footwear", "footwear"]
    assert names["named"] == ["no", "yes"]  # binary names honoured


def test_effective_parameters_fill_every_default_once():
    effective = effective_parameters({"tasks": TASKS, "model": {"backbone": "convnet",
                                      "backbone_args": {"dropout": 0.5}}})  # fmt: skip
    assert effective["training"]["epochs"] == 15 == TrainingConfig().epochs
    assert effective["training"]["early_stopping"] == {"patience": 3, "min_delta": 0.0}
    assert effective["model"]["backbone_args"] == {
        "in_channels": 1, "input_size": 36, "widths": [16, 32, 64], "hidden": 128, "dropout": 0.5,
    }  # fmt: skip
    assert effective["tasks"]["left"]["label"] == "left"
    assert effective["data_prep"]["missing_labels"] == {}
    assert (
        effective_parameters(effective) == effective
    )  # effective values are a fixed point


def test_the_backbone_reads_the_canvas_size():
    effective = effective_parameters({"tasks": TASKS, "data_prep": {"canvas_size": 40}})
    assert effective["model"]["backbone_args"]["input_size"] == 40
    with pytest.raises(ConfigError, match="input_size=36 but data_prep.canvas_size=40"):
        validate_parameters({"tasks": TASKS, "data_prep": {"canvas_size": 40},
                             "model": {"backbone_args": {"input_size": 36}}})  # fmt: skip
    with pytest.raises(
        ConfigError, match="canvas_size=16: lenet needs input_size >= 18"
    ):
        validate_parameters(
            {"tasks": TASKS, "data_prep": {"canvas_size": 16, "max_shift": 0}}
        )


def test_parse_tasks_builds_no_model(monkeypatch):
    monkeypatch.setattr(
        "multitask_cnn.config.get_backbone", None
    )  # would fail if called
    assert set(parse_tasks(TASKS)) == {"left"}


def _readme_defaults() -> dict[str, str]:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    rows = re.findall(r"^\| `([a-z_.]+)` \| `([^`]*)` \|", readme, flags=re.M)
    return dict(rows)


def test_readme_parameter_table_matches_the_schema_defaults():
    documented = _readme_defaults()
    effective = effective_parameters({"tasks": TASKS})
    flat = {}
    for group, values in effective.items():
        if group == "tasks":
            continue
        if not isinstance(values, dict):
            flat[group] = values
            continue
        for key, value in values.items():
            if isinstance(value, dict) and value and key != "backbone_args":
                flat |= {f"{group}.{key}.{k}": v for k, v in value.items()}
            else:
                flat[f"{group}.{key}"] = value
    flat[
        "model.backbone_args"
    ] = {}  # documented as given; the effective value adds the backbone's
    assert set(documented) == set(flat)
    for name, value in flat.items():
        assert yaml.safe_load(documented[name]) == value, name


def test_a_bad_value_is_named_with_where_it_came_from():
    origin = parameter_origin(
        {"training": {"lr": -1}},
        [("conf/smoke/parameters.yml", {"training": {"epochs": "two"}}),
         ("conf/base/parameters.yml", {"training": {"epochs": 15, "lr": 1e-3},
                                       "tasks": TASKS})],
    )  # fmt: skip
    assert origin("training.lr") == "from --params"
    assert origin("training.epochs") == "from conf/smoke/parameters.yml"
    assert origin("tasks.left.kind") == "from conf/base/parameters.yml"
    # a group: its keys may come from several places
    assert origin("tasks") is origin("training") is None
    assert origin("model") is None and origin("training.l") is None
    with pytest.raises(ConfigError) as raised:
        validate_parameters(
            {"tasks": TASKS, "training": {"lr": -1, "epochs": "two"}}, origin
        )
    assert str(raised.value).splitlines()[1:] == [
        "  - parameter 'training.epochs' (from conf/smoke/parameters.yml): Input should "
        "be a valid integer, unable to parse string as an integer (got 'two')",
        "  - parameter 'training.lr' (from --params): Input should be greater than 0 "
        "(got -1)",
    ]
