"""Typed dataclass configs: load from YAML, override from the command line, validate, save.

Every stage has one config dataclass (``IngestConfig``, ``FeaturizeConfig``, ``ModelConfig``,
``TrainConfig``, ``EvalConfig``), defined next to the code it configures. This module is the one
machinery they all share:

- ``from_dict(Cls, mapping)`` builds a config, checking each value against the field's type
  annotation; an error names the field path (``train.optimizer.lr``) and the source file.
- ``load_config(Cls, yaml_path, overrides)`` reads a YAML file then applies ``key.sub=value``
  overrides (values parsed as YAML scalars: ``lr=3e-4``, ``splits=[train,val]``).
- ``to_dict(cfg)`` / ``save_config(cfg, url)`` write it back (atomically) beside a run.
- A config class may define ``validate(self)`` and raise ``ConfigError(field, message)``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

C = TypeVar("C")


class ConfigError(ValueError):
    """A config value is wrong. ``field`` is the dotted path of the offending field."""

    def __init__(self, field: str, message: str, source: str | None = None):
        self.field = field
        self.source = source
        where = f" (in {source})" if source else ""
        super().__init__(f"config field '{field}': {message}{where}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, field: str) -> Any:
    """Check/convert ``value`` to annotation ``tp``; raise ConfigError naming ``field``."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, field)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(field, f"expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(field, f"must be one of {list(allowed)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(field, f"expected a mapping for {tp.__name__}, got {value!r}")
        return _from_dict(tp, value, field)
    if origin in (list, tuple) or tp in (list, tuple):
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ConfigError(field, f"expected a list, got {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(field, f"expected {len(args)} items, got {len(value)}")
            items = [_coerce(v, a, f"{field}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
        else:
            item_tp = args[0] if args else Any
            items = [_coerce(v, item_tp, f"{field}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if (origin is tuple or tp is tuple) else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(field, f"expected a mapping, got {value!r}")
        args = get_args(tp)
        vt = args[1] if args else Any
        return {k: _coerce(v, vt, f"{field}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(field, f"expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(field, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "3e-4" as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(field, f"expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(field, f"expected a string, got {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(field, f"expected {tp.__name__}, got {value!r}")
    return value


def _from_dict(cls: type[C], data: dict, prefix: str) -> C:
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        name = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ConfigError(name, f"unknown field; {cls.__name__} has: {', '.join(fields)}")
    kwargs = {}
    for name, value in data.items():
        path = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _coerce(value, hints[name], path)
    try:
        cfg = cls(**kwargs)
    except TypeError as exc:  # missing required field
        raise ConfigError(prefix or cls.__name__, str(exc)) from None
    validate = getattr(cfg, "validate", None)
    if callable(validate):
        try:
            validate()
        except ConfigError as exc:
            if prefix and not exc.field.startswith(prefix):
                raise ConfigError(f"{prefix}.{exc.field}", str(exc).split(": ", 1)[1]) from None
            raise
    return cfg


def from_dict(cls: type[C], data: dict | None, source: str | None = None) -> C:
    """Build config ``cls`` from a plain mapping, validating every field."""
    try:
        return _from_dict(cls, dict(data or {}), "")
    except ConfigError as exc:
        if source and not exc.source:
            raise ConfigError(exc.field, str(exc).split(": ", 1)[1], source) from None
        raise


def to_dict(cfg: Any) -> dict:
    """The config as plain YAML-able data (tuples become lists)."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(cfg)


def parse_overrides(overrides: typing.Iterable[str]) -> dict:
    """``["a.b=1", "c=[x,y]"]`` → ``{"a": {"b": 1}, "c": ["x", "y"]}`` (values as YAML)."""
    result: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(item, "an override must look like key=value (e.g. lr=3e-4)")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw != "" else ""
        node = result
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return result


def merge(base: dict, update: dict) -> dict:
    """Recursive dict merge; ``update`` wins."""
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping (local path or fsspec URL)."""
    import fsspec

    with fsspec.open(str(path), "r") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ConfigError("<root>", "the YAML file must hold a mapping", str(path))
    return data


def load_config(
    cls: type[C],
    path: str | Path | None = None,
    overrides: typing.Iterable[str] = (),
    **values: Any,
) -> C:
    """YAML file (optional) ← keyword values ← ``key=value`` overrides, validated into ``cls``."""
    data = load_yaml(path) if path else {}
    data = merge(data, {k: v for k, v in values.items() if v is not None})
    data = merge(data, parse_overrides(overrides))
    return from_dict(cls, data, source=str(path) if path else None)


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def save_config(cfg: Any, url: str) -> None:
    """Write the config as YAML to ``url`` atomically (saved beside every run)."""
    from ial.storage import atomic_write

    with atomic_write(url, "w") as f:
        f.write(dump_yaml(cfg))
