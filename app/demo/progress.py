"""Progress as plain lines (CI logs have no terminal): one line each time deliveries or
processing pass another tenth of the scenario's events."""

from __future__ import annotations

from collections.abc import Callable


class Progress:
    def __init__(self, total: int, echo: Callable[[str], None]) -> None:
        self.total = max(total, 1)
        self.echo = echo
        self._shown = (-1, -1)

    def update(self, delivered: int, processed: int) -> None:
        tenths = (delivered * 10 // self.total, processed * 10 // self.total)
        if tenths != self._shown:
            self._shown = tenths
            self.echo(
                f"    delivered {self._percent(delivered):>4} ({delivered}/{self.total})"
                f"   processed {self._percent(processed):>4} ({processed}/{self.total})"
            )

    def _percent(self, count: int) -> str:
        return f"{count * 100 // self.total}%"
