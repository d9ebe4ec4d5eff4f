"""The connector's CN_* variables: its input limits over the connector's own defaults, its automatic retries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from connector.profiles import Mode, Policy
from connector.resource_ids import Scheme
from connector.retries import RetryPolicy
from connector.settings import DEFAULT_INPUT_LIMITS, Settings
from servicekit.auth import token_hash
from servicekit.config import ConfigError


def environment(tmp_path: Path) -> dict[str, str]:
    callers = tmp_path / "callers.json"
    callers.write_text(json.dumps({"callers": [{"name": "admin", "token_sha256": token_hash("t"), "roles": ["read"]}]}))
    return {
        "CN_SITE": "dic",
        "CN_ROLE": "dic",
        "CN_FHIR_URL": "http://fhir:8080/fhir",
        "CN_TRUSTCENTRE_URL": "http://trustcentre:8081/ttp-fhir/fhir",
        "CN_CALLERS_FILE": str(callers),
    }


def test_strings_may_be_long_enough_for_a_bundle_in_a_peer_task_unless_configured_otherwise(tmp_path: Path) -> None:
    assert Settings.from_environment(environment(tmp_path)).input_limits == DEFAULT_INPUT_LIMITS
    assert DEFAULT_INPUT_LIMITS.json_max_string_bytes == 16 * 1024 * 1024
    configured = Settings.from_environment({**environment(tmp_path), "CN_JSON_MAX_STRING_BYTES": "4096"})
    assert configured.input_limits.json_max_string_bytes == 4096
    assert configured.input_limits.json_max_depth == DEFAULT_INPUT_LIMITS.json_max_depth


def test_automatic_retries_are_configured_and_zero_attempts_switches_them_off(tmp_path: Path) -> None:
    assert Settings.from_environment(environment(tmp_path)).retry_policy == RetryPolicy()
    configured = {"CN_RETRY_FIRST_SECONDS": "10", "CN_RETRY_LONGEST_SECONDS": "60", "CN_RETRY_ATTEMPTS": "0"}
    policy = Settings.from_environment({**environment(tmp_path), **configured}).retry_policy
    assert policy == RetryPolicy(10, 60, 0)
    assert [RetryPolicy(10, 60, 5).wait(n).seconds for n in range(1, 6)] == [10, 20, 40, 60, 60]


@pytest.mark.parametrize(
    ("variable", "value"), [("CN_RETRY_ATTEMPTS", "-1"), ("CN_RETRY_ATTEMPTS", "x"), ("CN_RETRY_FIRST_SECONDS", "0")]
)
def test_a_wrong_retry_setting_is_named(tmp_path: Path, variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        Settings.from_environment({**environment(tmp_path), variable: value})


def test_validation_is_strict_for_profiles_and_warns_for_terminology_unless_configured(tmp_path: Path) -> None:
    assert Settings.from_environment(environment(tmp_path)).validation == Policy(Mode.STRICT, Mode.WARN)
    configured = {"CN_VALIDATION": "warn", "CN_VALIDATION_TERMINOLOGY": "strict"}
    assert Settings.from_environment({**environment(tmp_path), **configured}).validation == Policy(
        Mode.WARN, Mode.STRICT
    )


def test_resources_are_written_by_identifier_unless_derived_ids_are_asked_for(tmp_path: Path) -> None:
    assert Settings.from_environment(environment(tmp_path)).resource_ids is Scheme.IDENTIFIER
    asked = Settings.from_environment({**environment(tmp_path), "CN_RESOURCE_IDS": "derived"})
    assert asked.resource_ids is Scheme.DERIVED
    with pytest.raises(ConfigError, match="CN_RESOURCE_IDS='uuid': one of derived, identifier"):
        Settings.from_environment({**environment(tmp_path), "CN_RESOURCE_IDS": "uuid"})


@pytest.mark.parametrize(("variable", "value"), [("CN_VALIDATION", "lenient"), ("CN_VALIDATION_TERMINOLOGY", "off")])
def test_a_wrong_validation_mode_is_named_with_the_modes_allowed(tmp_path: Path, variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"{variable}='{value}': one of strict, warn"):
        Settings.from_environment({**environment(tmp_path), variable: value})
