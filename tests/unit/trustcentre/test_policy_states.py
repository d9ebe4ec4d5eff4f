from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trustcentre.mii_consent import (
    MII_POLICY_CODES,
    POLICY_SYSTEM,
    MiiConsent,
    PolicyProvision,
    parse_mii_consent,
    withdrawal_consent,
)
from trustcentre.policy_states import PolicyState, current_policy_states, is_consented, policy_state

OID = POLICY_SYSTEM.removeprefix("urn:oid:")
IDAT_COLLECT, MDAT_COLLECT, MDAT_RESEARCH = f"{OID}.2", f"{OID}.6", f"{OID}.8"
SIGNED = datetime(2024, 2, 23, 12, tzinfo=UTC)


def consent(signed: datetime, *provisions: PolicyProvision, status: str = "active") -> MiiConsent:
    return MiiConsent("Patient/p-1", (), signed, status, provisions)


def permit(code: str, start: date, end: date | None = None) -> PolicyProvision:
    return PolicyProvision(code, permit=True, start=start, end=end)


def deny(code: str, start: date, end: date | None = None) -> PolicyProvision:
    return PolicyProvision(code, permit=False, start=start, end=end)


BROAD = consent(
    SIGNED, permit(MDAT_COLLECT, date(2024, 2, 23), date(2054, 1, 31)), permit(MDAT_RESEARCH, date(2024, 2, 23))
)


def test_a_covering_permit_is_accepted() -> None:
    assert policy_state([BROAD], MDAT_RESEARCH, date(2030, 1, 1)) is PolicyState.ACCEPTED


def test_a_period_end_is_inclusive() -> None:
    assert policy_state([BROAD], MDAT_COLLECT, date(2054, 1, 31)) is PolicyState.ACCEPTED
    assert policy_state([BROAD], MDAT_COLLECT, date(2054, 2, 1)) is PolicyState.DECLINED


def test_no_covering_provision_is_declined_by_default_and_unknown_on_request() -> None:
    before_start = date(2024, 2, 22)
    assert policy_state([BROAD], MDAT_COLLECT, before_start) is PolicyState.DECLINED
    assert policy_state([BROAD], MDAT_COLLECT, before_start, unknown_is_decline=False) is PolicyState.UNKNOWN
    assert policy_state([], MDAT_COLLECT, before_start, unknown_is_decline=False) is PolicyState.UNKNOWN


def test_the_latest_consent_wins_whatever_the_order() -> None:
    refusal = consent(SIGNED + timedelta(days=30), deny(MDAT_RESEARCH, date(2024, 1, 1)))
    renewal = consent(SIGNED + timedelta(days=60), permit(MDAT_RESEARCH, date(2024, 1, 1)))
    assert policy_state([refusal, BROAD], MDAT_RESEARCH, date(2024, 3, 1)) is PolicyState.DECLINED
    assert policy_state([BROAD, refusal], MDAT_RESEARCH, date(2024, 3, 1)) is PolicyState.DECLINED
    assert policy_state([renewal, refusal, BROAD], MDAT_RESEARCH, date(2024, 3, 1)) is PolicyState.ACCEPTED


def test_consent_times_compare_across_zones() -> None:
    nine_utc = consent(datetime(2024, 5, 1, 9, tzinfo=UTC), deny(MDAT_RESEARCH, date(2024, 1, 1)))
    ten_cest = consent(
        datetime(2024, 5, 1, 10, tzinfo=timezone(timedelta(hours=2))), permit(MDAT_RESEARCH, date(2024, 1, 1))
    )
    assert policy_state([ten_cest, nine_utc], MDAT_RESEARCH, date(2024, 6, 1)) is PolicyState.DECLINED


def test_on_equal_consent_times_a_deny_wins() -> None:
    refusal = consent(SIGNED, deny(MDAT_RESEARCH, date(2024, 1, 1)))
    assert policy_state([BROAD, refusal], MDAT_RESEARCH, date(2024, 3, 1)) is PolicyState.DECLINED
    assert policy_state([refusal, BROAD], MDAT_RESEARCH, date(2024, 3, 1)) is PolicyState.DECLINED


@pytest.mark.parametrize("status", ["inactive", "entered-in-error", "draft", "proposed", "rejected"])
def test_only_active_consents_count(status: str) -> None:
    later_refusal = consent(SIGNED + timedelta(days=1), deny(MDAT_RESEARCH, date(2024, 1, 1)), status=status)
    assert policy_state([BROAD, later_refusal], MDAT_RESEARCH, date(2024, 3, 1)) is PolicyState.ACCEPTED


def test_a_withdrawal_declines_from_its_day_on_and_keeps_history() -> None:
    withdrawal = parse_mii_consent(
        withdrawal_consent(
            {"reference": "Patient/p-1"}, date(2025, 3, 1), [MDAT_RESEARCH], datetime(2025, 3, 2, tzinfo=UTC)
        )
    )
    consents = [BROAD, withdrawal]
    assert policy_state(consents, MDAT_RESEARCH, date(2025, 2, 28)) is PolicyState.ACCEPTED
    assert policy_state(consents, MDAT_RESEARCH, date(2025, 3, 1)) is PolicyState.DECLINED
    assert policy_state(consents, MDAT_COLLECT, date(2025, 3, 1)) is PolicyState.ACCEPTED


def test_is_consented_needs_every_policy_accepted() -> None:
    assert is_consented([BROAD], [MDAT_COLLECT, MDAT_RESEARCH], date(2030, 1, 1))
    assert not is_consented([BROAD], [MDAT_COLLECT, MDAT_RESEARCH], date(2060, 1, 1))


