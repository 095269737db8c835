"""The JSON round trip of every model config (the `stylert.config` of graphs and checkpoints)."""
from __future__ import annotations

import dataclasses
import typing


class JSONConfig:
    """Mixin of a config dataclass. `to_json()` is a JSON-ready dict in field order: int-keyed dicts (channels
    per resolution) get string keys, tuples become lists, nested configs dicts. `from_json(d)` reverses it from
    the field types; keys that are not fields are ignored, and fields missing from `d` take their defaults."""

    def to_json(self) -> dict:
        return {f.name: _to_json(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_json(cls, d: dict):
        types = typing.get_type_hints(cls)
        return cls(**{f.name: _from_json(types[f.name], d[f.name]) for f in dataclasses.fields(cls) if f.name in d})


def _to_json(value):
    if isinstance(value, JSONConfig):
        return value.to_json()
    if isinstance(value, dict):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_to_json(v) for v in value]
    return value


def _from_json(kind, value):
    if isinstance(kind, type) and issubclass(kind, JSONConfig):
        return kind.from_json(value)
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is dict:
        return {args[0](k): args[1](v) for k, v in value.items()}
    if origin is tuple:
        return tuple(value)
    return value
