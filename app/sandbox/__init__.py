"""The local WeCom sandbox: WeCom's server API with its rules (tokens, rate limits, welcome codes,
validation), the platform side that encrypts and POSTs callbacks, and a control API. See README.md."""

from app.sandbox.config import SandboxConfig
from app.sandbox.deliverylog import DeliveryReport
from app.sandbox.errors import ApiError, SandboxError
from app.sandbox.platform import Emission, Platform
from app.sandbox.runtime import Sandbox
from app.sandbox.server import SandboxServer, create_sandbox_app, run_sandbox
from app.sandbox.state import SandboxState

__all__ = [
    "ApiError",
    "DeliveryReport",
    "Emission",
    "Platform",
    "Sandbox",
    "SandboxConfig",
    "SandboxError",
    "SandboxServer",
    "SandboxState",
    "create_sandbox_app",
    "run_sandbox",
]