@pytest.mark.parametrize("unknown_is_decline", [True, False])
def test_an_unknown_policy_is_never_consented(unknown_is_decline: bool) -> None:
    assert not is_consented(
        [BROAD], [MDAT_RESEARCH, f"{OID}.37"], date(2030, 1, 1), unknown_is_decline=unknown_is_decline
    )


def test_asking_about_no_policy_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least one policy code"):
        is_consented([BROAD], [], date(2030, 1, 1))


def test_current_policy_states_cover_every_mii_policy() -> None:
    states = current_policy_states([BROAD], date(2060, 1, 1))
    assert list(states) == list(MII_POLICY_CODES)
    assert states[MDAT_RESEARCH] is PolicyState.ACCEPTED
    assert states[MDAT_COLLECT] is PolicyState.UNKNOWN
    assert {state for code, state in states.items() if code != MDAT_RESEARCH} == {PolicyState.UNKNOWN}


CODES = st.sampled_from([IDAT_COLLECT, MDAT_COLLECT, MDAT_RESEARCH])  # few, so consents meet on the same policy
DAYS = st.dates(date(2020, 1, 1), date(2026, 12, 31))
PROVISION = st.builds(
    lambda code, permit, start, days: PolicyProvision(
        code, permit, start, None if days is None else start + timedelta(days)
    ),
    CODES,
    st.booleans(),
    DAYS,
    st.none() | st.integers(0, 1500),
)


def consents_with(status: st.SearchStrategy[str], min_provisions: int = 0) -> st.SearchStrategy[MiiConsent]:
    """Consents as the parser returns them: each policy at most once per consent."""
    naive_span = (datetime(2020, 1, 1), datetime(2026, 12, 31))  # noqa: DTZ001 - hypothesis adds the zone
    return st.builds(
        MiiConsent,
        patient_reference=st.just("Patient/p-1"),
        patient_identifiers=st.just(()),
        date_time=st.datetimes(*naive_span, timezones=st.just(UTC)),
        status=status,
        provisions=st.lists(PROVISION, min_size=min_provisions, max_size=3, unique_by=lambda p: p.code).map(tuple),
    )


CONSENT = consents_with(st.sampled_from(["active", "active", "inactive", "entered-in-error"]))
CONSENTS = st.lists(CONSENT, max_size=6)


def recorded_after(consents: list[MiiConsent]) -> datetime:
    return max((c.date_time for c in consents), default=SIGNED) + timedelta(seconds=1)


@given(
    consents=CONSENTS, code=CODES, withdrawn_on=DAYS, days_after=st.integers(0, 4000), unknown_is_decline=st.booleans()
)
def test_a_later_withdrawal_declines_every_day_from_its_start(
    consents: list[MiiConsent], code: str, withdrawn_on: date, days_after: int, unknown_is_decline: bool
) -> None:
    withdrawal = parse_mii_consent(
        withdrawal_consent({"reference": "Patient/p-1"}, withdrawn_on, [code], recorded_after(consents))
    )
    later = withdrawn_on + timedelta(days=days_after)
    state = policy_state([*consents, withdrawal], code, later, unknown_is_decline=unknown_is_decline)
    assert state is PolicyState.DECLINED


@given(consents=CONSENTS, code=CODES, withdrawn_on=DAYS, days_before=st.integers(1, 4000))
def test_a_withdrawal_leaves_earlier_days_as_they_were(
    consents: list[MiiConsent], code: str, withdrawn_on: date, days_before: int
) -> None:
    withdrawal = parse_mii_consent(
        withdrawal_consent({"reference": "Patient/p-1"}, withdrawn_on, [code], recorded_after(consents))
    )
    earlier = withdrawn_on - timedelta(days=days_before)
    assert policy_state([*consents, withdrawal], code, earlier) is policy_state(consents, code, earlier)


@given(consents=CONSENTS, anchor=consents_with(st.just("active"), min_provisions=1), data=st.data())
def test_an_older_consent_never_changes_a_day_a_newer_provision_covers(
    consents: list[MiiConsent], anchor: MiiConsent, data: st.DataObject
) -> None:
    consents = [*consents, anchor]
    provision = data.draw(st.sampled_from(anchor.provisions))
    day = data.draw(st.dates(provision.start, provision.end or provision.start + timedelta(days=4000)))
    oldest = min(c.date_time for c in consents)
    older = data.draw(CONSENT.map(lambda c: consent(oldest - timedelta(seconds=1), *c.provisions, status=c.status)))
    assert policy_state([*consents, older], provision.code, day) is policy_state(consents, provision.code, day)


@given(
    consents=CONSENTS, granted=st.booleans(), codes=st.lists(CODES, min_size=2, max_size=3), day=DAYS, data=st.data()
)
def test_asking_about_fewer_policies_never_loses_consent(
    consents: list[MiiConsent], granted: bool, codes: list[str], day: date, data: st.DataObject
) -> None:
    if granted:  # an old grant of everything, so that some requests come out consented
        grant = consent(datetime(2019, 1, 1, tzinfo=UTC), *(permit(c, date(2019, 1, 1)) for c in MII_POLICY_CODES))
        consents = [grant, *consents]
    fewer = data.draw(st.lists(st.sampled_from(codes), min_size=1, max_size=len(codes) - 1))
    if is_consented(consents, codes, day):
        assert is_consented(consents, fewer, day)
