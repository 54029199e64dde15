"""Typed dataclass configs: load from YAML, override from the command line, validate, save.

Every stage has one config dataclass (``IngestConfig``, ``FeaturizeConfig``, ``ModelConfig``,
``TrainConfig``, ``EvalConfig``), defined next to the code it configures. This module is the one
machinery they all share:

- ``from_dict(Cls, mapping)`` builds a config, checking each value against the field's type
  annotation; an error names the field path (``train.optimizer.lr``) and the source file.
- ``load_config(Cls, yaml_path, overrides, **values)`` layers a YAML file (a relative path not
  found from the working directory is read from the source tree, ``resolve_path``, as the paths
  inside config files are), keyword values (the command's options) and ``key.sub=value``
  overrides (values parsed as YAML scalars: ``lr=3e-4``, ``splits=[train,val]``), each on top
  of the one before, nested mappings merged.
  A field declared with ``sub_config(Cls, default_path)`` (a train run's ``model``/``method``)
  holds a path to its own YAML or the mapping itself: a path is read where it is given, so
  ``--set method.lambda_ind=0`` applies on top of the method file the config names. A field
  declared with ``json_config(default_path)`` (``deepspeed``) does the same for a JSON file.
- Errors name where the offending value came from: the YAML file, ``--set key=value`` or an
  option (``--root``); every ``ConfigError`` is a ``UserError`` (one ``Error: ...`` line).
- ``to_dict(cfg)`` / ``save_config(cfg, url)`` write it back (atomically) beside a run.
- A config class may define ``validate(self)`` and raise ``ConfigError(field, message)``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Callable, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from ial.config_files import REPO, load_yaml, read_json_config, resolve_path
from ial.errors import ConfigError

C = TypeVar("C")
SUB_CONFIG = "sub_config"  # dataclass field metadata key: the config class of a sub-config field
JSON_FILE = "json_file"    # dataclass field metadata key: a field naming a JSON file (DeepSpeed's)


def sub_config(cls: type, default: str) -> Any:
    """A dataclass field holding a config of class ``cls``: a path to its YAML (``default``) or
    the mapping of its fields; after loading it is a ``cls`` instance."""
    return dataclasses.field(default=default, metadata={SUB_CONFIG: cls})


def json_config(default: str) -> Any:
    """A field naming a JSON file (``default``) or holding its mapping. A nested override
    (``--set deepspeed.optimizer.params.lr=3e-4``) applies on top of the file it names: it
    becomes the file's mapping with that value replaced, and names only keys the file has."""
    return dataclasses.field(default=default, metadata={JSON_FILE: True})


def _json_override(data: dict, update: dict, path: str, what: str, label: Callable) -> dict:
    """``update`` over JSON mapping ``data`` (``what``: where it came from): only keys ``data``
    has; a scalar takes the type of the one it replaces ("3e-4" a float where one was)."""
    out = dict(data)
    for key, value in update.items():
        where, old = f"{path}.{key}", out.get(key)
        if key not in out:
            raise ConfigError(where, f"not in {what} (it has: {', '.join(out)})",
                              label(where, value))
        if isinstance(value, dict) and isinstance(old, dict):
            out[key] = _json_override(old, value, where, what, label)
            continue
        if isinstance(old, dict):
            raise ConfigError(where, f"is a mapping in {what}: set one of its keys "
                                     f"({', '.join(old)})", label(where, value))
        try:
            out[key] = (_coerce(value, type(old), where)
                        if isinstance(old, (bool, int, float, str)) else value)
        except ConfigError as exc:
            raise ConfigError(where, exc.message, label(where, value)) from None
    return out


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
        sub = fields[name].metadata.get(SUB_CONFIG)
        kwargs[name] = (read_sub_config(sub, value, path) if sub
                        else _coerce(value, hints[name], path))
    for name, f in fields.items():  # a sub-config left at its default path is read too
        sub = f.metadata.get(SUB_CONFIG)
        if sub and name not in kwargs and isinstance(f.default, str):
            kwargs[name] = read_sub_config(sub, f.default, f"{prefix}.{name}" if prefix else name)
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
                raise ConfigError(f"{prefix}.{exc.field}", exc.message, exc.source) from None
            raise
    return cfg


def read_sub_config(cls: type, value: Any, path: str) -> Any:
    """A sub-config field's value → a ``cls`` instance (a path is read, a mapping validated)."""
    if isinstance(value, cls):
        return value
    if isinstance(value, str):
        try:
            return from_dict(cls, load_yaml(resolve_path(value)), source=value)
        except ConfigError as exc:
            raise ConfigError(f"{path}.{exc.field}" if exc.field != "<file>" else path,
                              exc.message, exc.source) from None
    if isinstance(value, dict):
        return _from_dict(cls, value, path)
    raise ConfigError(path, f"expected a path to a {cls.__name__} YAML or a mapping of its "
                            f"fields, got {value!r}")


