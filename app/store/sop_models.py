"""Models of SOP enrollment and scheduling (issue #4). Imported by app/store/models.py so they
are part of Base.metadata."""

from __future__ import annotations
