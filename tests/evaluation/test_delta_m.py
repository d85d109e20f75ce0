import math

import pytest

from multitask_cnn.evaluation import delta_m


def test_delta_m_is_the_mean_signed_relative_change_in_percent():
    multi = {
        "a": {"accuracy": 0.9, "f1_macro": 0.8, "n": 100},
        "b": {"mse": 1.0, "mae": 0.5},
    }
    single = {
        "a": {"accuracy": 0.8, "f1_macro": 0.8, "n": 100},
        "b": {"mse": 2.0, "mae": 0.5},
    }
    value, terms = delta_m(multi, single, {"b": {"mse", "mae"}})
    assert terms == pytest.approx(
        {"a": 100 * (0.125 + 0) / 2, "b": 100 * (0.5 + 0) / 2}
    )
    assert value == pytest.approx((6.25 + 25.0) / 2)


def test_lower_is_better_flips_the_sign_and_worse_is_negative():
    value, _ = delta_m({"b": {"mse": 3.0}}, {"b": {"mse": 2.0}}, {"b": {"mse"}})
    assert value == pytest.approx(-50.0)
    value, _ = delta_m({"a": {"accuracy": 0.4}}, {"a": {"accuracy": 0.8}}, {})
    assert value == pytest.approx(-50.0)


def test_a_zero_baseline_gives_nan_not_a_number_made_up_and_tasks_must_match():
    value, terms = delta_m({"a": {"accuracy": 0.5}}, {"a": {"accuracy": 0.0}}, {})
    assert math.isnan(value) and math.isnan(terms["a"])
    with pytest.raises(ValueError, match="same tasks"):
        delta_m({"a": {"accuracy": 1}}, {"b": {"accuracy": 1}}, {})
