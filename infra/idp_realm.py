"""A node's Keycloak realm as code: roles, SMART-style client scopes, the portal's clients, demo users.

Pure. `Realm` is plain data the plan holds; `render` turns it and the secrets it names into the realm
JSON that Keycloak imports when it first starts (`start --import-realm`; an existing realm is kept as
it is). The file carries client secrets and the demo users' passwords, so the plan makes it a derived
secret file, never plain config.

What the realm must spell out, because Keycloak creates none of it for a realm JSON that declares
client scopes of its own (checked against Keycloak 26.7): the built-in scopes (`basic` writes the
access token's `sub`, `roles` its `realm_access.roles`), non-temporary passwords (a temporary one asks
for a new password at the first login), and a user profile that keeps the attributes the SMART
claims are read from (the default profile drops undeclared attributes).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from infra.spec import DemoUser

REALM = "hubnode"
#: Realm roles: what a user is to the node; the portal picks its views by them.
ROLES: Mapping[str, str] = {
    "patient": "A patient: sees their own record, consents and who used their data",
    "clinician": "A clinician of the site: sees the journeys of the patients they treat",
    "site-admin": "Runs the site's portal: enrolment, users, audit",
}
#: The portal's confidential client (authorization code with PKCE) and its service account, which sets a
#: user's attributes after enrolment through Keycloak's admin API.
PORTAL_CLIENT = "portal"
PORTAL_SERVICE_CLIENT = "portal-service"
#: Client roles of `realm-management` the portal's service account holds: create users, read and set attributes.
PORTAL_SERVICE_ROLES = ("manage-users", "view-users")
#: Secrets the realm is made from, by their names in the plan.
PORTAL_SECRET = "idp-portal-secret"  # noqa: S105 -- the name of a secret file, not a secret
PORTAL_SERVICE_SECRET = "idp-portal-service-secret"  # noqa: S105
#: User attributes behind SMART's `patient` and `fhirUser` claims; only administrators (and the portal's
#: service account) may set them, or a user could make themself someone else's patient.
PATIENT_ATTRIBUTE = "patient_id"
FHIR_USER_ATTRIBUTE = "fhir_user"
#: Scopes every client of the realm gets; `basic` gives the access token its `sub`.
DEFAULT_SCOPES = ("basic", "acr", "web-origins", "roles", "profile", "email")
#: SMART-style scopes a client asks for, and the realm roles a user needs to be granted each (none: anyone).
#: Keycloak grants a scope with role scope mappings only to users holding one of those roles, and leaves it
#: out of the token otherwise, so a clinician asking for `patient/*.read` does not get it.
SMART_SCOPES: Mapping[str, tuple[str, ...]] = {
    "fhirUser": (),
    "launch/patient": ("patient",),
    "patient/*.read": ("patient",),
    "user/*.read": ("clinician",),
}
LOCALES = ("de", "en")

_OIDC = "openid-connect"
_TRUE = "true"


#: Names the secret holding a demo user's password, before the user's name.
USER_SECRET_PREFIX = "idp-user-"  # noqa: S105 -- a name, not a secret


def user_secret(username: str) -> str:
    """The secret holding a demo user's password."""
    return f"{USER_SECRET_PREFIX}{username}"


