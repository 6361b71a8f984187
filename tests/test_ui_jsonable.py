"""``local_ui.context.jsonable``: plain values pass as they are, anything else becomes JSON."""

from __future__ import annotations

import enum
import json

from local_ui.context import jsonable


class _Colour(enum.StrEnum):
    RED = "red"


class _Thing:
    def __str__(self) -> str:
        return "a thing"


def test_plain_values_and_nesting_pass_unchanged() -> None:
    value = {"a": [1, 2.5, "x", None, True], "b": {"c": (1, 2)}, 3: "three"}
    out = jsonable(value)
    assert out == {"a": [1, 2.5, "x", None, True], "b": {"c": [1, 2]}, "3": "three"}
    assert json.loads(json.dumps(out)) == out


def test_other_values_become_strings_or_stay_json() -> None:
    out = jsonable({"colour": _Colour.RED, "thing": _Thing(), "items": [_Thing()]})
    assert out == {"colour": "red", "thing": "a thing", "items": ["a thing"]}
    assert json.dumps(out) == '{"colour": "red", "thing": "a thing", "items": ["a thing"]}'
