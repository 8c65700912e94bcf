"""Jobs of the dynamic contact code: make an advisor's QR code for one state through WeCom."""

from __future__ import annotations

import logging

from app.intake import contact_ways
from app.services import services
from workers.appcontext import app_context

log = logging.getLogger(__name__)


def create_contact_way(advisor_userid: str, state: str) -> str:
    """Create (once) and store the contact way of ``advisor_userid`` for ``state``."""
    with app_context():
        way, made = contact_ways.create(services(), advisor_userid, state)
    log.info("contact way %s / %s: %s", advisor_userid, state, "created" if made else "already stored")
    return way.config_id
