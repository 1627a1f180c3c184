"""Typed values from a config tree: integers, numbers, choices, pairs, paths, with errors.

Every reader takes a :class:`~cbr_cli.spec.yaml_reader.Value` and either returns the typed
value or raises a :class:`~cbr_cli.errors.CbrError` located at it (``FILE:LINE:COL:
key.path:`` or the flag), echoing what was given.
"""

from __future__ import annotations

import difflib
import os
import re

from cbr_cli.core.shapes import PADDING_STRINGS
from cbr_cli.errors import CbrError
from cbr_cli.spec.pipeline_types import (
    MAX_SIDE,
    ParamSource,
)
from cbr_cli.spec.yaml_reader import Value


def _mapping(value: Value, allowed: tuple[str, ...]) -> dict[str, Value]:
    if not isinstance(value.data, dict):
        raise value.error(f"expected a mapping with keys {list(allowed)} (got {_show(value)})")
    for key in value.data:
        if key not in allowed:
            where = value.key_where.get(key) or value.data[key].where
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"expected one of {list(allowed)}"
            raise CbrError(f"{where}: unknown key ({hint})")
    return value.data


def _show(value: Value) -> str:
    data = value.plain()
    if isinstance(data, dict):
        return "a mapping"
    if isinstance(data, list):
        return "a list"
    return repr(data)


def _int(
    value: Value, minimum: int | None = None, what: str = "an integer", maximum: int | None = None
) -> int:
    """An integer (digits in a string too: flags arrive as text) in [minimum, maximum].

    ``what`` names what is expected, lower bound included (``"a positive integer"``);
    a value above ``maximum`` is refused with the allowed range.
    """
    data = value.data
    if isinstance(data, str) and re.fullmatch(r"[+-]?\d{1,4000}", data.strip()):
        data = int(data)  # at most 4000 digits: Python's int(str) limit is 4300
    if isinstance(data, bool) or not isinstance(data, int):
        raise value.error(f"expected {what} (got {_show(value)})")
    if minimum is not None and data < minimum:
        raise value.error(f"expected {what} (got {data})")
    if maximum is not None and data > maximum:
        bounds = f"of at most {maximum}" if minimum is None else f"from {minimum} to {maximum}"
        raise value.error(f"expected {what} {bounds} (got {_big(data)})")
    return data


def _big(number: int) -> str:
    """``number`` as digits, shortened when it is very long."""
    text = str(number)
    return text if len(text) <= 30 else f"{text[:12]}...{text[-6:]} ({len(text)} digits)"


def _float(value: Value, what: str = "a number") -> float:
    """A finite number; strings such as ``1e-5`` (YAML 1.1 reads them as text) are accepted."""
    data = value.data
    if isinstance(data, str):
        try:
            data = float(data.strip())
        except ValueError:
            raise value.error(f"expected {what} (got {_show(value)})") from None
    if isinstance(data, bool) or not isinstance(data, (int, float)):
        raise value.error(f"expected {what} (got {_show(value)})")
    data = float(data)
    if data != data or data in (float("inf"), float("-inf")):
        raise value.error(f"expected a finite number (got {data})")
    return data


def _bool(value: Value) -> bool:
    if isinstance(value.data, bool):
        return value.data
    raise value.error(f"expected true or false (got {_show(value)})")


def _choice(value: Value, choices: tuple[str, ...]) -> str:
    if isinstance(value.data, str) and value.data in choices:
        return value.data
    if value.data in (None, False) and "none" in choices:  # `none`, `null`, YAML 1.1 `off`
        return "none"
    close = difflib.get_close_matches(str(value.data), choices, n=1) if value.data else []
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise value.error(f"expected one of {list(choices)} (got {_show(value)}){hint}")


def _int_pair(value: Value, minimum: int, what: str, maximum: int = MAX_SIDE) -> tuple[int, int]:
    """An int or a pair ``[h, w]`` of ints in [minimum, maximum] (default :data:`MAX_SIDE`)."""
    if isinstance(value.data, list):
        if len(value.data) != 2:
            raise value.error(f"expected {what} or a pair [h, w] (got a list of {len(value.data)})")
        return (
            _int(value.data[0], minimum, what, maximum),
            _int(value.data[1], minimum, what, maximum),
        )
    n = _int(value, minimum, what, maximum)
    return n, n


def _padding(value: Value) -> tuple[int, int] | str:
    if isinstance(value.data, str) and not value.data.strip().lstrip("+-").isdigit():
        if value.data in PADDING_STRINGS:
            return value.data
        close = difflib.get_close_matches(value.data.strip().lower(), PADDING_STRINGS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise value.error(
            f"expected an int >= 0, a pair, or one of {list(PADDING_STRINGS)} "
            f"(got {_show(value)}){hint}"
        )
    return _int_pair(value, 0, "a non-negative integer")


def _path(value: Value, suffix: str = ".npy") -> str:
    if not isinstance(value.data, str) or not value.data.strip():
        raise value.error(f"expected a path to a {suffix} file (got {_show(value)})")
    path = os.path.join(value.base_dir, os.path.expanduser(value.data))
    if not path.lower().endswith(suffix):
        raise value.error(f"expected a {suffix} file (got {value.data!r})")
    from cbr_cli.io.readfile import not_regular_reason

    try:
        reason = not_regular_reason(os.stat(path).st_mode)
    except FileNotFoundError:
        reason = "file not found"
    except OSError as exc:
        reason = f"cannot read it ({exc.strerror or exc})"
    if reason is not None:
        raise value.error(f"{reason} (got {value.data!r}, looked for {path})")
    return os.path.normpath(path)


def _param(value: Value, what: str = "a number", positive: bool = False) -> ParamSource:
    """A scalar, a list of numbers, or a ``.npy`` path."""
    if isinstance(value.data, list):
        if not value.data:
            raise value.error("expected a non-empty list of numbers (got an empty list)")
        numbers = tuple(_float(item, what) for item in value.data)
        if positive and min(numbers) <= 0:
            raise value.error(f"expected positive numbers (got {list(numbers)})")
        return ParamSource(numbers, value.where)
    if isinstance(value.data, str) and value.data.strip().lower().endswith(".npy"):
        return ParamSource(_path(value), value.where)
    number = _float(value, f"{what}, a list of numbers, or a .npy path")
    if positive and number <= 0:
        raise value.error(f"expected a positive number (got {number})")
    return ParamSource(number, value.where)
