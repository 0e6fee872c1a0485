"""Settings declared once, as dataclass fields: type (a `Literal` for a closed set of values), default, help and
allowed range (`setting(...)` metadata). From the declarations come the absl flags (`define_flag`) and the
checks (`Section.validate`), so a command line and a Python caller accept the same values and refuse the others
with the same one-line message. The run's config (tltrain.config) and the converter's options
(tltrain.convert.options) are declared this way. Stdlib only: converter worker processes import it.
"""

from __future__ import annotations

import dataclasses
import math
import operator
import typing
from typing import Literal


def setting(default, help: str, *, flag: str = "", ge=None, gt=None, le=None, lt=None, order: str = ""):
    """A dataclass field with its default, its flag's help and its range, all checked by `Section.validate()`.

    ge/gt/le/lt bound the value (each element of a tuple); order="<" or "<=" asks a tuple to be increasing;
    flag names the flag when it is not the field's name."""
    bounds = {key: value for key, value in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if value is not None}
    return dataclasses.field(default=default, metadata={"help": help, "flag": flag, "bounds": bounds, "order": order})


def choices(hint) -> tuple | None:
    """The allowed values of a Literal field (also inside `| None`); None for any other type."""
    for candidate in (hint, *typing.get_args(hint)):
        if typing.get_origin(candidate) is Literal:
            return typing.get_args(candidate)
    return None


def tuple_args(hint) -> tuple | None:
    """The arguments of a tuple field's type (also inside `| None`); None for a scalar field."""
    for candidate in (hint, *typing.get_args(hint)):
        if typing.get_origin(candidate) is tuple:
            return typing.get_args(candidate)
    return None


def scalar_type(hint) -> type:
    """int, float, bool or str: the type of a field's value, or of each element of a tuple field."""
    if choices(hint):
        return str
    args = tuple_args(hint)
    if args is not None:
        return args[0]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def flag_name(field: dataclasses.Field) -> str:
    return field.metadata.get("flag") or field.name


def show(value) -> str:
    """A value as it is written on the command line (tuples comma-separated)."""
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


_TYPE_TEXT = {float: "a finite number", int: "an integer", bool: "True or False", str: "a string"}
_BOUNDS = {"ge": (operator.ge, ">="), "gt": (operator.gt, ">"), "le": (operator.le, "<="), "lt": (operator.lt, "<")}


def _range_text(bounds: dict) -> str:
    if len(bounds) == 2:
        (low_key, low), (high_key, high) = sorted(bounds.items(), key=lambda kv: kv[0][0] == "l")
        return f"in {'[' if low_key == 'ge' else '('}{low:g}, {high:g}{']' if high_key == 'le' else ')'}"
    (key, bound), = bounds.items()
    return f"{_BOUNDS[key][1]} {bound:g}"


def _problem(value, hint, metadata) -> str | None:
    """What is wrong with a field's value (type, choice, range, order), or None."""
    allowed = choices(hint)
    if allowed is not None:
        return None if value in allowed else f"must be one of {', '.join(allowed)}"
    if value is None:
        return None if type(None) in typing.get_args(hint) else "must be set"
    args = tuple_args(hint)
    kind = scalar_type(hint)
    if args is not None:
        if not isinstance(value, tuple):
            return f"must be a tuple of values that are each {_TYPE_TEXT[kind]}"
        if Ellipsis not in args and len(value) != len(args):
            return f"needs {len(args)} comma-separated values, got {len(value)}"
    elements = value if args is not None else (value,)
    for element in elements:
        if kind is float:
            ok = isinstance(element, (int, float)) and not isinstance(element, bool) and math.isfinite(element)
        elif kind is int:
            ok = isinstance(element, int) and not isinstance(element, bool)
        else:
            ok = isinstance(element, kind)
        if not ok:
            return f"must be {_TYPE_TEXT[kind]}"
    bounds = metadata.get("bounds", {})
    if any(not _BOUNDS[key][0](element, bound) for element in elements for key, bound in bounds.items()):
        return f"must be {_range_text(bounds)}" + (" (each value)" if args is not None else "")
    order = metadata.get("order")
    if order and any(not (operator.lt if order == "<" else operator.le)(a, b) for a, b in zip(value, value[1:])):
        return "must be increasing" if order == "<" else "must not decrease"
    return None


class Section:
    """A dataclass of settings that can check itself against its fields' declarations."""

    error: typing.ClassVar[type[ValueError]] = ValueError  # what validate() raises

    def validate(self):
        """Returns self, or raises ValueError `--flag=value: must be ...` (one line) for the first field out of
        its declared type, choices or range. The library's messages name the flag; tltrain.api rewrites them
        to argument names."""
        hints = typing.get_type_hints(type(self))
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            problem = _problem(value, hints[field.name], field.metadata)
            if problem:
                raise self.error(f"--{flag_name(field)}={show(value)}: {problem}")
        return self


def define_flag(name: str, field: dataclasses.Field, hint, module_name: str | None = None) -> None:
    """The absl flag of one declared field: typed by its hint (an enum for a Literal, a list for a tuple),
    with its default and help."""
    from absl import flags

    default, help_text, kind = field.default, field.metadata["help"], scalar_type(hint)
    if tuple_args(hint) is not None:
        flags.DEFINE_list(name, None if default is None else [str(v) for v in default], help_text,
                          module_name=module_name)
    elif choices(hint):
        flags.DEFINE_enum(name, default, choices(hint), help_text, module_name=module_name)
    else:
        define = {bool: flags.DEFINE_boolean, int: flags.DEFINE_integer, float: flags.DEFINE_float}.get(
            kind, flags.DEFINE_string)
        define(name, default, help_text, module_name=module_name)


def from_flag(name: str, hint, value):
    """A parsed flag's value as its field holds it (a tuple field's list as a tuple of its element type);
    ValueError naming the flag when an element is not of that type."""
    args = tuple_args(hint)
    if args is None or value is None:
        return value
    try:
        return tuple(args[0](v) for v in value)
    except ValueError as e:
        raise ValueError(f"--{name}={','.join(value)}: not a list of {args[0].__name__}") from e