@dataclass(frozen=True)
class Realm:
    """A node's realm as a derived secret file: everything but its secrets is fixed by the plan.

    `portal_url` is the portal's public base URL (its login callback lies below it); `password_grant`
    lets the portal client take a user's password directly, for developers' and tests' scripts on
    local stacks only.
    """

    site: str
    portal_url: str
    users: tuple[DemoUser, ...] = ()
    password_grant: bool = False

    @property
    def sources(self) -> tuple[str, ...]:
        """The secrets this file is made from: client secrets, then each demo user's password."""
        return (PORTAL_SECRET, PORTAL_SERVICE_SECRET, *(user_secret(user.username) for user in self.users))

    def render(self, secrets: Mapping[str, str]) -> str:
        """The realm JSON, given the content of each source secret."""
        return json.dumps(self.representation(secrets), indent=2, sort_keys=True) + "\n"

    def representation(self, secrets: Mapping[str, str]) -> dict[str, object]:
        """The realm as Keycloak's `RealmRepresentation`."""
        return {
            "realm": REALM,
            "displayName": f"hubnode {self.site}",
            "enabled": True,
            # Plain HTTP only from private addresses: the gateway and the node's own services.
            "sslRequired": "external",
            "registrationAllowed": False,
            "resetPasswordAllowed": False,
            "editUsernameAllowed": False,
            "bruteForceProtected": True,
            "internationalizationEnabled": True,
            "supportedLocales": list(LOCALES),
            "defaultLocale": LOCALES[0],
            "roles": {"realm": [{"name": name, "description": text} for name, text in ROLES.items()]},
            "clientScopes": [*_builtin_scopes(), *_smart_scopes()],
            "defaultDefaultClientScopes": list(DEFAULT_SCOPES),
            "defaultOptionalClientScopes": list(SMART_SCOPES),
            "scopeMappings": [
                {"clientScope": scope, "roles": list(roles)} for scope, roles in SMART_SCOPES.items() if roles
            ],
            "clients": [self._portal_client(secrets[PORTAL_SECRET]), _service_client(secrets[PORTAL_SERVICE_SECRET])],
            "users": [_service_account(), *(_user(user, secrets[user_secret(user.username)]) for user in self.users)],
            "components": {"org.keycloak.userprofile.UserProfileProvider": [_user_profile()]},
        }

    def _portal_client(self, secret: str) -> dict[str, object]:
        """Confidential, authorization code with PKCE (S256) back to the portal's callback only."""
        return {
            "clientId": PORTAL_CLIENT,
            "name": "hubnode portal",
            "enabled": True,
            "protocol": _OIDC,
            "publicClient": False,
            "clientAuthenticatorType": "client-secret",
            "secret": secret,
            "standardFlowEnabled": True,
            "implicitFlowEnabled": False,
            "directAccessGrantsEnabled": self.password_grant,
            "serviceAccountsEnabled": False,
            "consentRequired": False,
            "rootUrl": self.portal_url,
            "redirectUris": [f"{self.portal_url}/auth/callback"],
            "webOrigins": [],
            "attributes": {"pkce.code.challenge.method": "S256", "post.logout.redirect.uris": f"{self.portal_url}/*"},
            "fullScopeAllowed": True,
            "defaultClientScopes": list(DEFAULT_SCOPES),
            "optionalClientScopes": list(SMART_SCOPES),
        }


def _service_client(secret: str) -> dict[str, object]:
    """The portal's service account: client credentials only, no user ever logs in through it."""
    return {
        "clientId": PORTAL_SERVICE_CLIENT,
        "name": "hubnode portal (service account)",
        "enabled": True,
        "protocol": _OIDC,
        "publicClient": False,
        "clientAuthenticatorType": "client-secret",
        "secret": secret,
        "standardFlowEnabled": False,
        "implicitFlowEnabled": False,
        "directAccessGrantsEnabled": False,
        "serviceAccountsEnabled": True,
        "fullScopeAllowed": True,
        "defaultClientScopes": ["basic", "roles"],
        "optionalClientScopes": [],
    }


def _service_account() -> dict[str, object]:
    return {
        "username": f"service-account-{PORTAL_SERVICE_CLIENT}",
        "enabled": True,
        "serviceAccountClientId": PORTAL_SERVICE_CLIENT,
        "clientRoles": {"realm-management": list(PORTAL_SERVICE_ROLES)},
    }


def _user(user: DemoUser, password: str) -> dict[str, object]:
    attributes = {PATIENT_ATTRIBUTE: user.patient, FHIR_USER_ATTRIBUTE: user.fhir_user}
    names = {"firstName": user.first_name, "lastName": user.last_name}
    return {
        "username": user.username,
        "enabled": True,
        **{key: value for key, value in names.items() if value},
        "attributes": {key: [value] for key, value in attributes.items() if value},
        "realmRoles": [user.role],
        "credentials": [{"type": "password", "value": password, "temporary": False}],
        "requiredActions": [],
    }


def _mapper(
    name: str, kind: str, config: Mapping[str, str], *, id_token: bool = True, userinfo: bool = False
) -> dict[str, object]:
    """A protocol mapper writing into the access token (and introspection), and as asked the ID token and userinfo."""
    claims = {"access.token.claim": _TRUE, "introspection.token.claim": _TRUE}
    claims |= {"id.token.claim": _TRUE} if id_token else {}
    claims |= {"userinfo.token.claim": _TRUE} if userinfo else {}
    config = {**claims, **config}
    return {"name": name, "protocol": _OIDC, "protocolMapper": kind, "consentRequired": False, "config": config}


def _attribute(
    name: str, attribute: str, claim: str, json_type: str = "String", kind: str = "oidc-usermodel-attribute-mapper"
) -> dict[str, object]:
    """A claim in every token read from a user attribute (`kind` property mapper: a field of the user model)."""
    config = {"user.attribute": attribute, "claim.name": claim, "jsonType.label": json_type}
    return _mapper(name, kind, config, userinfo=True)


def _scope(name: str, description: str, mappers: list[dict[str, object]], *, in_token: bool) -> dict[str, object]:
    attributes = {"include.in.token.scope": _TRUE if in_token else "false", "display.on.consent.screen": "false"}
    return {
        "name": name,
        "description": description,
        "protocol": _OIDC,
        "attributes": attributes,
        "protocolMappers": mappers,
    }


