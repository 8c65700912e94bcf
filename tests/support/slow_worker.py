"""A real ``scrm worker --burst`` whose churn (del_follow_user) handler writes, then blocks before committing.
tests/workers/test_killed_worker.py kills it there with SIGKILL."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from workers import dispatch
from workers.handlers import contacts

MARKER = Path(os.environ["SLOW_HANDLER_MARKER"])


def _churn_then_hang(ctx) -> None:
    contacts.customer_deleted_advisor(ctx)
    ctx.flush()  # the interaction is written inside the open transaction, not committed
    MARKER.write_text(str(os.getpid()))
    time.sleep(120)


dispatch.register("change_external_contact:del_follow_user", _churn_then_hang)

if __name__ == "__main__":
    from app.cli import main

    sys.argv = ["scrm", "worker", "--burst", "--no-scheduler"]
    main()
