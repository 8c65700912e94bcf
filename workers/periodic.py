"""Periodic work shared by all workers: each worker's maintenance step offers to run it, and a
Redis lock (SET NX EX) lets one worker a period do it. A worker that dies mid-sweep only delays
the next one by what is left of the period."""

from __future__ import annotations

from app.services import Services


def claim_period(svc: Services, lock_key: str, period_seconds: int) -> bool:
    """True for the first caller in each ``period_seconds`` (at least 1 s), False for the rest.
    The lock lives a second less than the period, so a worker ticking every period is not
    turned away by its own previous lock."""
    return bool(svc.redis.set(lock_key, "1", nx=True, ex=max(1, period_seconds - 1)))
