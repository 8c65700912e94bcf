"""The ``scrm`` command (a Flask CLI group). Commands that need the app get it built from the
environment; ``sandbox`` and ``demo`` build their own."""

from __future__ import annotations

import click
from flask import Flask
from flask.cli import FlaskGroup

from app.config import ConfigError


def _create_app() -> Flask:
    from app import create_app

    try:
        return create_app()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


class ScrmGroup(FlaskGroup):
    def list_commands(self, ctx: click.Context) -> list[str]:
        # Flask's version builds the app just to list commands registered on it; ours are all
        # registered here, and --help must work before the environment is configured.
        return sorted(self.commands)


cli = ScrmGroup(
    name="scrm", create_app=_create_app, help="Dealer SCRM: WeCom callback server, workers, tools."
)


def _register() -> None:
    from app.cli import campaign, db, demo, inbox, leads, roster, sandbox, sop, tags, worker

    cli.add_command(db.db)
    cli.add_command(inbox.inbox)
    cli.add_command(worker.worker)
    cli.add_command(sandbox.sandbox)
    cli.add_command(demo.demo)
    cli.add_command(roster.roster)
    cli.add_command(tags.tags)
    cli.add_command(leads.leads)
    cli.add_command(sop.sop)
    cli.add_command(campaign.campaign)


_register()


def main() -> None:
    cli.main(prog_name="scrm")
