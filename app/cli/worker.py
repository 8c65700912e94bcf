"""scrm worker [--burst]"""

from __future__ import annotations

import click
from flask.cli import with_appcontext

from app.services import services
from workers.queues import WORKER_QUEUES
from workers.worker import build_worker


@click.command("worker")
@click.option("--burst", is_flag=True, help="Work until the queues are empty, then exit.")
@click.option(
    "--queue",
    "queues",
    multiple=True,
    type=click.Choice(WORKER_QUEUES),
    help="Listen on these queues only (default: all, highest priority first).",
)
@click.option(
    "--scheduler/--no-scheduler",
    default=True,
    show_default=True,
    help="Run RQ's scheduler (delayed retries) in this worker.",
)
@with_appcontext
def worker(burst: bool, queues: tuple[str, ...], scheduler: bool) -> None:
    """Run an RQ worker on the SCRM queues, sweeping the inbox as part of its maintenance."""
    svc = services()
    rq_worker = build_worker(svc, queues or WORKER_QUEUES)
    rq_worker.work(burst=burst, with_scheduler=scheduler, logging_level=svc.settings.LOG_LEVEL)