def _builtin_scopes() -> list[dict[str, object]]:
    """Keycloak's own default scopes, as it defines them, with the profile mappers our users have fields for."""
    multivalued = {"jsonType.label": "String", "multivalued": _TRUE}
    realm_roles = {"claim.name": "realm_access.roles", **multivalued}
    client_roles = {"claim.name": "resource_access.${client_id}.roles", **multivalued}
    session_note = {"user.session.note": "AUTH_TIME", "claim.name": "auth_time", "jsonType.label": "long"}
    return [
        _scope(
            "basic",
            "OpenID Connect scope for the subject and the time of authentication",
            [
                _mapper("sub", "oidc-sub-mapper", {}, id_token=False),
                _mapper("auth_time", "oidc-usersessionmodel-note-mapper", session_note),
            ],
            in_token=False,
        ),
        _scope(
            "acr", "The authentication context class", [_mapper("acr loa level", "oidc-acr-mapper", {})], in_token=False
        ),
        _scope(
            "web-origins",
            "Origins allowed for CORS",
            [_mapper("allowed web origins", "oidc-allowed-origins-mapper", {}, id_token=False)],
            in_token=False,
        ),
        _scope(
            "roles",
            "The user's realm and client roles",
            [
                _mapper("realm roles", "oidc-usermodel-realm-role-mapper", realm_roles, id_token=False),
                _mapper("client roles", "oidc-usermodel-client-role-mapper", client_roles, id_token=False),
                _mapper("audience resolve", "oidc-audience-resolve-mapper", {}, id_token=False),
            ],
            in_token=False,
        ),
        _scope(
            "profile",
            "OpenID Connect built-in scope: profile",
            [
                _attribute("username", "username", "preferred_username"),
                _attribute("given name", "firstName", "given_name"),
                _attribute("family name", "lastName", "family_name"),
                _mapper("full name", "oidc-full-name-mapper", {}, userinfo=True),
                _attribute("locale", "locale", "locale"),
            ],
            in_token=True,
        ),
        _scope(
            "email",
            "OpenID Connect built-in scope: email",
            [
                _attribute("email", "email", "email"),
                _attribute(
                    "email verified", "emailVerified", "email_verified", "boolean", "oidc-usermodel-property-mapper"
                ),
            ],
            in_token=True,
        ),
    ]


def _smart_scopes() -> list[dict[str, object]]:
    """SMART on FHIR's scopes: `fhirUser` and `launch/patient` carry their claims, the others only name access."""
    claims = {
        "fhirUser": [_attribute("fhirUser", FHIR_USER_ATTRIBUTE, "fhirUser")],
        "launch/patient": [_attribute("patient", PATIENT_ATTRIBUTE, "patient")],
    }
    descriptions = {
        "fhirUser": "SMART: the FHIR resource of the user (fhirUser claim)",
        "launch/patient": "SMART: the patient in context (patient claim)",
        "patient/*.read": "SMART: read the patient's own record",
        "user/*.read": "SMART: read what the user may see",
    }
    return [_scope(name, descriptions[name], claims.get(name, []), in_token=True) for name in SMART_SCOPES]


def _user_profile() -> dict[str, object]:
    """Keycloak's user profile with names and e-mail optional and the SMART attributes for administrators only.

    Other attributes (`unmanagedAttributePolicy: ADMIN_EDIT`) are kept too, but only administrators see
    and change them: with `ENABLED` a user could edit their own attributes in the account console.
    """
    everyone = {"view": ["admin", "user"], "edit": ["admin", "user"]}
    administrators = {"view": ["admin"], "edit": ["admin"]}
    name = {"length": {"max": 255}, "person-name-prohibited-characters": {}}
    username = {
        "length": {"min": 3, "max": 255},
        "username-prohibited-characters": {},
        "up-username-not-idn-homograph": {},
    }
    attributes = [
        {"name": "username", "displayName": "${username}", "validations": username, "permissions": everyone},
        {
            "name": "email",
            "displayName": "${email}",
            "validations": {"email": {}, "length": {"max": 255}},
            "permissions": everyone,
        },
        {"name": "firstName", "displayName": "${firstName}", "validations": name, "permissions": everyone},
        {"name": "lastName", "displayName": "${lastName}", "validations": name, "permissions": everyone},
        *(
            {
                "name": attribute,
                "displayName": label,
                "validations": {"length": {"max": 255}},
                "permissions": administrators,
            }
            for attribute, label in (
                (PATIENT_ATTRIBUTE, "FHIR patient id"),
                (FHIR_USER_ATTRIBUTE, "FHIR user reference"),
            )
        ),
    ]
    profile = {
        "unmanagedAttributePolicy": "ADMIN_EDIT",
        "attributes": [{**a, "multivalued": False} for a in attributes],
    }
    return {
        "providerId": "declarative-user-profile",
        "subComponents": {},
        "config": {"kc.user.profile.config": [json.dumps(profile, separators=(",", ":"))]},
    }
