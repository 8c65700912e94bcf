"""Start-up configuration: production refuses to start without its secrets, naming them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app.config import REQUIRED_IN_PRODUCTION, SANDBOX_CREDENTIALS, ConfigError, load_settings

ROOT = Path(__file__).resolve().parents[1]
PRODUCTION = {key: SANDBOX_CREDENTIALS[key] for key in REQUIRED_IN_PRODUCTION}


@pytest.mark.parametrize("missing", REQUIRED_IN_PRODUCTION)
def test_production_names_the_missing_secret(missing: str) -> None:
    environ = {k: v for k, v in PRODUCTION.items() if k != missing}
    with pytest.raises(ConfigError, match=missing):
        load_settings(environ=environ)


def test_production_with_everything_set_starts() -> None:
    settings = load_settings(environ=PRODUCTION)
    assert settings.is_production and not settings.auto_migrate
    assert settings.WECOM_API_BASE == "https://qyapi.weixin.qq.com/cgi-bin/"


def test_demo_and_test_modes_use_the_sandbox_credentials() -> None:
    settings = load_settings(environ={"SCRM_MODE": "demo"})
    assert settings.WECOM_CORP_ID == SANDBOX_CREDENTIALS["WECOM_CORP_ID"]
    assert settings.auto_migrate
    assert settings.database_url.startswith("sqlite:///") and settings.database_url.endswith(
        "instance/scrm.db"
    )


def test_the_mapping_overrides_the_environment() -> None:
    settings = load_settings(
        {"WECOM_CORP_ID": "ww_from_mapping"}, environ={**PRODUCTION, "WECOM_CORP_ID": "ww_env"}
    )
    assert settings.WECOM_CORP_ID == "ww_from_mapping"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("WECOM_AES_KEY", "tooshort", "43-character"),
        ("WECOM_AES_KEY", "!" * 43, "43-character"),
        ("JOB_RETRY_INTERVALS", ",", "JOB_RETRY_INTERVALS"),
        # Each of these passed start-up, then every enqueue (RQ refuses a negative interval) or
        # every WeCom call (the rate limiter refuses a limit below 1) failed, or create_app
        # raised logging's bare "Unknown level".
        ("JOB_RETRY_INTERVALS", "10,x", "JOB_RETRY_INTERVALS"),
        ("JOB_RETRY_INTERVALS", "10,-5", "JOB_RETRY_INTERVALS"),
        ("WECOM_RATE_LIMITS", "externalcontact/get=0", "WECOM_RATE_LIMITS"),
        ("WECOM_RATE_LIMIT_PER_MINUTE", "0", "WECOM_RATE_LIMIT_PER_MINUTE"),
        ("LOG_LEVEL", "verbose", "LOG_LEVEL"),
        ("WECOM_RATE_LIMITS", "externalcontact/get=lots", "WECOM_RATE_LIMITS"),
        ("JOB_TIMEOUT", "soon", "JOB_TIMEOUT"),
        ("SCRM_MODE", "staging", "SCRM_MODE"),
    ],
)
def test_bad_values_stop_start_up_with_the_variable_named(key: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(environ={**PRODUCTION, key: value})


def test_per_api_rate_limits_are_parsed() -> None:
    settings = load_settings(
        environ={**PRODUCTION, "WECOM_RATE_LIMITS": "/externalcontact/get=600, message/send=30"}
    )
    assert settings.rate_limits == {"externalcontact/get": 600, "message/send": 30}


def test_the_cli_prints_the_missing_variable_and_exits_1(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "inbox", "status"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert "WECOM_CORP_ID is not set" in result.stderr
    assert "Traceback" not in result.stderr


def test_every_setting_has_a_row_in_the_readme_configuration_table() -> None:
    """Operators configure from the README's table: a key added to Settings without a row there
    (or a row left behind for a key that is gone) fails here."""
    import re

    from app.config import Settings

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| ((?:`[A-Z][A-Z0-9_]*`(?:, )?)+) \|", readme, re.MULTILINE)
    documented = {key for row in rows for key in re.findall(r"`([A-Z][A-Z0-9_]*)`", row)}
    assert sorted(set(Settings.model_fields) - documented) == []
    assert sorted(documented - set(Settings.model_fields)) == []


@pytest.mark.parametrize("value", ["SH01:tok-secret-0123456789abcdefgh", "tok-secret-0123456789abcdefgh"])
def test_a_malformed_dealer_token_list_names_the_variable_but_not_the_token(value: str) -> None:
    with pytest.raises(ConfigError, match="DEALER_API_TOKENS") as raised:
        load_settings(environ={**PRODUCTION, "DEALER_API_TOKENS": f"HZ01=other-0123456789abcdefghij,{value}"})
    assert "secret" not in str(raised.value)
    assert "other-0123456789" not in str(raised.value)


def test_log_level_is_read_in_any_case() -> None:
    assert load_settings(environ={**PRODUCTION, "LOG_LEVEL": "debug"}).LOG_LEVEL == "DEBUG"
