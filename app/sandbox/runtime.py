"""One sandbox instance: its state, callback deliverer and platform, as the Flask app holds them."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from app.clock import Clock, OffsetClock
from app.sandbox.config import SandboxConfig
from app.sandbox.delivery import Deliverer
from app.sandbox.platform import Platform
from app.sandbox.state import SandboxState

EXTENSION = "sandbox"


@dataclass
class Sandbox:
    state: SandboxState
    deliverer: Deliverer
    platform: Platform

    @classmethod
    def build(cls, config: SandboxConfig | None = None, clock: Clock | None = None) -> Sandbox:
        # A live sandbox defaults to real time that the control API can move forward.
        state = SandboxState(config or SandboxConfig(), clock or OffsetClock())
        deliverer = Deliverer(state)
        return cls(state, deliverer, Platform(state, deliverer))

    def close(self) -> None:
        self.deliverer.close()


def current_sandbox() -> Sandbox:
    return current_app.extensions[EXTENSION]
