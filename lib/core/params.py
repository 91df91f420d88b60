"""params.yaml, read once and handed out section by section; each section is validated by its own schema.

The loader knows no section. The code that reads a section owns its schema (a frozen dataclass: a method's
`Config`, the corpus generator's `CorpusConfig`, ...) and asks for it by key, `params.get("causal.finetune",
TrainConfig)`: unknown keys, values of the wrong type and the schema's own range checks are errors that name
the key path, the bad value and what is allowed. A field with a default may be left out of params.yaml, so a
default lives once, in the schema.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

T = TypeVar("T")


class ParamsError(ValueError):
    """A params.yaml problem; the message names the key and what is allowed."""


class Count(int):
    """Schema type of a scalar key that counts items: an integer >= 1."""


def _article(name: str) -> str:
    """'an int', 'a float': the type name with its article, for messages."""
    return f"{'an' if name[:1] in 'aeiou' else 'a'} {name}"


def _coerce_scalar(value: Any, kind: type, where: str) -> Any:
    """Check one scalar against its declared type; numbers written as strings are parsed."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ParamsError(f"{where} = {value!r} is not a boolean (allowed: true/false)")
    if kind in (int, float) and not isinstance(value, bool):
        if isinstance(value, str):
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


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Convert `value` to the type `hint`, recursing into dataclasses, lists, tuples and dicts."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return build(hint, value, where)
    if hint is Count:
        count = _coerce_scalar(value, int, where)
        if count < 1:
            raise ParamsError(f"{where} = {count!r} invalid; allowed: an integer >= 1")
        return count
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, option, where)
            except ParamsError as err:
                errors.append(str(err))
        raise ParamsError(f"{where} = {value!r} matches none of the allowed types: " + "; ".join(errors))
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ParamsError(f"{where} = {value!r} is not a list")
        kinds = args if origin is tuple and args and args[-1] is not Ellipsis else (args[0],) * len(value)
        if origin is tuple and args and args[-1] is not Ellipsis and len(value) != len(args):
            raise ParamsError(f"{where} = {value!r} must have {len(args)} entries")
        items = [_coerce(v, kind, f"{where}[{i}]") for i, (v, kind) in enumerate(zip(value, kinds))]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ParamsError(f"{where} = {value!r} is not a mapping")
        return {str(k): _coerce(v, args[1], f"{where}.{k}") for k, v in value.items()}
    return _coerce_scalar(value, hint, where)


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
