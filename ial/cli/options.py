"""Options shared by every subcommand (one definition, so they read the same everywhere)."""

from __future__ import annotations

from typing import Any, Callable

import click

from ial.config import ConfigError, load_config


def config_options(default_config: str | None = None) -> Callable:
    """Adds ``--config FILE`` and repeated ``--set key=value`` to a click command."""

    def decorator(fn: Callable) -> Callable:
        fn = click.option(
            "--set", "overrides", multiple=True, metavar="KEY=VALUE",
            help="Override a config field (dotted for nested fields), e.g. --set lr=3e-4. Repeatable.",
        )(fn)
        fn = click.option(
            "--config", "config_path", type=click.Path(dir_okay=False), default=default_config,
            show_default=True, help="YAML config file (fields of this stage's config dataclass).",
        )(fn)
        return fn

    return decorator


def root_option(fn: Callable) -> Callable:
    return click.option(
        "--root", default=None, metavar="URL",
        help="Storage root: a local directory or s3://bucket/prefix (default from config: ./data).",
    )(fn)


def build_config(cls: type, config_path: str | None, overrides: tuple[str, ...], **values: Any):
    """Load + validate a config; turn a ConfigError into a clean CLI error naming the field."""
    try:
        return load_config(cls, config_path, overrides, **values)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--config/--set") from None
    except FileNotFoundError as exc:
        raise click.BadParameter(f"config file not found: {exc.filename}", param_hint="--config") from None
