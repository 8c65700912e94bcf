"""scrm tags sync"""

from __future__ import annotations

import click
from flask.cli import AppGroup

from app.intake.tagging import sync_corp_tags
from app.services import services

tags = AppGroup("tags", help="The corp tag library (企业客户标签) copied from WeCom.")


@tags.command("sync")
def sync() -> None:
    """Copy WeCom's whole corp tag library into the store now (tags WeCom no longer has are
    flagged deleted)."""
    report = sync_corp_tags(services())
    click.echo(f"corp tags synced: {report}")
