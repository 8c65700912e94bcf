"""Jobs on the corp tag library (RQ calls them by dotted path, e.g. ``workers.tag_jobs.sync_corp_tags``)."""

from __future__ import annotations

from app.intake import tagging
from app.services import services
from workers.appcontext import app_context


def sync_corp_tags() -> dict[str, int]:
    """Copy WeCom's whole tag library into corp_tags. Idempotent; returns the counts."""
    with app_context():
        return tagging.sync_corp_tags(services()).to_json()
