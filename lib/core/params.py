"""params.yaml, read once and handed out section by section; each section is validated by its own schema.

The loader knows no section. The code that reads a section owns its schema (a frozen dataclass: a method's
`Config`, the corpus generator's `CorpusConfig`, ...) and asks for it by key, `params.get("causal.finetune",
TrainConfig)`: unknown keys, values of the wrong type and the schema's own range checks are errors that name
the key path, the bad value and what is allowed. A field with a default may be left out of params.yaml, so a
default lives once, in the schema.

Every number and name in a schema carries its range in its type: `Count` (an int >= 1), `Natural` (>= 0),
`Positive` (a float > 0), `NonNegative`, `Fraction` ([0, 1]), `PositiveFraction` ((0, 1]), `OpenFraction`
((0, 1)), `NonEmpty` (a str). They subclass int / float / str, so an annotated field holds a plain value; the
loader checks them where they stand (in Optional, lists, tuples, dicts), and a schema's `__post_init__` calls
`check_ranges(self)` so a Config built in code is held to the same ranges.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar, Union

import yaml

T = TypeVar("T")


class ParamsError(ValueError):
    """A params.yaml problem; the message names the key and what is allowed."""


class Count(int):
    """Schema type of a size, budget or step count: an integer >= 1."""


class Natural(int):
    """Schema type of a seed, index or count where 0 means something: an integer >= 0."""


class Positive(float):
    """Schema type of a learning rate, strength, temperature or scale: a finite number > 0."""


class NonNegative(float):
    """Schema type of a weight or decay that 0 switches off: a finite number >= 0."""


class Fraction(float):
    """Schema type of a share or probability: a number in [0, 1]."""


class PositiveFraction(float):
    """Schema type of a share that 0 would make empty: a number in (0, 1]."""


class OpenFraction(float):
    """Schema type of a split or quantile that needs both sides: a number in (0, 1)."""


class NonEmpty(str):
    """Schema type of a name, path or URI: a string with a non-blank character."""


# range type -> (the plain type its values keep, the test a value must pass, what is allowed as messages say it)
RANGES: dict[type, tuple[type, Callable[[Any], bool], str]] = {
    Count: (int, lambda n: n >= 1, "an integer >= 1"),
    Natural: (int, lambda n: n >= 0, "an integer >= 0"),
    Positive: (float, lambda x: x > 0, "a finite number > 0"),
    NonNegative: (float, lambda x: x >= 0, "a finite number >= 0"),
    Fraction: (float, lambda x: 0 <= x <= 1, "a number in [0, 1]"),
    PositiveFraction: (float, lambda x: 0 < x <= 1, "a number in (0, 1]"),
    OpenFraction: (float, lambda x: 0 < x < 1, "a number in (0, 1)"),
    NonEmpty: (str, lambda s: bool(s.strip()), "a non-empty string"),
}


def _article(name: str) -> str:
    """'an int', 'a float': the type name with its article, for messages."""
    return f"{'an' if name[:1] in 'aeiou' else 'a'} {name}"


def _coerce_scalar(value: Any, kind: type, where: str, parse: bool = True) -> Any:
    """Check one scalar against its declared type; with `parse`, numbers written as strings are read."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ParamsError(f"{where} = {value!r} is not a boolean (allowed: true/false)")
    if kind in (int, float) and not isinstance(value, bool):
        if isinstance(value, str) and parse:
            try:  # YAML 1.1 reads 3e-4 as a string
                value = float(value) if kind is float else int(value)
            except ValueError:
                raise ParamsError(f"{where} = {value!r} is not a number ({kind.__name__} expected)") from None
        if isinstance(value, int) or (kind is float and isinstance(value, float)):
            if kind is float and not math.isfinite(value):
                raise ParamsError(f"{where} = {value!r} is not a finite number")
            return kind(value)
        raise ParamsError(f"{where} = {value!r} is not {_article(kind.__name__)}")
    if kind is str and isinstance(value, str):
        return value
    if kind is Any:
        return value
    raise ParamsError(f"{where} = {value!r} is not {_article(str(getattr(kind, '__name__', kind)))}")


def _coerce_range(value: Any, kind: type, where: str, parse: bool = True) -> Any:
    """Check one scalar against a range type; the result is the plain int / float / str, so hashes stay the same."""
    base, allowed, text = RANGES[kind]
    plain = _coerce_scalar(value, base, where, parse)
    if not allowed(plain):
        raise ParamsError(f"{where} = {plain!r} invalid; allowed: {text}")
    return plain


