"""Integer options refuse floats (and bools) with a message naming the argument, the allowed values
and the value received; a whole float such as 2.0 is refused too, never truncated."""

from __future__ import annotations

import pytest

from adaloss._validation import check_int, check_int_list, float_note
from adaloss.models import create_model

FLOATS = "Floats are not accepted, not even whole ones such as 2.0."


@pytest.mark.parametrize("value", [0.5, 2.0, 3.7])
def test_check_int_refuses_a_float_and_says_whole_floats_are_refused_too(value: float) -> None:
    with pytest.raises(TypeError, match=rf"^Expected `K` to be an integer, but got {value!r} \(float\)\. {FLOATS}$"):
        check_int("K", value, minimum=1)


def test_check_int_accepts_ints_and_names_the_bound() -> None:
    assert check_int("K", 3, minimum=1) == 3
    with pytest.raises(ValueError, match=r"^Expected `K` to be >= 1, but got 0\.$"):
        check_int("K", 0, minimum=1)
    with pytest.raises(TypeError, match=r"^Expected `K` to be an integer, but got True \(bool\)\.$"):
        check_int("K", True, minimum=1)


@pytest.mark.parametrize(
    "value,error,message",
    [
        ([0.5], TypeError, rf"^Expected `hidden` to be a list of positive integers, but got \[0\.5\]\. {FLOATS}$"),
        ([40, 2.0], TypeError, rf"^Expected `hidden` to be a list of positive integers, but got \[40, 2\.0\]\. {FLOATS}$"),
        ([True], TypeError, r"^Expected `hidden` to be a list of positive integers, but got \[True\]\.$"),
        (40, TypeError, r"^Expected `hidden` to be a list of positive integers, but got 40\.$"),
        ("40", TypeError, r"^Expected `hidden` to be a list of positive integers, but got '40'\.$"),
        ([40, 0], ValueError, r"^Expected `hidden` to be a list of positive integers, but got \[40, 0\]\.$"),
    ],
)
def test_check_int_list_names_argument_allowed_values_and_value(value: object, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        check_int_list("hidden", value, minimum=1)


def test_check_int_list_accepts_lists_and_tuples_of_ints() -> None:
    assert check_int_list("hidden", (40, 40)) == [40, 40]
    assert check_int_list("hidden", []) == []
    assert check_int_list("sizes", [0, 3], minimum=0) == [0, 3]
    with pytest.raises(ValueError, match=r"a list of non-negative integers, but got \[-1\]"):
        check_int_list("sizes", [-1], minimum=0)
    with pytest.raises(ValueError, match=r"a list of integers >= 2, but got \[1\]"):
        check_int_list("sizes", [1], minimum=2)


def test_float_note_only_when_a_float_was_given() -> None:
    assert float_note(2.0) == float_note([1, 2.0]) == f" {FLOATS}"
    assert float_note(2) == float_note([1, 2]) == float_note("2.0") == float_note(None) == ""


@pytest.mark.parametrize("options,name", [({"hidden": [0.5]}, "hidden"), ({"hidden": [16.0]}, "hidden")])
def test_model_integer_options_refuse_floats_the_same_way(options: dict, name: str) -> None:
    with pytest.raises(ValueError, match=rf"Expected `{name}` to be a sequence of positive ints, but got .*{FLOATS}"):
        create_model("mlp", (4,), 3, **options)
    with pytest.raises(ValueError, match=rf"Expected `num_outputs` to be a positive int, but got 3\.0\. {FLOATS}"):
        create_model("mlp", (4,), 3.0)  # type: ignore[arg-type]
