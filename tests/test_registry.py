import pytest

from multitask_cnn.registry import Registry, UnknownNameError


def test_registry_refuses_duplicates_and_names_the_choices():
    registry: Registry[int] = Registry("widget")
    registry.register("a")(1)
    registry.register("b")(2)
    with pytest.raises(ValueError, match="widget 'a' is already registered"):
        registry.register("a")(3)
    with pytest.raises(UnknownNameError) as error:
        registry.get("c")
    assert (
        str(error.value) == "unknown widget 'c'; choose from ['a', 'b']"
    )  # no KeyError quotes
    with pytest.raises(ValueError, match="unknown widget 'c'"):
        registry.check("c")
    assert registry.get("b") == 2 and "a" in registry and registry.names() == ["a", "b"]