def from_dict(cls: type[C], data: dict | None, source: str | None = None) -> C:
    """Build config ``cls`` from a plain mapping, validating every field."""
    try:
        return _from_dict(cls, dict(data or {}), "")
    except ConfigError as exc:
        if source and not exc.source:
            raise ConfigError(exc.field, exc.message, source) from None
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
        if not key.strip() or any(not part for part in key.strip().split(".")):
            raise ConfigError(key, "an override's key must be a dotted field name "
                              "(e.g. method.lambda_ind)", f"from --set {item}")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or "not valid YAML"
            raise ConfigError(key.strip(), f"the value {raw!r} is not valid YAML ({problem}; "
                              "quote it to pass a string)", f"from --set {item}") from None
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


class _Layers:
    """Config data built from layers (file, values, overrides), remembering where each leaf
    value came from (``source_of``)."""

    def __init__(self, cls: type):
        self.cls = cls
        self.data: dict = {}
        self.sources: dict[str, str] = {}

    def add(self, layer: dict, label: Callable[[str, Any], str], override: bool = False) -> None:
        """Merge ``layer`` on top; ``override``: a ``--set`` layer, whose mapping for a JSON-file
        field applies on top of that file (in a config file, a mapping is the whole JSON)."""
        self._merge(self.data, layer, "", self.cls, label, override)

    def _merge(self, node: dict, layer: dict, prefix: str, cls: type | None,
               label: Callable[[str, Any], str], override: bool = False) -> None:
        fields = {f.name: f for f in dataclasses.fields(cls)} if cls and dataclasses.is_dataclass(
            cls) else {}
        for key, value in layer.items():
            path = f"{prefix}{key}"
            f = fields.get(key)
            sub = f.metadata.get(SUB_CONFIG) if f else None
            nested = None
            if f is not None:
                hint = get_type_hints(cls).get(key)
                nested = sub or (hint if dataclasses.is_dataclass(hint) else None)
            json_file = f is not None and f.metadata.get(JSON_FILE)
            if override and json_file and isinstance(value, dict):
                base = node.get(key, f.default)
                what = base if isinstance(base, str) else "the mapping given before"
                try:
                    data = read_json_config(base, path) if isinstance(base, str) else base
                except ConfigError as exc:
                    raise ConfigError(exc.field, exc.message,
                                      self.sources.get(path, "the default value")) from None
                node[key] = _json_override(data, value, path, what, label)
                self.sources.setdefault(path, f"in {what}")
                continue
            if sub and isinstance(value, str):  # a path: its file replaces what was there
                self._forget(path)
                self.sources[path] = label(path, value)
                file_data = load_yaml(resolve_path(value))
                node[key] = {}
                self._merge(node[key], file_data, path + ".", sub, lambda p, v, s=value: f"in {s}")
            elif isinstance(value, dict) and (nested or isinstance(node.get(key), dict)):
                if sub and not isinstance(node.get(key), dict):  # on top of the default file
                    default = f.default if isinstance(f.default, str) else None
                    node[key] = {}
                    if default:
                        self._merge(node[key], load_yaml(resolve_path(default)), path + ".",
                                    sub, lambda p, v, s=default: f"in {s} (the default)")
                elif not isinstance(node.get(key), dict):
                    node[key] = {}
                self._merge(node[key], value, path + ".", nested, label, override)
            else:
                self._forget(path)
                node[key] = value
                self.sources[path] = label(path, value)

    def _forget(self, path: str) -> None:
        for k in [k for k in self.sources if k == path or k.startswith(path + ".")]:
            del self.sources[k]

    def source_of(self, field: str) -> str | None:
        """Where the value of ``field`` (dotted, maybe with ``[i]``) came from, if known."""
        path = field.split("[", 1)[0]
        while path:
            if path in self.sources:
                return self.sources[path]
            path = path.rpartition(".")[0]
        return None


def load_config(
    cls: type[C],
    path: str | Path | None = None,
    overrides: typing.Iterable[str] = (),
    *,
    labels: dict[str, str] | None = None,
    **values: Any,
) -> C:
    """YAML file (optional; ``resolve_path``) ← keyword values ← ``key=value`` overrides,
    validated into ``cls``.

    Each layer applies on top of the one before (nested mappings merged). ``labels`` say where a
    keyword value came from (``{"root": "--root"}``); a ``ConfigError`` names the source of the
    offending value: the file, ``--set key=value``, or the label.
    """
    overrides = list(overrides)
    layers = _Layers(cls)
    if path:
        path = resolve_path(str(path))
        layers.add(load_yaml(path), lambda p, v: f"in {path}")
    given = {k: v for k, v in values.items() if v is not None}
    if given:
        names = labels or {}
        layers.add(given, lambda p, v: f"from {names.get(p.split('.')[0], p.split('.')[0])}")
    for item in overrides:  # one layer each, in order: "method=x.yaml" then "method.lr=1" works
        layers.add(parse_overrides([item]), lambda p, v, item=item: f"from --set {item}", True)
    try:
        return from_dict(cls, layers.data)
    except ConfigError as exc:
        source = exc.source or layers.source_of(exc.field) or (
            f"in {path}" if path else "the default value")
        raise ConfigError(exc.field, exc.message, source) from None


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def save_config(cfg: Any, url: str) -> None:
    """Write the config as YAML to ``url`` atomically (saved beside every run)."""
    from ial.storage import atomic_write

    with atomic_write(url, "w") as f:
        f.write(dump_yaml(cfg))