def _coerce(value: Any, hint: Any, where: str, parse: bool = True) -> Any:
    """Convert `value` to the type `hint`, recursing into dataclasses, lists, tuples and dicts.

    `parse` reads numbers written as strings (YAML); a Config built in code gets no such leniency.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return build(hint, value, where)
    if isinstance(hint, type) and hint in RANGES:
        return _coerce_range(value, hint, where, parse)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1 and options[0] in RANGES:  # Optional[Count]: the range's own message, plus null
            try:
                return _coerce_range(value, options[0], where, parse)
            except ParamsError as err:
                raise ParamsError(f"{err}, or null") from None
        errors = []
        for option in options:
            try:
                return _coerce(value, option, where, parse)
            except ParamsError as err:
                errors.append(str(err))
        raise ParamsError(f"{where} = {value!r} matches none of the allowed types: " + "; ".join(errors))
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ParamsError(f"{where} = {value!r} is not a list")
        kinds = args if origin is tuple and args and args[-1] is not Ellipsis else (args[0],) * len(value)
        if origin is tuple and args and args[-1] is not Ellipsis and len(value) != len(args):
            raise ParamsError(f"{where} = {value!r} must have {len(args)} entries")
        items = [_coerce(v, kind, f"{where}[{i}]", parse) for i, (v, kind) in enumerate(zip(value, kinds))]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ParamsError(f"{where} = {value!r} is not a mapping")
        return {str(k): _coerce(v, args[1], f"{where}.{k}", parse) for k, v in value.items()}
    return _coerce_scalar(value, hint, where, parse)


def build(cls: type[T], mapping: Any, where: str = "params") -> T:
    """Build dataclass `cls` from a mapping: unknown keys and missing keys without a default are errors."""
    if not isinstance(mapping, dict):
        raise ParamsError(f"{where} = {mapping!r} is not a mapping of {cls.__name__} fields")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(mapping) - set(fields))
    if unknown:
        raise ParamsError(f"unknown key {where}.{unknown[0]}; allowed keys: {sorted(fields)}")
    required = [name for name, f in fields.items()
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [name for name in required if name not in mapping]
    if missing:
        raise ParamsError(f"missing key {where}.{missing[0]}")
    values = {name: _coerce(value, hints[name], f"{where}.{name}") for name, value in mapping.items()}
    try:
        return cls(**values)
    except ParamsError:
        raise
    except ValueError as err:  # the schema's own range checks
        raise ParamsError(f"{where}: {err}") from None


def check_keys(cls: type, mapping: Any, where: str) -> None:
    """Check the keys a partial section sets (overrides such as `by_category.TEL`) against dataclass `cls`."""
    if not isinstance(mapping, dict):
        raise ParamsError(f"{where} = {mapping!r} is not a mapping of {cls.__name__} fields")
    hints = typing.get_type_hints(cls)
    fields = sorted(f.name for f in dataclasses.fields(cls) if f.init)
    for key, value in mapping.items():
        if key not in fields:
            raise ParamsError(f"unknown key {where}.{key}; allowed keys: {fields}")
        _coerce(value, hints[key], f"{where}.{key}")


def _has_range(hint: Any) -> bool:
    """True when a field's type is, or holds, a range type (Count, Fraction, ...)."""
    return (isinstance(hint, type) and hint in RANGES) or any(_has_range(a) for a in typing.get_args(hint))


@functools.cache
def _ranged_fields(cls: type) -> tuple[tuple[str, Any], ...]:
    """(name, type) of each field of dataclass `cls` whose type holds a range type."""
    hints = typing.get_type_hints(cls)
    return tuple((f.name, hints[f.name]) for f in dataclasses.fields(cls) if _has_range(hints[f.name]))


def check_ranges(obj: Any) -> None:
    """ValueError naming the first field of dataclass `obj` whose value is outside the range its type declares.

    `build` has checked a loaded section already; this holds a Config built in code (tests, sweeps) to the same
    ranges, so a schema's `__post_init__` keeps only the checks that relate fields.
    """
    for name, hint in _ranged_fields(type(obj)):
        try:
            _coerce(getattr(obj, name), hint, name, parse=False)
        except ParamsError as err:  # a field-level message, `name=value`, like the schemas' own checks
            raise ValueError(str(err).replace(" = ", "=", 1)) from None


def read(path: str | Path) -> dict[str, Any]:
    """The raw mapping of a params file; a missing or malformed file is a ParamsError."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"params file {path} not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ParamsError(f"params file {path} is not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"params file {path} holds {type(raw).__name__}, not a mapping of sections")
    return raw


def lookup(raw: dict[str, Any], key: str) -> Any:
    """The value at a dotted key; a missing key names the keys allowed where the path stopped."""
    node: Any = raw
    walked: list[str] = []
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            where = ".".join(walked) or "the top level"
            allowed = sorted(node) if isinstance(node, dict) else []
            raise ParamsError(f"missing key {key}; keys under {where}: {allowed}")
        node = node[part]
        walked.append(part)
    return node


@dataclass(frozen=True)
class Params:
    """params.yaml as read: sections come out raw, or built and validated by the caller's schema."""

    raw: dict[str, Any]

    def get(self, key: str, schema: type[T] | None = None) -> Any:
        """The section at a dotted key, validated by `schema` when given (then an instance of it)."""
        value = lookup(self.raw, key)
        return value if schema is None else _coerce(value, schema, key)

    def fingerprint(self, *keys: str) -> str:
        """A short digest of the values at `keys` (an MLflow run's params_hash: what its stage read)."""
        text = json.dumps({key: lookup(self.raw, key) for key in keys}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read params.yaml (sections are validated when they are asked for)."""
    return Params(read(path))
