"""gICS policy-state semantics over one person's MII consents.

The rules follow gICS (MOSAIC, Greifswald), so a site can swap the real gICS in behind the same
TTP-FHIR gateway and get the same answers:

- Of the provisions for a policy that cover the requested day, the one from the consent with the
  latest date wins; on equal dates a deny wins (gICS `consentDateIsNewer`: newer legal consent
  date, or the same date and DECLINED). Only consents with status `active` take part.
- A withdrawal is a later consent denying the policy from day W on, so the policy reads DECLINED
  for every day from W while earlier days keep reading ACCEPTED: history is kept, not rewritten.
- `isConsented` is true only for ACCEPTED (gICS `ConsentStatusType.ACCEPTED.equals(...)`), whatever
  `unknownStateIsConsideredAsDecline` says: that flag never makes an unknown state count as consent.
"""

from collections.abc import Iterable, Sequence
from datetime import date
from enum import Enum

from trustcentre.mii_consent import MII_POLICY_CODES, MiiConsent, PolicyProvision


class PolicyState(Enum):
    """A policy's state for a person on a day, named as gICS names its consent status types."""

    ACCEPTED = "ACCEPTED"
    DECLINED = "DECLINED"
    UNKNOWN = "UNKNOWN"


def _covers(provision: PolicyProvision, day: date) -> bool:
    return provision.start <= day and (provision.end is None or day <= provision.end)


def deciding(consents: Sequence[MiiConsent], code: str, at: date) -> tuple[MiiConsent, PolicyProvision] | None:
    """The consent and provision that decide policy `code` on day `at`, if any does."""
    return max(
        (
            (consent, provision)
            for consent in consents
            if consent.status == "active"
            for provision in consent.provisions
            if provision.code == code and _covers(provision, at)
        ),
        key=lambda found: (found[0].date_time, not found[1].permit),
        default=None,
    )


def policy_state(
    consents: Sequence[MiiConsent], code: str, at: date, *, unknown_is_decline: bool = True
) -> PolicyState:
    """The state of policy `code` on day `at`.

    With no active provision covering `at` the state is UNKNOWN. `unknown_is_decline` reports that
    as DECLINED, so a caller that only tells ACCEPTED from DECLINED cannot take silence for consent;
    pass False to tell "never asked" from "refused". (In gICS the flag, default false there, is about
    signed policies recorded as unknown, e.g. not asked; MII consents record only permit or deny, so
    here a day no provision covers is the only unknown.)
    """
    found = deciding(consents, code, at)
    if found is None:
        return PolicyState.DECLINED if unknown_is_decline else PolicyState.UNKNOWN
    return PolicyState.ACCEPTED if found[1].permit else PolicyState.DECLINED


def is_consented(
    consents: Sequence[MiiConsent], codes: Sequence[str], at: date, *, unknown_is_decline: bool = True
) -> bool:
    """True only if every policy in `codes` is ACCEPTED on day `at`.

    UNKNOWN never counts as consent, with either value of `unknown_is_decline` (as in gICS, where
    the flag only decides whether unknown states are reported as declined); the flag is accepted so
    the gateway can pass gICS's `config` through unchanged. An empty `codes` is a caller's mistake,
    not a consent to nothing, and raises ValueError.
    """
    if not codes:
        raise ValueError("is_consented needs at least one policy code")
    return all(
        policy_state(consents, code, at, unknown_is_decline=unknown_is_decline) is PolicyState.ACCEPTED
        for code in codes
    )


def current_policy_states(
    consents: Sequence[MiiConsent], at: date, codes: Iterable[str] = MII_POLICY_CODES
) -> dict[str, PolicyState]:
    """Every policy's state (of `codes`, a consent domain's keys) on day `at`, keeping UNKNOWN apart from DECLINED.

    This backs `$currentPolicyStatesForPerson`, whose caller decides (by gICS's
    `unknownStateIsConsideredAsDecline`) whether to render UNKNOWN as deny or leave it out.
    """
    return {code: policy_state(consents, code, at, unknown_is_decline=False) for code in codes}
