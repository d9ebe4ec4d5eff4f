"""The portal's configuration: a mistake stops it with a message naming the variable and what is wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from portal.settings import Project, Settings
from servicekit.config import ConfigError


def environment(tmp_path: Path, projects: object) -> dict[str, str]:
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n", encoding="utf-8")
    (tmp_path / "projects.json").write_text(json.dumps(projects), encoding="utf-8")
    return {
        "PT_SITE": "dic",
        "PT_PUBLIC_URL": "https://dic.test/portal",
        "PT_ISSUER": "https://dic.test/idp/realms/hubnode",
        "PT_IDP_URL": "http://idp:8180/idp/realms/hubnode",
        "PT_CONNECTOR_URL": "http://connector:8082/fhir",
        "PT_TRUSTCENTRE_URL": "http://trustcentre:8081/ttp-fhir/fhir",
        **{
            variable: str(secret)
            for variable in (
                "PT_CLIENT_SECRET_FILE",
                "PT_SERVICE_CLIENT_SECRET_FILE",
                "PT_CONNECTOR_TOKEN_FILE",
                "PT_TRUSTCENTRE_TOKEN_FILE",
            )
        },
        "PT_PROJECTS_FILE": str(tmp_path / "projects.json"),
    }


def test_the_projects_file_describes_each_research_project(tmp_path: Path) -> None:
    described = {"title": "Verläufe", "summary": "Was hilft?", "recipient": "Register", "categories": ["Diagnosen"]}
    settings = Settings.from_environment(environment(tmp_path, {"cohort": described, "bare": {}}))
    assert settings.projects == {
        "cohort": Project("cohort", "Verläufe", "Was hilft?", "Register", ("Diagnosen",)),
        "bare": Project("bare"),
    }


@pytest.mark.parametrize(
    "projects",
    [["cohort"], {"cohort": "a title"}, {"cohort": {"title": 7}}, {"cohort": {"categories": "Diagnosen"}}],
)
def test_a_malformed_projects_file_is_refused_naming_the_variable(tmp_path: Path, projects: object) -> None:
    with pytest.raises(ConfigError, match="PT_PROJECTS_FILE"):
        Settings.from_environment(environment(tmp_path, projects))
