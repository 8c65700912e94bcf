"""scrm campaign create FILE.yaml [--dry-run] [--draft] [--dealer CODE] · status ID [--watch
[--interval S]] · cancel ID · run ID · poll ID"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click
import yaml
from flask.cli import AppGroup
from pydantic import ValidationError

from app.campaigns import progress, results, states, store, submit
from app.campaigns.model import CampaignSpec, spec_errors
from app.services import services
from app.store.campaign_models import Campaign

campaign = AppGroup("campaign", help="Tagged mass sends (群发): campaigns, their audience and state.")


def _echo_audience(figures: dict[str, Any]) -> None:
    click.echo(f"audience: {figures.get('total', 0)} customer(s)")
    if figures.get("by_dealer"):
        click.echo("  per dealer:")
        for code, n in sorted(figures["by_dealer"].items()):
            click.echo(f"    {code:<12} {n:>7}")
    if figures.get("by_advisor"):
        click.echo("  per advisor:")
        for userid, n in sorted(figures["by_advisor"].items()):
            click.echo(f"    {userid:<24} {n:>7}")


FIGURES = ("queued", "submitted", "sent", "not_sent", "not_friend", "over_limit", "failed", "cancelled")


def _line(bucket: dict[str, Any]) -> str:
    return " · ".join(f"{name} {bucket.get(name, 0)}" for name in FIGURES if bucket.get(name))


def _echo_progress(figures: dict[str, Any] | None) -> None:
    if figures is None:
        return
    click.echo(f"progress: {figures['targeted']} targeted — {_line(figures) or 'nothing yet'}")
    for title, key in (("per dealer", "by_dealer"), ("per advisor", "by_advisor")):
        click.echo(f"  {title}:")
        for name, bucket in sorted(figures[key].items()):
            click.echo(f"    {name:<24} {bucket['targeted']:>7}  {_line(bucket)}")
    tasks = ", ".join(f"{n} {state}" for state, n in sorted(figures["tasks"].items()))
    click.echo(f"  tasks: {tasks}; reminders sent: {figures['reminders']}")


@campaign.command("create")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--dry-run", is_flag=True, help="Only count the audience per dealer and advisor; store nothing."
)
@click.option("--draft", is_flag=True, help="Store it as a draft (not sent until scheduled).")
@click.option("--dealer", "dealer", metavar="CODE", help="Create it as that dealer (its scope rules apply).")
def create(file: Path, dry_run: bool, draft: bool, dealer: str | None) -> None:
    """Create a campaign from a YAML FILE (see app/campaigns/examples/rav4-test-drive.yaml)."""
    try:
        body = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise click.ClickException(f"{file.name} is not valid YAML: {exc}") from None
    if not isinstance(body, dict):
        raise click.ClickException(f"{file.name} must hold one campaign (a mapping)")
    try:
        spec = CampaignSpec.model_validate(body)
    except ValidationError as exc:
        for message in spec_errors(exc):
            click.echo(message, err=True)
        raise click.ClickException(f"{file.name} is not a valid campaign; nothing was created") from None
    svc = services()
    actor_dealer = dealer.strip().upper() if dealer else None
    now = svc.clock.now()
    with svc.sessions() as session:
        try:
            made = store.plan(
                session, spec, actor_dealer=actor_dealer, now=now, band_floors=svc.settings.intent_bands
            )
        except (store.ScopeError, store.SpecError) as exc:
            raise click.ClickException(str(exc)) from None
        scope = made.scope_dealer or "whole brand"
        if dry_run:
            click.echo(
                f"dry run, nothing stored — {spec.name!r}, scope {scope}, send at {made.send_at.isoformat()}"
            )
            _echo_audience(made.counts.to_json())
            return
        row = store.create(session, made, actor_dealer=actor_dealer, now=now, draft=draft)
        session.commit()
        click.echo(
            f"campaign {row.id} {row.name!r} {row.state}, scope {scope}, send at {row.send_at.isoformat()}"
        )
        _echo_audience(made.counts.to_json())


@campaign.command("status")
@click.argument("campaign_id", type=int)
@click.option("--watch", is_flag=True, help="Redraw the progress until the campaign is done or cancelled.")
@click.option(
    "--interval", type=click.FloatRange(min=0.1), default=2.0, show_default=True, metavar="S",
    help="Seconds between refreshes (--watch).",
)  # fmt: skip
def status(campaign_id: int, watch: bool, interval: float) -> None:
    """A campaign's state, schedule, audience per dealer and advisor, and history; --watch: a
    progress bar and the per-dealer table, redrawn until it is done or cancelled (Ctrl-C stops
    watching; without a terminal, one line per refresh)."""
    if watch:
        _watch(campaign_id, interval)
        return
    data, figures = _read(campaign_id)
    click.echo(f"campaign {data['id']} {data['name']!r}: {data['state']}")
    scope = data["scope"]["dealer"] or "whole brand"
    click.echo(f"scope {scope}, by {data['created_by']}, send at {data['send_at']}")
    click.echo(f"filter: {data['filter']}")
    _echo_audience(data["audience"])
    _echo_progress(figures)
    click.echo("history:")
    for item in data["history"]:
        reason = f" ({item['reason']})" if item["reason"] else ""
        click.echo(f"  {item['at']}  {item['from'] or '-'} → {item['to']}  by {item['by']}{reason}")


def _read(campaign_id: int) -> tuple[dict[str, Any], dict[str, Any] | None]:
    with services().sessions() as session:
        row = session.get(Campaign, campaign_id)
        if row is None:
            raise click.ClickException(f"no campaign {campaign_id}")
        return store.to_json(session, row), progress.figures(session, campaign_id)


# -- status --watch -------------------------------------------------------------------------------

FINAL = (states.DONE, states.CANCELLED)
BAR_WIDTH = 40
RESULTS = (("sent", "sent"), ("not_sent", "not sent"), ("not_friend", "not a friend"),
           ("over_limit", "over limit"), ("failed", "failed"), ("cancelled", "cancelled"))  # fmt: skip
_sleep = time.sleep  # tests replace it to move the campaign on between refreshes


def progress_bar(figures: dict[str, Any] | None, width: int = BAR_WIDTH) -> str:
    """``[#####====.....]  12/40 settled`` — ``#`` customers with a result (sent, not sent, not a
    friend, over limit, failed, cancelled), ``=`` handed to WeCom and waiting for the advisor,
    ``.`` not handed over yet."""
    if not figures or not figures["targeted"]:
        return "[" + "." * width + "]  nothing targeted yet"
    targeted = figures["targeted"]
    settled = sum(figures.get(key, 0) for key, _ in RESULTS)
    waiting = figures.get("submitted", 0)
    done_cells = round(width * settled / targeted)
    wait_cells = min(width - done_cells, round(width * (settled + waiting) / targeted) - done_cells)
    bar = "#" * done_cells + "=" * wait_cells + "." * (width - done_cells - wait_cells)
    return f"[{bar}] {settled}/{targeted} settled ({100 * settled // targeted}%)"


def progress_line(figures: dict[str, Any] | None) -> str:
    """targeted → submitted → each outcome, one line."""
    if not figures:
        return "not submitted yet"
    handed = figures["targeted"] - figures.get("queued", 0)
    outcomes = " · ".join(f"{label} {figures.get(key, 0)}" for key, label in RESULTS)
    return (
        f"{figures['targeted']} targeted → {handed} submitted ({figures.get('submitted', 0)} awaiting "
        f"the advisor) → {outcomes}; reminders {figures.get('reminders', 0)}"
    )


def dealer_table(figures: dict[str, Any] | None) -> list[str]:
    if not figures:
        return []
    columns = ("targeted", "queued", "submitted", *(key for key, _ in RESULTS))
    lines = ["  dealer      " + "".join(f"{c:>11}" for c in columns)]
    for code, bucket in sorted(figures["by_dealer"].items()):
        lines.append(f"  {code:<12}" + "".join(f"{bucket.get(c, 0):>11}" for c in columns))
    return lines


def _frame(data: dict[str, Any], figures: dict[str, Any] | None) -> list[str]:
    head = f"campaign {data['id']} {data['name']!r}: {data['state']}"
    return [head, progress_bar(figures), progress_line(figures), *dealer_table(figures)]


def _watch(campaign_id: int, interval: float) -> None:
    tty = sys.stdout.isatty()  # CliRunner and pipes: no terminal
    drawn = 0
    try:
        while True:
            data, figures = _read(campaign_id)
            if tty:
                if drawn:
                    click.echo(f"\x1b[{drawn}F\x1b[J", nl=False)  # back to the frame's top, clear below
                frame = _frame(data, figures)
                click.echo("\n".join(frame))
                drawn = len(frame)
            else:
                click.echo(f"{data['state']:<10} {progress_bar(figures)}  {progress_line(figures)}")
            if data["state"] in FINAL:
                break
            _sleep(interval)
    except KeyboardInterrupt:
        click.echo(f"\nstopped watching campaign {campaign_id} (it goes on)")
        return
    if not tty:
        click.echo("\n".join(dealer_table(figures)))
    click.echo(f"campaign {campaign_id} {data['state']}")


@campaign.command("cancel")
@click.argument("campaign_id", type=int)
@click.option("--reason", default=None, help="Kept in the history.")
def cancel(campaign_id: int, reason: str | None) -> None:
    """Cancel a campaign; once submitted, its advisors' open tasks are cancelled in WeCom too."""
    try:
        report = results.cancel(services(), campaign_id, actor="cli", reason=reason)
    except states.StateConflict as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"campaign {campaign_id} cancelled" + (f"; {report}" if report.checked else ""))


@campaign.command("run")
@click.argument("campaign_id", type=int)
def run(campaign_id: int) -> None:
    """Submit a scheduled campaign now, in this process (its send_at is not waited for)."""
    svc = services()
    try:
        outcomes = submit.run(svc, campaign_id, actor="cli")
    except LookupError as exc:
        raise click.ClickException(str(exc)) from None
    done = ", ".join(f"{n} {what}" for what, n in sorted(outcomes.items())) or "nothing to submit"
    click.echo(f"campaign {campaign_id}: {done}")
    with svc.sessions() as session:
        _echo_progress(progress.figures(session, campaign_id))


@campaign.command("poll")
@click.argument("campaign_id", type=int)
def poll(campaign_id: int) -> None:
    """Fetch results now, remind advisors who have not confirmed, close the campaign when done."""
    svc = services()
    click.echo(f"campaign {campaign_id}: {results.poll(svc, campaign_id, actor='cli')}")
    with svc.sessions() as session:
        _echo_progress(progress.figures(session, campaign_id))
