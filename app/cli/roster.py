"""scrm roster import FILE [--dry-run] [--deactivate-missing]"""

from __future__ import annotations

from pathlib import Path

import click
from flask.cli import AppGroup

from app.intake.roster import import_roster
from app.services import services

roster = AppGroup("roster", help="The dealer and advisor roster that matching routes customers by.")


@roster.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Validate and show what would change; write nothing.")
@click.option(
    "--deactivate-missing",
    is_flag=True,
    help="Deactivate the advisors of the file's dealers that the file does not list.",
)
def import_(file: Path, dry_run: bool, deactivate_missing: bool) -> None:
    """Import dealers and advisors from a .yaml/.yml or .csv FILE (upserts by code and userid).

    The whole file is validated first; if any row is invalid every error is printed and nothing
    is written."""
    result = import_roster(services(), file, dry_run=dry_run, deactivate_missing=deactivate_missing)
    if result.errors:
        for message in result.errors:
            click.echo(message, err=True)
        raise click.ClickException(f"{len(result.errors)} error(s) in {file.name}; nothing was imported")
    prefix = "dry run, nothing written — would import" if dry_run else "imported"
    click.echo(f"{prefix} {file.name}: {result.summary}")
