"""Configuration mistakes name the variable or file; callers are who their credentials say."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from servicekit.auth import token_hash
from servicekit.config import ConfigError
from servicekit.limits import DEFAULT_INPUT_LIMITS, InputLimits
from trustcentre.__main__ import main
from trustcentre.auth import Role
from trustcentre.settings import Settings, authenticator_from_config


def environment(tmp_path: Path, callers: object, secret: str = "x" * 40) -> dict[str, str]:
    (tmp_path / "secret").write_text(secret)
    (tmp_path / "callers.json").write_text(json.dumps(callers))
    return {
        "TC_SECRET_FILE": str(tmp_path / "secret"),
        "TC_CALLERS_FILE": str(tmp_path / "callers.json"),
        "TC_DATABASE_URL": f"sqlite:///{tmp_path / 'tc.db'}",
    }


ADMIN = {"callers": [{"name": "admin", "token_sha256": token_hash("t"), "roles": ["pseudonymize"]}]}


def test_a_complete_environment_resolves(tmp_path: Path) -> None:
    settings = Settings.from_environment(environment(tmp_path, ADMIN))
    assert settings.secret == b"x" * 40
    assert settings.authenticator.authenticate({"authorization": "Bearer t"}).roles == frozenset({Role.PSEUDONYMIZE})
    assert settings.input_limits == DEFAULT_INPUT_LIMITS


def test_input_limits_come_from_tc_variables(tmp_path: Path) -> None:
    environ = {**environment(tmp_path, ADMIN), "TC_JSON_MAX_DEPTH": "20", "CN_JSON_MAX_DEPTH": "30"}
    assert Settings.from_environment(environ).input_limits == InputLimits(json_max_depth=20)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"TC_SECRET_FILE": ""}, "TC_SECRET_FILE is not set: it must name a file"),
        (
            {"TC_SECRET_FILE": "/nonexistent/secret"},
            "TC_SECRET_FILE=/nonexistent/secret: cannot read it (No such file or directory)",
        ),
        (
            {"TC_DB_PASSWORD_FILE": "/nonexistent/pw"},
            "TC_DB_PASSWORD_FILE=/nonexistent/pw: cannot read it (No such file or directory)",
        ),
    ],
)
def test_missing_files_are_named(tmp_path: Path, change: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_environment({**environment(tmp_path, ADMIN), **change})
    assert str(caught.value) == message


def test_a_short_secret_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="TC_SECRET_FILE: the pseudonym secret must be at least 32 bytes"):
        Settings.from_environment(environment(tmp_path, ADMIN, secret="short"))


@pytest.mark.parametrize(
    ("callers", "message"),
    [
        ([], 'TC_CALLERS_FILE: expected {"callers": [...]}'),
        ({"callers": [{"roles": []}]}, "TC_CALLERS_FILE: callers[0]: needs a string name"),
        (
            {"callers": [{"name": "a", "roles": ["root"], "token_sha256": "x"}]},
            "TC_CALLERS_FILE: callers[0].roles: ['root']; known roles:",
        ),
        (
            {"callers": [{"name": "a", "roles": []}]},
            "TC_CALLERS_FILE: callers[0]: needs token_sha256, or certificate: true with a site",
        ),
        (
            {"callers": [{"name": "a", "roles": [], "certificate_subject": "CN=a"}]},
            "TC_CALLERS_FILE: callers[0]: unknown keys ['certificate_subject']",
        ),
    ],
)
def test_bad_callers_files_name_the_entry(callers: object, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        authenticator_from_config(callers, None)
    assert str(caught.value).startswith(message)


def test_the_service_exits_2_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("TC_SECRET_FILE", raising=False)
    assert main() == 2
    assert "trustcentre: configuration error: TC_SECRET_FILE is not set" in capsys.readouterr().err
