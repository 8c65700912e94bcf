"""WeCom API handlers; importing the modules registers their routes in ROUTES."""

from app.sandbox.handlers import contacts, jsapi, media, messages, msg_templates, oauth, tags
from app.sandbox.handlers.base import ROUTES, Call, Route

__all__ = [
    "ROUTES",
    "Call",
    "Route",
    "contacts",
    "jsapi",
    "media",
    "messages",
    "msg_templates",
    "oauth",
    "tags",
]
