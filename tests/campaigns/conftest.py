from __future__ import annotations

from typing import Any

import pytest

SH01_TOKEN = "sh01-dealer-token"
HZ01_TOKEN = "hz01-dealer-token"


@pytest.fixture()
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    return {**app_config, "DEALER_API_TOKENS": f"SH01={SH01_TOKEN}, hz01={HZ01_TOKEN}"}
