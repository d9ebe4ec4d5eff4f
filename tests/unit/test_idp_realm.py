from __future__ import annotations

import json
from typing import Any

from infra.idp_realm import (
    PORTAL_SECRET,
    PORTAL_SERVICE_SECRET,
    REALM,
    SMART_SCOPES,
    Realm,
    user_secret,
)
from infra.spec import DemoUser

ALICE = DemoUser("alice", "patient", patient="p-0001", fhir_user="Patient/p-0001", first_name="Alice")
BOB = DemoUser("bob", "clinician", fhir_user="Practitioner/pr-0042")
REALM_OF_DEV = Realm(site="dev", portal_url="https://127.0.0.1:8443/portal", users=(ALICE, BOB))
SECRETS = {
    PORTAL_SECRET: "portal-s3cret",
    PORTAL_SERVICE_SECRET: "service-s3cret",
    user_secret("alice"): "alice-pw",
    user_secret("bob"): "bob-pw",
}


def realm(of: Realm = REALM_OF_DEV) -> dict[str, Any]:
    rendered: dict[str, Any] = json.loads(of.render(SECRETS))
    return rendered


def by_name(entries: list[dict[str, Any]], key: str = "name") -> dict[str, dict[str, Any]]:
    return {entry[key]: entry for entry in entries}


