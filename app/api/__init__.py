"""The HQ API (JSON, bearer-token auth). One module per resource."""

from flask import Blueprint, Response, jsonify
from werkzeug.exceptions import HTTPException

api = Blueprint("api", __name__, url_prefix="/api")


@api.errorhandler(HTTPException)
def _json_error(exc: HTTPException) -> tuple[Response, int]:
    """API clients get JSON errors, never an HTML page."""
    return jsonify(error=exc.name.lower().replace(" ", "_"), message=exc.description), exc.code or 500


from app.api import (  # noqa: E402,F401  (registers routes on the blueprint)
    campaigns,
    contact_way,
    customer_actions,
    interactions,
    leads,
    sop_stats,
)
