"""Progress as plain lines (CI logs have no terminal): one line each time a stage's processing
passes another tenth of its events (a stage of fewer than 50 events shows its end only).

Counts are the run's totals (deliveries made, inbox rows finished); ``start`` is where they stood
when the stage began."""

from __future__ import annotations

from collections.abc import Callable

SMALL_STAGE = 50


class Progress:
    def __init__(self, total: int, echo: Callable[[str], None], start: tuple[int, int] = (0, 0)) -> None:
        self.total = max(total, 1)
        self.echo = echo
        self.start = start
        self.steps = 10 if total >= SMALL_STAGE else 1
        self._shown = 0

    def update(self, delivered: int, processed: int) -> None:
        delivered -= self.start[0]
        processed -= self.start[1]
        step = processed * self.steps // self.total
        if step > self._shown:
            self._shown = step
            self.echo(
                f"    delivered {self._percent(delivered):>4} ({delivered}/{self.total})"
                f"   processed {self._percent(processed):>4} ({processed}/{self.total})"
            )

    def _percent(self, count: int) -> str:
        return f"{count * 100 // self.total}%"
