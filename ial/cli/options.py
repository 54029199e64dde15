"""Options shared by every subcommand (one definition, so they read the same everywhere)."""

from __future__ import annotations

import functools
import logging
import sys
from typing import Any, Callable

import click

from ial.config import dump_yaml, load_config
from ial.errors import UserError


_PRINT_CONFIG = "ial.print_config"  # click context meta key set by --print-config
# What Ctrl-C prints: every stage keeps what it finished (clips, shards, scored batches, steps)
INTERRUPTED = "Interrupted: what was finished is kept; run the same command again to resume."


def _remember_print_config(ctx: click.Context, _param, value: bool) -> None:
    if value:
        ctx.meta[_PRINT_CONFIG] = True


def config_options(default_config: str | None = None, example: str = "seed=1") -> Callable:
    """Adds ``--config FILE``, repeated ``--set key=value`` and ``--print-config`` to a click
    command; ``example`` is a valid override for its config, shown in the help."""

    def decorator(fn: Callable) -> Callable:
        fn = click.option(
            "--print-config", is_flag=True, expose_value=False, callback=_remember_print_config,
            help="Print the config this command would run with (the --config file, then the "
                 "options, then every --set, nested configs resolved) as YAML, and exit.",
        )(fn)
        fn = click.option(
            "--set", "overrides", multiple=True, metavar="KEY=VALUE",
            help=f"Override a config field (dotted for nested fields), e.g. --set {example}. "
            "Repeatable.",
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


def build_config(cls: type, config_path: str | None, overrides: tuple[str, ...],
                 flags: dict[str, str] | None = None, shown: Callable | None = None,
                 **values: Any):
    """Load + validate a config (``--config`` file ← option values ← ``--set``). A bad value is a
    ``ConfigError`` naming the field and where it came from: the file, ``--set k=v`` or the
    option (``--<field-name>``, or the name ``flags`` gives it).

    Under ``--print-config`` it prints the config as YAML (``shown(cfg)`` when given: e.g. the
    ingest's copy without credentials, the one it saves) and exits 0 instead of returning."""
    names = {k: (flags or {}).get(k, "--" + k.replace("_", "-")) for k in values}
    cfg = load_config(cls, config_path, overrides, labels=names, **values)
    ctx = click.get_current_context(silent=True)
    if ctx is not None and ctx.meta.get(_PRINT_CONFIG):
        click.echo(dump_yaml(shown(cfg) if shown else cfg), nl=False)
        ctx.exit(0)
    return cfg


def user_errors(command: click.Command) -> click.Command:
    """``command`` with every ``UserError`` (bad config, file, bucket, video, ...) shown as one
    line ``Error: <message>`` and exit status 1 instead of a traceback; Ctrl-C as one line
    ``INTERRUPTED``, exit status 130 (128 + SIGINT, a shell's convention)."""
    callback = command.callback
    if callback is None or getattr(callback, "_user_errors", False):
        return command

    @functools.wraps(callback)
    def wrapped(*args, **kwargs):
        try:
            return callback(*args, **kwargs)
        except UserError as exc:
            _quiet_prefect_shutdown()
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:  # Ctrl-C (training stops itself first: a UserError above)
            _quiet_prefect_shutdown()
            click.echo(f"\n{INTERRUPTED}", err=True)
            sys.exit(130)

    wrapped._user_errors = True
    command.callback = wrapped
    return command


class _NoServerShutdownNote(logging.Filter):
    """Drops Prefect's "Stopping temporary server on ..." (INFO, logged at exit)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Stopping temporary server")


def _quiet_prefect_shutdown() -> None:
    """Keep the ``Error:`` line the last one: on a Prefect path the temporary API server stops
    at exit and says so, after that line. Only that note is dropped (a filter on the logger
    that says it, so a process that goes on, like a test's, logs as before otherwise)."""
    if "prefect" in sys.modules:
        logger = logging.getLogger("prefect")
        if not any(isinstance(f, _NoServerShutdownNote) for f in logger.filters):
            logger.addFilter(_NoServerShutdownNote())
