"""scrm sop validate [PATH ...] [--no-db] · scrm sop load [PATH ...] · scrm sop schema [--readme FILE] ·
scrm sop stats [--json] · scrm sop enroll CARD EXTERNAL_USERID · scrm sop run-due"""

from __future__ import annotations

import json
import os
from pathlib import Path

import click
from flask.cli import AppGroup, ScriptInfo
from pydantic import ValidationError

from app.config import Settings
from app.services import services
from app.sop import schedule
from app.sop import stats as sop_stats
from app.sop.card import schema_text, with_schema
from app.sop.enrollment import try_enroll
from app.sop.loader import Library, read_cards
from app.sop.versions import load_cards, store_library

DEFAULT_PATH = Path("sop_cards")

sop = AppGroup(
    "sop",
    help="SOP cards (sop_cards/*.yaml): validate, load, schema; enrollments: stats, enroll, run-due.",
)

_paths = click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))


def _hours_from_environment() -> Library:
    """Working and quiet hours without building the app (for --no-db)."""
    keys = ("SOP_WORKING_HOURS", "SOP_QUIET_HOURS")
    try:
        settings = Settings(**{key: os.environ[key] for key in keys if os.environ.get(key)})
        working, quiet = settings.sop_working_hours, settings.sop_quiet_hours
        schedule.check_hours(working, quiet)
    except (ValidationError, ValueError) as exc:
        raise click.ClickException(f"SOP_WORKING_HOURS / SOP_QUIET_HOURS: {exc}") from None
    return Library(working_hours=working, quiet_hours=quiet)


def _library_from_store() -> Library:
    app = click.get_current_context().ensure_object(ScriptInfo).load_app()
    with app.app_context():
        try:
            library = store_library(services())
        except Exception as exc:  # the database is not there or not migrated
            raise click.ClickException(
                f"cannot read the corp tag library from the database ({type(exc).__name__}: {exc}); "
                "run with --no-db to check the files alone"
            ) from None
    if not library.tags:
        click.echo(
            "note: the corp tag library is empty (run `scrm tags sync`): tags are checked for syntax only"
        )
    return library


@sop.command("validate", with_appcontext=False)
@_paths
@click.option(
    "--no-db",
    is_flag=True,
    help="Check the files alone: skip the corp tag library and roster checks (no database needed).",
)
def validate(paths: tuple[Path, ...], no_db: bool) -> None:
    """Check card files (default: the sop_cards folder) and print every problem as FILE:LINE: MESSAGE.

    Tags, dealers, regions and models are checked against the store's corp tag library and roster
    when they are not empty. Exit code 1 when any file has a problem."""
    library = _hours_from_environment() if no_db else _library_from_store()
    files = read_cards(paths or (DEFAULT_PATH,), library)
    problems = [problem for card_file in files for problem in card_file.problems]
    for problem in problems:
        click.echo(str(problem))
    bad = sum(1 for card_file in files if card_file.problems)
    summary = f"{len(files)} card file(s): {len(files) - bad} valid"
    if bad:
        summary += f", {bad} with problems ({len(problems)} in all)"
    click.echo(summary)
    if problems:
        raise SystemExit(1)


@sop.command("load")
@_paths
def load(paths: tuple[Path, ...]) -> None:
    """Validate every card file (default: the sop_cards folder), then store each valid card as a new
    version when its content changed. Files with problems are reported and skipped (the card's
    current version stays); exit code 1 when any file was rejected."""
    report = load_cards(services(), paths or (DEFAULT_PATH,))
    for problem in report.problems:
        click.echo(str(problem))
    for outcome in report.outcomes:
        click.echo(str(outcome))
    click.echo(str(report))
    if not report.ok:
        raise SystemExit(1)


@sop.command("schema", with_appcontext=False)
@click.option(
    "--readme",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Rewrite the schema block of this Markdown file (between its marker comments) instead of printing.",
)
def schema(readme: Path | None) -> None:
    """Print the JSON Schema of a card file (generated from the card model)."""
    if readme is None:
        click.echo(schema_text(), nl=False)
        return
    try:
        readme.write_text(with_schema(readme.read_text(encoding="utf-8")), encoding="utf-8")
    except ValueError as exc:
        raise click.ClickException(f"{readme}: {exc}") from None
    click.echo(f"schema written into {readme}")


@sop.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (what GET /api/sop/stats answers).")
@click.option("--card", "card_id", help="Only this card.")
def stats_command(as_json: bool, card_id: str | None) -> None:
    """Per card and step: enrolled, active, completed, exited; waiting, due, reminded, skipped,
    replies sent, links opened, answers given, stage reached, dropped."""
    svc = services()
    with svc.sessions() as session:
        data = sop_stats.card_stats(session, svc.clock.now(), card_id)
    if as_json:
        click.echo(json.dumps(data, ensure_ascii=False, indent=2))
    else:
        click.echo(sop_stats.format_table(data))


@sop.command("enroll")
@click.argument("card_id")
@click.argument("external_userid")
@click.option("--advisor", help="The advisor (default: the customer's most recent active advisor).")
def enroll_command(card_id: str, external_userid: str, advisor: str | None) -> None:
    """Enroll a customer in a card by hand (trigger `manual`; the card's audience still applies).
    A customer is enrolled in a card once: exit code 1 when it did not happen."""
    svc = services()
    outcome = try_enroll(svc, card_id, external_userid, "manual", svc.clock.now(), advisor_userid=advisor)
    click.echo(str(outcome))
    if outcome.status != "enrolled":
        raise SystemExit(1)


@sop.command("run-due")
@click.option(
    "--limit", type=click.IntRange(1), help="At most this many due steps (default SOP_SWEEP_BATCH)."
)
@click.option(
    "--enqueue", is_flag=True, help="Enqueue the due steps for workers instead of running them here."
)
def run_due_command(limit: int | None, enqueue: bool) -> None:
    """One SOP sweep now: read new interactions (enroll, exit), scan for no_reply customers, then
    run the due steps here (reminders, actions) or, with --enqueue, queue them for workers."""
    from workers.sop_jobs import sweep

    report = sweep(services(), run_here=not enqueue, limit=limit)
    click.echo(str(report))
    if report.ran is not None:
        for error in report.ran.errors:
            click.echo(f"failed: {error}", err=True)
        if report.ran.failed:
            raise SystemExit(1)
