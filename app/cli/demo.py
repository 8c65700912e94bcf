"""scrm demo: the end-to-end demo on the embedded default (see app/demo/). It builds everything
itself, like ``scrm sandbox``; it never loads the app from the environment."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import click

_HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@click.command("demo")
@click.option("--customers", default=200, show_default=True, type=click.IntRange(1, 5000))
@click.option("--seed", default=88, show_default=True, type=int, help="Same seed, same scenario.")
@click.option(
    "--instance",
    "instance_path",
    default="instance/demo",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the demo's database, Redis and logs; wiped at start.",
)
@click.option("--keep", is_flag=True, help="Keep the instance folder afterwards (it is kept on failure).")
@click.option(
    "--port-base",
    default=None,
    type=click.IntRange(1024, 65534),
    help="Callback server on this port, sandbox on the next (default: free ports).",
)
@click.option(
    "--timeout",
    default=120.0,
    show_default=True,
    type=click.FloatRange(min=1),
    help="Give up after this many seconds.",
)
def demo(
    customers: int, seed: int, instance_path: Path, keep: bool, port_base: int | None, timeout: float
) -> None:
    """Play a dealer scenario end to end on this machine and check the results.

    Starts an embedded Redis, the local WeCom sandbox, gunicorn serving the callbacks and an RQ
    worker; imports the demo roster, posts leads, and has customers add advisors through store
    posters, advisors' cards and leads' links (welcomes, tags, hand-overs accepted or refused,
    churn alerts, some events delivered twice); then prints what each side counted and exits
    non-zero if any check fails (an event lost or stored twice, a welcome missed or sent twice,
    a hand-over unresolved, a lead not linked, the HQ feed incomplete …)."""
    from app.demo.feed import FeedError
    from app.demo.instance import InstanceFolderError
    from app.demo.run import DemoError, DemoOptions, run_demo
    from app.demo.runner import StartupError

    options = DemoOptions(customers, seed, instance_path, keep, port_base, timeout)
    try:
        with _interrupts_stop_cleanly():
            ok = run_demo(options, lambda line: click.echo(line))
    except KeyboardInterrupt:
        click.echo("interrupted: everything the demo started has been stopped", err=True)
        sys.exit(130)
    except (DemoError, StartupError, InstanceFolderError, FeedError) as exc:
        raise click.ClickException(str(exc)) from None
    if not ok:
        sys.exit(1)


@contextmanager
def _interrupts_stop_cleanly() -> Iterator[None]:
    """Ctrl-C, SIGTERM (CI cancelling the job) and SIGHUP all unwind the demo through its
    shutdown; further signals while it shuts down are ignored, so the shutdown is not cut short
    and no child process is orphaned."""
    interrupted = False

    def handler(signum: int, _frame: FrameType | None) -> None:
        nonlocal interrupted
        if interrupted:
            click.echo("still stopping the demo's processes …", err=True)
            return
        interrupted = True
        raise KeyboardInterrupt

    previous = {signum: signal.signal(signum, handler) for signum in _HANDLED}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
