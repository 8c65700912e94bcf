"""scrm inbox status | drain | failed | retry"""

from __future__ import annotations

import json

import click
from flask.cli import AppGroup

from app.services import services
from app.store import inbox as inbox_store
from workers.queues import enqueue_event
from workers.sweeper import sweep

inbox = AppGroup("inbox", help="The inbox of stored callbacks.")


@inbox.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print counts by status as JSON.")
def status(as_json: bool) -> None:
    """Counts of stored events by status."""
    with services().sessions() as session:
        counts = inbox_store.status_counts(session)
        rows, deliveries = inbox_store.delivery_totals(session)
    if as_json:
        click.echo(json.dumps(counts))
        return
    for name, count in counts.items():
        click.echo(f"{name:>10}  {count}")
    click.echo(
        f"{'stored':>10}  {rows}  (from {deliveries} deliveries; {deliveries - rows} duplicates collapsed)"
    )


@inbox.command("drain")
def drain() -> None:
    """Enqueue every stored event that has no live job (after a Redis outage, for instance)."""
    result = sweep(services(), force=True)
    click.echo(f"inbox drain: {result}")


@inbox.command("failed")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON lines.")
@click.option("--limit", default=100, show_default=True, help="At most this many.")
def failed(as_json: bool, limit: int) -> None:
    """Events whose retries are used up, with their last error."""
    with services().sessions() as session:
        rows = inbox_store.failed_events(session, limit)
    if not rows:
        if not as_json:
            click.echo("no failed events")
        return
    for row in rows:
        if as_json:
            click.echo(
                json.dumps(
                    {
                        "id": row.id,
                        "event_type": row.event_type,
                        "attempts": row.attempts,
                        "received_at": row.received_at.isoformat(),
                        "last_error": row.last_error,
                    },
                    ensure_ascii=False,
                )
            )
        else:
            error = (row.last_error or "").splitlines()[0][:120] if row.last_error else ""
            click.echo(f"{row.id:>8}  {row.event_type:<48} attempts={row.attempts}  {error}")


@inbox.command("retry")
@click.argument("ids", nargs=-1, type=int)
def retry(ids: tuple[int, ...]) -> None:
    """Run failed events again (all of them, or the given ids) with a fresh retry budget."""
    svc = services()
    with svc.sessions.begin() as session:
        reopened = inbox_store.reopen_failed(session, svc.clock.now(), list(ids) or None)
    for inbox_id, generation in reopened:
        enqueue_event(svc.redis, svc.settings, inbox_id, generation)
    click.echo(f"re-enqueued {len(reopened)} failed event(s)")
    missing = sorted(set(ids) - {inbox_id for inbox_id, _ in reopened})
    if missing:
        click.echo(f"not failed (left alone): {', '.join(map(str, missing))}", err=True)
