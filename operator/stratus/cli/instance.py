"""`stratus instance postgresql|mariadb`: the instance manager a Database Pod runs
(see stratus.instance). Not for people: the operator writes its arguments."""

from __future__ import annotations

import sys

import click


def _options(f):
    f = click.option("--data", required=True, help="The data volume's mount path.")(f)
    f = click.option("--port", "port_", type=int, required=True, help="The engine's container port.")(f)
    f = click.option("--control-port", type=int, default=8000, show_default=True, help="The control server's port.")(f)
    f = click.option("--version", "version", required=True, help="The engine version.")(f)
    f = click.option("--set", "settings", multiple=True, help="An engine parameter, name=value (repeatable).")(f)
    f = click.option("--primary", default=None, help="host:port of the primary to clone and follow (a replica).")(f)
    return f


@click.group()
def instance() -> None:
    """Run one database instance: prepare its data, run and supervise the engine."""


def _run(module: str, data, port_, control_port, version, settings, primary) -> None:
    import importlib

    from ..instance.common import setup_logging

    setup_logging()
    parsed = dict(s.split("=", 1) for s in settings)
    mod = importlib.import_module(f"stratus.instance.{module}")
    sys.exit(mod.main(data, port_, control_port, version, parsed, primary))


@instance.command("postgresql")
@_options
def postgresql(**kw) -> None:
    """PostgreSQL: initdb, pg_basebackup or barman-cloud-restore, then postgres."""
    _run("postgresql", **kw)


@instance.command("mariadb")
@_options
def mariadb(**kw) -> None:
    """MariaDB: mariadb-install-db or a mariadb-backup restore, then mariadbd."""
    _run("mariadb", **kw)


COMMANDS = [instance]
