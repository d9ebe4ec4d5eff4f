"""The start-up hook of a mutant image: break the one requirement that `HUBNODE_MUTANT` names.

Imports each service module inside the patch that breaks it (the other services are not in the image).
Runs from a `.pth` file when the service's Python starts, before the service imports its modules, so
a replaced function is what every later `from module import name` gets. Each patch is the smallest
change that reintroduces one hole (infra/mutants.py lists them with the requirement each breaks).
A name without a patch, or a patch whose target moved, stops the service: a mutant that quietly
runs the production code would look like one the suite failed to catch.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable
from typing import Any

PATCHES: dict[str, Callable[[], None]] = {}


def patch(name: str) -> Callable[[Callable[[], None]], Callable[[], None]]:
    """Register the function that switches mutant `name` on."""

    def register(function: Callable[[], None]) -> Callable[[], None]:
        PATCHES[name] = function
        return function

    return register


def replace(owner: Any, attribute: str, make: Callable[[Any], Any]) -> None:  # noqa: ANN401 -- a module or class
    """Set `owner.attribute` to `make(original)`; the attribute must exist (else the patch is stale)."""
    original = getattr(owner, attribute)
    setattr(owner, attribute, make(original))


@patch("feasibility-small-counts")
def _small_counts() -> None:
    from connector import feasibility

    def obfuscate(_self: Any, site: str, count: int) -> Any:  # noqa: ANN401
        return feasibility.NodeCount(site, count, 1)

    replace(feasibility.FeasibilityPolicy, "obfuscate", lambda _: obfuscate)


@patch("feasibility-exact-counts")
def _exact_counts() -> None:
    from connector import feasibility

    def obfuscate(_self: Any, site: str, count: int) -> Any:  # noqa: ANN401
        small = 0 < count < feasibility.SMALLEST_SHOWN
        return feasibility.NodeCount(site, None if small else count, 1)

    replace(feasibility.FeasibilityPolicy, "obfuscate", lambda _: obfuscate)


@patch("research-without-consent")
def _without_consent() -> None:
    from connector import processes

    async def consented(*_args: Any) -> bool:  # noqa: ANN401
        return True

    replace(processes, "_consented", lambda _: consented)


@patch("name-in-extract")
def _name_in_extract() -> None:
    from connector import pseudonymise

    def with_name(original: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
        def patient(new_id: str, patient: dict[str, Any], *args: Any) -> dict[str, Any]:  # noqa: ANN401
            return {**original(new_id, patient, *args), **({"name": patient["name"]} if "name" in patient else {})}

        return patient

    replace(pseudonymise, "_patient", with_name)


@patch("impostor-accepted")
def _impostor() -> None:
    from urllib.parse import unquote

    from cryptography import x509
    from cryptography.x509.oid import NameOID

    from servicekit import identity
    from servicekit.fhir import FhirError

    def by_name(original: Callable[..., Any]) -> Callable[..., Any]:
        def identify(self: Any, headers: Any, now: Any = None) -> Any:  # noqa: ANN401
            try:
                return original(self, headers, now)
            except FhirError as refused:
                if refused.status != 403:
                    raise
                pem = unquote(headers.get(identity.CLIENT_CERT_HEADER, "")).encode()
                [name] = x509.load_pem_x509_certificate(pem).subject.get_attributes_for_oid(NameOID.COMMON_NAME)
                peer = self.allow_list.by_site(str(name.value))
                if peer is None or peer.site == self.site:
                    raise
                return peer

        return identify

    replace(identity.Federation, "identify", by_name)


@patch("ndjson-skips-bad-lines")
def _skips_bad_lines() -> None:
    from connector import transform

    replace(transform, "bundle_from_ndjson", lambda original: lambda body: (*original(body)[:2], []))


@patch("stores-off-profile")
def _stores_off_profile() -> None:
    from connector import profiles

    async def findings(_self: Any, _entries: Any) -> dict[int, Any]:  # noqa: ANN401
        return {}

    replace(profiles.ProfileCheck, "findings", lambda _: findings)


@patch("ignores-idempotency-key")
def _ignores_key() -> None:
    from connector import task_store

    replace(task_store, "claim_started", lambda original: lambda engine, task, _key: original(engine, task, task["id"]))


@patch("merge-persons")
def _merge_persons() -> None:
    from trustcentre import linkage

    replace(linkage.Asserter, "may_link", lambda _: lambda _self, _identifier: True)


@patch("overwrite-foreign-record")
def _overwrite() -> None:
    from connector import ingest, transform

    def every_origin(_original: Callable[..., Any]) -> Callable[..., Any]:
        return lambda self, _entries, _sender: transform.Origins(self.source_system_base, lambda _s, _v: True)

    replace(ingest.Ingester, "_origins", every_origin)


@patch("pseudonymise-any-domain")
def _any_domain() -> None:
    from servicekit import auth

    replace(auth.Caller, "require_domain", lambda _: lambda _self, _domain, _where="target": None)


@patch("free-text-purpose")
def _free_text_purpose() -> None:
    from trustcentre import web

    replace(web.Context, "purpose", lambda _: lambda self, derived: self.claimed_purpose or derived)


@patch("self-call")
def _self_call() -> None:
    from servicekit import identity

    def anyone(original: Callable[..., Any]) -> Callable[..., Any]:
        return lambda self, headers, now=None: original(dataclasses.replace(self, site=""), headers, now)

    replace(identity.Federation, "identify", anyone)


@patch("unaudited-read")
def _unaudited_read() -> None:
    from connector import read_audit

    replace(read_audit, "patients_read", lambda _: lambda _answer: [])


@patch("gives-up-at-once")
def _gives_up() -> None:
    from connector import retries

    replace(retries, "plan_next", lambda _: lambda *_args: None)


@patch("cacheable-answers")
def _cacheable() -> None:
    from servicekit import web

    def without_no_store(original: Callable[..., Any]) -> Callable[..., Any]:
        def fhir_response(*args: Any, **kwargs: Any) -> Any:  # noqa: ANN401
            response = original(*args, **kwargs)
            del response.headers["Cache-Control"]
            return response

        return fhir_response

    replace(web, "fhir_response", without_no_store)


def switch_on(name: str | None) -> None:
    """Apply the patch of mutant `name` (nothing without one); stop the process if it cannot be applied."""
    if not name:
        return
    try:
        PATCHES[name]()
    except Exception as error:  # noqa: BLE001 -- any failure must stop the service, loudly
        print(f"hubnode mutant {name!r} cannot be switched on: {error!r}", file=sys.stderr)
        os._exit(70)
    print(f"hubnode mutant {name!r} is switched on: this service is faulty on purpose", file=sys.stderr)


switch_on(os.environ.get("HUBNODE_MUTANT"))