def mappers(scope: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {m["name"]: {"kind": m["protocolMapper"], **m["config"]} for m in scope["protocolMappers"]}


def test_the_realm_has_the_three_roles_of_a_node_and_speaks_german_first() -> None:
    rendered = realm()
    assert rendered["realm"] == REALM == "hubnode"
    assert [r["name"] for r in rendered["roles"]["realm"]] == ["patient", "clinician", "site-admin"]
    assert (rendered["defaultLocale"], rendered["supportedLocales"]) == ("de", ["de", "en"])
    assert rendered["internationalizationEnabled"] is True
    assert rendered["registrationAllowed"] is False


def test_the_portal_is_a_confidential_client_with_pkce_back_to_its_own_callback_only() -> None:
    portal = by_name(realm()["clients"], "clientId")["portal"]
    assert portal["publicClient"] is False
    assert portal["secret"] == "portal-s3cret"
    assert (portal["standardFlowEnabled"], portal["implicitFlowEnabled"]) == (True, False)
    assert portal["attributes"]["pkce.code.challenge.method"] == "S256"
    assert portal["redirectUris"] == ["https://127.0.0.1:8443/portal/auth/callback"]
    assert set(portal["optionalClientScopes"]) == set(SMART_SCOPES)
    assert {"basic", "roles", "profile"} <= set(portal["defaultClientScopes"])


def test_the_password_grant_is_open_only_where_the_realm_allows_it() -> None:
    assert by_name(realm()["clients"], "clientId")["portal"]["directAccessGrantsEnabled"] is False
    local = Realm(site="dev", portal_url="https://x/portal", users=(ALICE, BOB), password_grant=True)
    assert by_name(realm(local)["clients"], "clientId")["portal"]["directAccessGrantsEnabled"] is True


def test_the_portal_service_account_uses_client_credentials_and_may_manage_users_only() -> None:
    rendered = realm()
    service = by_name(rendered["clients"], "clientId")["portal-service"]
    assert service["secret"] == "service-s3cret"
    assert service["serviceAccountsEnabled"] is True
    assert not any(
        service[flow] for flow in ("standardFlowEnabled", "implicitFlowEnabled", "directAccessGrantsEnabled")
    )
    account = by_name(rendered["users"], "username")["service-account-portal-service"]
    assert account["serviceAccountClientId"] == "portal-service"
    assert account["clientRoles"] == {"realm-management": ["manage-users", "view-users"]}


def test_smart_scopes_carry_the_patient_and_fhir_user_claims_from_user_attributes() -> None:
    scopes = by_name(realm()["clientScopes"])
    assert set(SMART_SCOPES) == {"fhirUser", "launch/patient", "patient/*.read", "user/*.read"}
    patient = mappers(scopes["launch/patient"])["patient"]
    fhir_user = mappers(scopes["fhirUser"])["fhirUser"]
    for mapper, attribute, claim in ((patient, "patient_id", "patient"), (fhir_user, "fhir_user", "fhirUser")):
        assert mapper["kind"] == "oidc-usermodel-attribute-mapper"
        assert (mapper["user.attribute"], mapper["claim.name"]) == (attribute, claim)
        assert mapper["access.token.claim"] == mapper["id.token.claim"] == "true"
    assert scopes["patient/*.read"]["protocolMappers"] == scopes["user/*.read"]["protocolMappers"] == []
    assert all(scopes[name]["attributes"]["include.in.token.scope"] == "true" for name in SMART_SCOPES)


def test_patient_scopes_are_granted_to_patients_and_user_scopes_to_clinicians() -> None:
    mappings = {m["clientScope"]: m["roles"] for m in realm()["scopeMappings"]}
    assert mappings == {"launch/patient": ["patient"], "patient/*.read": ["patient"], "user/*.read": ["clinician"]}


def test_the_realm_brings_keycloaks_own_scopes_since_declaring_any_suppresses_them() -> None:
    scopes = by_name(realm()["clientScopes"])
    assert mappers(scopes["basic"])["sub"]["kind"] == "oidc-sub-mapper"
    roles = mappers(scopes["roles"])["realm roles"]
    assert (roles["claim.name"], roles["multivalued"]) == ("realm_access.roles", "true")
    assert mappers(scopes["profile"])["username"]["claim.name"] == "preferred_username"
    assert set(realm()["defaultDefaultClientScopes"]) <= set(scopes)


def test_demo_users_get_their_role_attributes_and_a_password_that_need_not_be_changed() -> None:
    users = by_name(realm()["users"], "username")
    alice, bob = users["alice"], users["bob"]
    assert alice["realmRoles"] == ["patient"]
    assert alice["attributes"] == {"patient_id": ["p-0001"], "fhir_user": ["Patient/p-0001"]}
    assert alice["firstName"] == "Alice"
    assert "lastName" not in alice
    assert alice["credentials"] == [{"type": "password", "value": "alice-pw", "temporary": False}]
    assert alice["requiredActions"] == []
    assert bob["attributes"] == {"fhir_user": ["Practitioner/pr-0042"]}
    assert bob["realmRoles"] == ["clinician"]


def test_only_administrators_may_set_the_attributes_behind_the_smart_claims() -> None:
    [component] = realm()["components"]["org.keycloak.userprofile.UserProfileProvider"]
    [text] = component["config"]["kc.user.profile.config"]
    profile = json.loads(text)
    assert profile["unmanagedAttributePolicy"] == "ADMIN_EDIT"
    attributes = by_name(profile["attributes"])
    for name in ("patient_id", "fhir_user"):
        assert attributes[name]["permissions"] == {"view": ["admin"], "edit": ["admin"]}
    assert not any("required" in attribute for attribute in attributes.values())


def test_the_realm_is_made_from_the_client_secrets_and_each_demo_users_password() -> None:
    assert REALM_OF_DEV.sources == (PORTAL_SECRET, PORTAL_SERVICE_SECRET, "idp-user-alice", "idp-user-bob")


def test_secrets_appear_only_as_client_secrets_and_user_credentials() -> None:
    found: list[str] = []

    def walk(value: object, path: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{path}.{key}")
        elif isinstance(value, list):
            for item in value:
                walk(item, f"{path}[]")
        elif value in SECRETS.values():
            found.append(path)

    walk(realm(), "")
    assert sorted(found) == [".clients[].secret"] * 2 + [".users[].credentials[].value"] * 2


def test_the_same_realm_renders_the_same_text() -> None:
    assert REALM_OF_DEV.render(SECRETS) == REALM_OF_DEV.render(dict(reversed(SECRETS.items())))
