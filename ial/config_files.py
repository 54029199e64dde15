"""Reading config files: YAML and JSON mappings, and where a config's relative path points.

``ial.config`` builds typed configs from them; every problem is a ``ConfigError`` naming the file
(and the line of a YAML syntax error).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from ial.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def resolve_path(path: str) -> str:
    """A config path as given if it exists (or is a URL), else relative to the repository."""
    if "://" in path or Path(path).exists():
        return path
    candidate = REPO / path
    return str(candidate) if candidate.exists() else path


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping (local path or fsspec URL); a missing, unreadable or invalid file is a
    ``ConfigError`` naming the file (and the line of a syntax error)."""
    import fsspec

    try:
        with fsspec.open(str(path), "r", encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise ConfigError("<file>", "not found", str(path)) from None
    except IsADirectoryError:
        raise ConfigError("<file>", "is a directory, not a YAML file", str(path)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError("<file>", f"not a UTF-8 text file ({exc.reason} at byte "
                                    f"{exc.start})", str(path)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError("<file>", f"not valid YAML: {where}{problem}", str(path)) from None
    if not isinstance(data, dict):
        raise ConfigError("<file>", "the YAML file must hold a mapping", str(path))
    return data


def read_json_config(path: str, field: str) -> dict:
    """The mapping in JSON file ``path`` (``resolve_path``); errors name config ``field``."""
    import json

    try:
        with open(resolve_path(path)) as f:
            data = json.load(f)
    except (FileNotFoundError, IsADirectoryError):
        raise ConfigError(field, f"JSON config not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(field, f"{path}: invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(field, f"{path}: the JSON file must hold a mapping")
    return data
