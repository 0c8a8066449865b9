"""The import's mapping rules on plain values: rows of the original in, one event's plan out."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from ticketing_service.domain.moim_import import plan_event
from ticketing_service.domain.moim_plan import (
    EventPlan,
    ProblemKind,
    ServiceHold,
    ServiceRegistration,
    ServiceReservation,
)
from ticketing_service.domain.moim_source import (
    SourceEvent,
    SourcePayment,
    SourceReservation,
    SourceRsvp,
    SourceSettings,
    SourceTier,
    read_as_utc,
    time_problem,
)
from ticketing_service.domain.reconciliation import ReconcilePolicy
from ticketing_service.domain.reservations import (
    MAX_ANSWER_LENGTH,
    MAX_ANSWERS,
    MAX_ANSWERS_BYTES,
    Answer,
    ReservationStatus,
    answers_over_limits,
)
from ticketing_service.domain.settings import MAX_TITLE_LENGTH, TicketingMode, Tier

NOW = datetime(2030, 5, 1, 12, tzinfo=UTC)
STARTS = NOW + timedelta(days=30)
BASE_URL = "https://moim.example"
POLICY = ReconcilePolicy()  # follow-ups for 48 hours
PAID = SourceSettings("paid", "portone", "portone_kakaopay", "KRW", True, False)


def tier(
    tier_id: str = "vip", *, price: int | None = 30000, capacity: int | None = 10
) -> SourceTier:
    return SourceTier(tier_id, tier_id.upper(), price, capacity, None, None, 0, NOW)


def rsvp(
    rsvp_id: str, user_id: str | None, tier_id: str | None = "vip", status: str = "accepted"
) -> SourceRsvp:
    return SourceRsvp(rsvp_id, user_id, tier_id, status)


def reservation(
    reservation_id: str,
    user_id: str | None,
    *,
    status: str = "confirmed",
    rsvp_id: str | None = None,
    checkout_id: str | None = "chk",
    expires_in: timedelta = timedelta(minutes=5),
    created: datetime = NOW - timedelta(minutes=5),
    answers: object = None,
    tier_id: str | None = "vip",
    amount: int = 30000,
) -> SourceReservation:
    return SourceReservation(
        reservation_id=reservation_id,
        tier_id=tier_id,
        user_id=user_id,
        rsvp_id=rsvp_id,
        provider="portone",
        provider_account_id="portone_kakaopay",
        amount=amount,
        currency="KRW",
        status=status,
        checkout_id=checkout_id and f"{checkout_id}-{reservation_id}",
        answers_snapshot=answers,
        expires_at=NOW + expires_in,
        created_at=created,
        updated_at=created,
    )


def payment(
    payment_id: str,
    reservation_id: str,
    *,
    status: str = "paid",
    minute: int = 0,
    amount: int = 30000,
    currency: str = "KRW",
) -> SourcePayment:
    paid_at = NOW - timedelta(hours=1) + timedelta(minutes=minute)
    return SourcePayment(
        payment_row_id=payment_id,
        reservation_id=reservation_id,
        provider="portone",
        provider_payment_id=f"pay_{payment_id}",
        tx_id=f"tx_{payment_id}",
        checkout_id=f"chk-{reservation_id}",
        status=status,
        amount=amount,
        currency=currency,
        raw_event=b'{"type": "ticket_payment.paid"}' if status == "paid" else None,
        paid_at=paid_at if status == "paid" else None,
        created_at=paid_at,
        updated_at=paid_at,
    )


def event(
    *,
    settings: SourceSettings | None = PAID,
    tiers: tuple[SourceTier, ...] = (tier(),),
    rsvps: tuple[SourceRsvp, ...] = (),
    reservations: tuple[SourceReservation, ...] = (),
    payments: tuple[SourcePayment, ...] = (),
    external_url: str = "",
) -> SourceEvent:
    return SourceEvent(
        "event", "Concert", STARTS, external_url, settings, tiers, rsvps, reservations, payments
    )


def plan(
    source: SourceEvent,
    registered: tuple[ServiceRegistration, ...] = (),
    *,
    auto_refund: bool = True,
    held: tuple[ServiceHold, ...] = (),
) -> EventPlan:
    return plan_event(
        source, registered, BASE_URL, NOW, auto_refund=auto_refund, reconcile=POLICY, held=held
    )


def kinds(result: EventPlan) -> list[ProblemKind]:
    return [p.kind for p in result.problems]


def by_id(result: EventPlan) -> dict[str, tuple[ReservationStatus, str | None]]:
    planned = (*result.settled, *result.holds)
    return {
        i.reservation.reservation_id: (i.reservation.status, i.reservation.registration_id)
        for i in planned
    }


def test_settings_keep_the_stored_flags_so_a_backfilled_paid_event_stays_disabled() -> None:
    backfilled = SourceSettings("paid", "portone", None, "KRW", False, True)
    settings = plan(event(settings=backfilled)).settings
    assert settings is not None
    assert (settings.mode, settings.enabled, settings.legacy) == (TicketingMode.PAID, False, True)
    assert (settings.provider, settings.provider_account_id, settings.currency_code) == (
        "portone",
        None,
        "KRW",
    )
    assert (settings.event_title, settings.event_start_time) == ("Concert", STARTS)
    assert settings.external_url is None


def test_a_title_longer_than_the_service_takes_is_cut_and_listed() -> None:
    long = replace(event(), title="Concert " * 1000)
    result = plan(long)
    assert result.settings is not None
    assert result.settings.event_title == long.title[:MAX_TITLE_LENGTH]
    [problem] = result.problems
    assert problem.kind is ProblemKind.TITLE_TOO_LONG
    assert "has a title of 8000 characters: brought in as its first 300" in problem.detail


def test_an_event_deleted_in_moim_comes_in_with_its_ticketing_disabled_and_is_listed() -> None:
    result = plan(replace(event(), deleted=True))
    assert result.settings is not None
    assert result.settings.enabled is False
    assert kinds(result) == [ProblemKind.DELETED_EVENT]
    # Disabled in Moim already: nothing to say.
    disabled = replace(PAID, enabled=False)
    assert plan(replace(event(settings=disabled), deleted=True)).problems == ()


def test_an_external_event_keeps_its_url_and_other_modes_take_none() -> None:
    external = SourceSettings("external", "portone", None, "KRW", True, True)
    imported = plan(event(settings=external, external_url="https://tickets.example/e")).settings
    assert imported is not None
    assert (imported.mode, imported.external_url) == (
        TicketingMode.EXTERNAL,
        "https://tickets.example/e",
    )
    paid = plan(event(external_url="https://tickets.example/e")).settings
    assert paid is not None
    assert paid.external_url is None


def test_tiers_are_ordered_and_their_prices_capacities_and_windows_read_as_the_original_did() -> (
    None
):
    opens = NOW - timedelta(days=1)
    tiers = (
        replace(tier("late", price=-100, capacity=0), sort_order=2, closes_at=NOW),
        replace(tier("first", price=None, capacity=None), sort_order=0, opens_at=opens),
        replace(tier("middle", price=5000, capacity=-3), sort_order=1),
    )
    settings = plan(event(tiers=tiers)).settings
    assert settings is not None
    got = [
        (t.tier_id, t.price_amount, t.capacity, t.sale_start_time, t.sale_end_time)
        for t in settings.tiers
    ]
    assert got == [
        ("first", 0, None, opens, STARTS),
        ("middle", 5000, None, None, STARTS),
        ("late", 0, None, None, NOW),
    ]


def test_an_event_without_settings_or_with_an_unknown_mode_brings_in_nothing() -> None:
    missing = plan(event(settings=None, reservations=(reservation("r", "u"),)))
    assert (missing.settings, missing.settled, kinds(missing)) == (
        None,
        (),
        [ProblemKind.NO_SETTINGS],
    )
    odd = plan(event(settings=replace(PAID, mode="gift")))
    assert (odd.settings, kinds(odd)) == (None, [ProblemKind.UNUSABLE_SETTINGS])


def test_a_paid_and_accepted_rsvp_is_confirmed_with_its_registration_payment_and_answers() -> None:
    answers = [{"questionId": "q1", "answer": "Seoul"}, {"questionId": "q2", "answer": "  "}]
    result = plan(
        event(
            rsvps=(rsvp("rsvp-1", "u1"),),
            reservations=(reservation("r1", "u1", rsvp_id="rsvp-1", answers=answers),),
            payments=(payment("p1", "r1"),),
        )
    )
    [settled] = result.settled
    imported = settled.reservation
    assert (imported.status, imported.registration_id) == (ReservationStatus.CONFIRMED, "rsvp-1")
    assert imported.answers == (Answer("q1", "Seoul"),)
    assert (imported.checkout_id, imported.payment_id) == ("chk-r1", "pay_p1")
    assert imported.success_url == f"{BASE_URL}/events/event/register?payment=success"
    paid = settled.payment
    assert (paid.payment_row_id, paid.status, paid.tx_id) == ("p1", "paid", "tx_p1")
    assert paid.raw_event == b'{"type": "ticket_payment.paid"}'
    assert (result.external_seats, result.problems) == ({"vip": 0}, ())


def test_a_paid_rsvp_without_a_payment_row_is_listed_and_counted_as_a_seat() -> None:
    result = plan(
        event(
            rsvps=(rsvp("rsvp-2", "u2"),),
            reservations=(reservation("r2", "u2", rsvp_id="rsvp-2"),),
            payments=(payment("p2", "r2", status="requires_payment"),),
        )
    )
    assert (result.settled, result.holds, result.external_seats) == ((), (), {"vip": 1})
    [problem] = result.problems
    assert problem.kind is ProblemKind.PAYMENT_MISSING
    assert "r2" in problem.subject
    assert "rsvp-2 counts as a seat" in problem.detail


def test_of_two_paid_payments_the_first_paid_is_imported_and_the_other_listed() -> None:
    result = plan(
        event(
            rsvps=(rsvp("rsvp-3", "u3"),),
            reservations=(reservation("r3", "u3", rsvp_id="rsvp-3"),),
            payments=(payment("later", "r3", minute=9), payment("first", "r3", minute=1)),
        )
    )
    [settled] = result.settled
    assert settled.payment.payment_row_id == "first"
    assert kinds(result) == [ProblemKind.EXTRA_PAYMENTS]
    assert "payment later (pay_later)" in result.problems[0].detail


def test_the_same_payment_recorded_twice_is_one_payment() -> None:
    twice = replace(payment("first", "r3", minute=1), payment_row_id="again")
    result = plan(
        event(
            rsvps=(rsvp("rsvp-3", "u3"),),
            reservations=(reservation("r3", "u3", rsvp_id="rsvp-3"),),
            payments=(payment("first", "r3", minute=1), twice),
        )
    )
    assert by_id(result) == {"r3": (ReservationStatus.CONFIRMED, "rsvp-3")}
    assert result.problems == ()
    # Another amount under the same provider payment id is no repeat: it is listed.
    other = replace(twice, amount=1000)
    result = plan(
        replace(
            event(),
            rsvps=(rsvp("rsvp-3", "u3"),),
            reservations=(reservation("r3", "u3", rsvp_id="rsvp-3"),),
            payments=(payment("first", "r3", minute=1), other),
        )
    )
    assert kinds(result) == [ProblemKind.PAYMENT_DIFFERS]


def test_a_confirmed_reservation_paid_without_a_provider_payment_id_is_listed_not_imported() -> (
    None
):
    unnamed = replace(payment("p3", "r3"), provider_payment_id=None)
    result = plan(
        event(
            rsvps=(rsvp("rsvp-3", "u3"),),
            reservations=(reservation("r3", "u3", rsvp_id="rsvp-3"),),
            payments=(unnamed,),
        )
    )
    # Nothing could cancel it, refund it or cancel its event: its RSVP keeps the seat in Moim.
    assert (result.settled, result.external_seats) == ((), {"vip": 1})
    [problem] = result.problems
    assert problem.kind is ProblemKind.PAYMENT_WITHOUT_ID
    assert "payment p3 (no provider payment id)" in problem.detail
    assert "rsvp-3 counts as a seat" in problem.detail


def test_of_two_paid_payments_one_with_a_provider_payment_id_settles_the_reservation() -> None:
    unnamed = replace(payment("first", "r3", minute=1), provider_payment_id=None)
    result = plan(
        event(
            rsvps=(rsvp("rsvp-3", "u3"),),
            reservations=(reservation("r3", "u3", rsvp_id="rsvp-3"),),
            payments=(unnamed, payment("named", "r3", minute=9)),
        )
    )
    [settled] = result.settled
    assert settled.payment.provider_payment_id == "pay_named"
    assert kinds(result) == [ProblemKind.EXTRA_PAYMENTS]  # the other is listed


def test_one_payment_recorded_for_two_reservations_seats_only_the_one_it_paid_first() -> None:
    shared = replace(payment("later", "r4", minute=9), provider_payment_id="pay_first")
    result = plan(
        event(
            rsvps=(rsvp("rsvp-3", "u3"), rsvp("rsvp-4", "u4")),
            reservations=(
                reservation("r3", "u3", rsvp_id="rsvp-3"),
                reservation("r4", "u4", rsvp_id="rsvp-4"),
            ),
            payments=(payment("first", "r3", minute=1), shared),
        )
    )
    assert by_id(result) == {"r3": (ReservationStatus.CONFIRMED, "rsvp-3")}
    [problem] = result.problems
    assert problem.kind is ProblemKind.PAYMENT_OF_ANOTHER
    assert "which paid reservation r3 first" in problem.detail
    # Across events: the owners of the whole source are passed in.
    alone = plan_event(
        event(
            rsvps=(rsvp("rsvp-4", "u4"),),
            reservations=(reservation("r4", "u4", rsvp_id="rsvp-4"),),
            payments=(shared,),
        ),
        (),
        BASE_URL,
        NOW,
        auto_refund=True,
        reconcile=POLICY,
        owners={"pay_first": "r3"},
    )
    assert alone.settled == ()


def test_a_paid_reservation_whose_rsvp_was_waitlisted_is_paid_unfulfilled() -> None:
    result = plan(
        event(
            rsvps=(rsvp("rsvp-4", "u4", status="waitlisted"),),
            reservations=(reservation("r4", "u4", rsvp_id="rsvp-4"),),
            payments=(payment("p4", "r4"),),
        )
    )
    assert by_id(result) == {"r4": (ReservationStatus.PAID_UNFULFILLED, None)}
    assert kinds(result) == [ProblemKind.PAID_NOT_ACCEPTED]
    assert result.external_seats == {"vip": 0}


def test_a_users_second_paid_reservation_is_paid_unfulfilled_and_the_first_paid_has_the_seat() -> (
    None
):
    result = plan(
        event(
            rsvps=(rsvp("rsvp-5", "u5"),),
            reservations=(
                reservation("r5-made-first", "u5", rsvp_id="rsvp-5"),
                reservation("r5-paid-first", "u5", rsvp_id="rsvp-5"),
            ),
            payments=(payment("a", "r5-made-first", minute=5), payment("b", "r5-paid-first")),
        )
    )
    assert by_id(result) == {
        "r5-paid-first": (ReservationStatus.CONFIRMED, "rsvp-5"),
        "r5-made-first": (ReservationStatus.PAID_UNFULFILLED, None),
    }
    assert kinds(result) == [ProblemKind.SECOND_PAID_RESERVATION]


def test_a_user_registered_here_through_another_reservation_gets_no_second_seat() -> None:
    known = ServiceRegistration("made-by-the-service", "its-own-reservation", "u6", "vip")
    result = plan(
        event(
            rsvps=(rsvp("rsvp-6", "u6"),),
            reservations=(reservation("r6", "u6", rsvp_id="rsvp-6"),),
            payments=(payment("p6", "r6"),),
        ),
        registered=(known,),
    )
    assert by_id(result) == {"r6": (ReservationStatus.PAID_UNFULFILLED, None)}
    assert kinds(result) == [ProblemKind.REGISTERED_IN_SERVICE]
    assert result.external_seats == {"vip": 0}  # the user's seat is the service's registration


def test_a_reservation_the_service_settled_first_keeps_its_registration() -> None:
    # The service's reconciliation (or a callback) confirmed the imported hold before Moim did.
    known = ServiceRegistration("made-by-the-service", "r7", "u7", "vip")
    result = plan(
        event(
            rsvps=(rsvp("rsvp-7", "u7"),),
            reservations=(reservation("r7", "u7", rsvp_id="rsvp-7"),),
            payments=(payment("p7", "r7"),),
        ),
        registered=(known,),
    )
    assert by_id(result) == {"r7": (ReservationStatus.CONFIRMED, "made-by-the-service")}
    assert (result.problems, result.external_seats) == ((), {"vip": 0})


def test_free_anonymous_and_early_attendees_count_as_seats_on_their_tier() -> None:
    result = plan(
        event(
            tiers=(tier("vip"), tier("free", price=None)),
            rsvps=(
                rsvp("free-1", "u1", "free"),
                rsvp("anonymous", None, "vip"),
                rsvp("early", "u2", "vip"),
                rsvp("declined", "u3", "vip", status="declined"),
                rsvp("waitlisted", "u4", "vip", status="waitlisted"),
            ),
        )
    )
    assert result.external_seats == {"vip": 2, "free": 1}
    assert result.problems == ()


def test_a_tierless_rsvp_counts_on_a_single_tier_event_and_is_listed_on_a_multi_tier_one() -> None:
    single = plan(event(rsvps=(rsvp("no-tier", "u1", None),)))
    assert (single.external_seats, single.problems) == ({"vip": 1}, ())
    multi = plan(event(tiers=(tier("a"), tier("b")), rsvps=(rsvp("no-tier", "u1", None),)))
    assert multi.external_seats == {"a": 0, "b": 0}
    assert kinds(multi) == [ProblemKind.TIERLESS_RSVP]
    assert "no-tier" in multi.problems[0].subject


def test_a_live_hold_comes_in_with_its_checkout_and_the_payment_row_the_original_made() -> None:
    result = plan(
        event(
            reservations=(reservation("h", "u8", status="pending_payment"),),
            payments=(payment("hp", "h", status="requires_payment"),),
        )
    )
    [hold] = result.holds
    assert (hold.reservation.status, hold.reservation.checkout_id) == (
        ReservationStatus.PENDING_PAYMENT,
        "chk-h",
    )
    assert hold.reservation.expire_time == NOW + timedelta(minutes=5)
    assert hold.reservation.checkout_url is None  # a retry asks the payment service again
    assert (hold.payment.payment_row_id, hold.payment.status) == ("hp", "requires_payment")


def test_a_hold_without_a_recorded_payment_row_gets_the_same_row_id_on_every_import() -> None:
    source = event(reservations=(reservation("h", "u8", status="pending_payment"),))
    assert plan(source).holds[0].payment == plan(source).holds[0].payment


def test_of_a_users_live_holds_the_latest_stays_live_and_the_others_end() -> None:
    result = plan(
        event(
            reservations=(
                reservation("older", "u9", status="pending_payment", created=NOW - timedelta(4)),
                reservation("newer", "u9", status="pending_payment", created=NOW - timedelta(1)),
            )
        )
    )
    assert by_id(result) == {
        "older": (ReservationStatus.EXPIRED, None),
        "newer": (ReservationStatus.PENDING_PAYMENT, None),
    }
    assert kinds(result) == [ProblemKind.EXTRA_HOLDS]
    assert "older" in result.problems[0].subject


def test_a_live_hold_without_a_checkout_is_listed_and_an_ended_one_is_left_quietly() -> None:
    result = plan(
        event(
            reservations=(
                reservation("live", "u1", status="pending_payment", checkout_id=None),
                reservation(
                    "ended",
                    "u2",
                    status="pending_payment",
                    checkout_id=None,
                    expires_in=-timedelta(minutes=1),
                ),
            )
        )
    )
    assert (result.holds, kinds(result)) == ((), [ProblemKind.HOLD_WITHOUT_CHECKOUT])
    assert "live" in result.problems[0].subject


def test_an_ended_hold_with_a_checkout_comes_in_expired() -> None:
    ended = reservation("ended", "u11", status="pending_payment", expires_in=-timedelta(hours=1))
    result = plan(event(reservations=(ended,)))
    assert (by_id(result), result.problems) == ({"ended": (ReservationStatus.EXPIRED, None)}, ())


def test_an_ended_or_cancelled_hold_in_the_window_is_followed_up_and_a_live_one_is_not() -> None:
    window = POLICY.window
    result = plan(
        event(
            reservations=(
                reservation("live", "u1", status="pending_payment"),
                reservation(
                    "ended", "u2", status="pending_payment", expires_in=-timedelta(minutes=1)
                ),
                reservation("cancelled", "u3", status="cancelled"),
                reservation("expired", "u4", status="expired", created=NOW - window / 2),
                # The service's own reservations are no longer asked about past the window.
                reservation("old", "u5", status="expired", created=NOW - window),
            )
        )
    )
    followed = {h.reservation.reservation_id: h.follow_up for h in result.holds}
    assert followed == {
        "live": False,
        "ended": True,
        "cancelled": True,
        "expired": True,
        "old": False,
    }
    assert not any(s.follow_up for s in result.settled)


def test_a_live_hold_imported_ended_is_followed_up_as_moim_may_still_take_its_payment() -> None:
    minutes = timedelta(minutes=1)
    result = plan(
        event(
            reservations=(
                reservation("older", "u9", status="pending_payment", created=NOW - 4 * minutes),
                reservation("newer", "u9", status="pending_payment", created=NOW - minutes),
            )
        )
    )
    followed = {h.reservation.reservation_id: h.follow_up for h in result.holds}
    assert followed == {"older": True, "newer": False}


def test_a_live_hold_past_the_seats_left_ends_and_a_registered_users_hold_ends() -> None:
    result = plan(
        event(
            tiers=(tier(capacity=3),),
            rsvps=(rsvp("rsvp-1", "u1"), rsvp("free-rider", "u2")),
            reservations=(
                reservation("paid", "u1", rsvp_id="rsvp-1"),
                reservation("again", "u1", status="pending_payment"),
                reservation("first", "u3", status="pending_payment", created=NOW - timedelta(2)),
                reservation("second", "u4", status="pending_payment", created=NOW - timedelta(1)),
            ),
            payments=(payment("p", "paid"),),
        )
    )
    # 3 seats: the registration, the accepted RSVP, then the first hold.
    assert by_id(result) == {
        "paid": (ReservationStatus.CONFIRMED, "rsvp-1"),
        "again": (ReservationStatus.EXPIRED, None),
        "first": (ReservationStatus.PENDING_PAYMENT, None),
        "second": (ReservationStatus.EXPIRED, None),
    }
    assert sorted(kinds(result)) == [
        ProblemKind.HOLD_OF_REGISTERED_USER,
        ProblemKind.HOLD_OVER_CAPACITY,
    ]


def test_planning_again_with_what_the_first_plan_registered_gives_the_same_plan() -> None:
    source = event(
        tiers=(tier(capacity=4),),
        rsvps=(rsvp("rsvp-1", "u1"), rsvp("rsvp-2", "u2"), rsvp("free", "u3")),
        reservations=(
            reservation("r1", "u1", rsvp_id="rsvp-1"),
            reservation("r2", "u2", rsvp_id="rsvp-2"),
            reservation("hold", "u4", status="pending_payment"),
        ),
        payments=(payment("p1", "r1"), payment("p2", "r2", minute=3)),
    )
    first = plan(source)
    registered = tuple(
        ServiceRegistration(r.registration_id, r.reservation_id, r.user_id, r.tier_id)
        for r in (i.reservation for i in first.settled)
        if r.registration_id is not None
    )
    assert plan(source, registered) == first


def test_answers_that_are_not_a_list_of_question_answers_are_listed_and_left_out() -> None:
    result = plan(
        event(
            rsvps=(rsvp("rsvp-1", "u1"),),
            reservations=(reservation("r1", "u1", rsvp_id="rsvp-1", answers={"q": "a"}),),
            payments=(payment("p1", "r1"),),
        )
    )
    assert result.settled[0].reservation.answers == ()
    assert kinds(result) == [ProblemKind.UNREADABLE_ANSWERS]


def test_a_reservation_in_a_tier_the_event_lacks_is_listed_and_left_out() -> None:
    result = plan(
        event(
            reservations=(reservation("r", "u", tier_id="gone", status="pending_payment"),),
        )
    )
    assert (result.holds, kinds(result)) == ((), [ProblemKind.UNUSABLE_RESERVATION])


def test_a_payment_of_another_amount_or_currency_settles_nothing_and_its_rsvp_keeps_a_seat() -> (
    None
):
    paid = {"r1": (100, "KRW"), "r2": (30000, "USD"), "r3": (30000, "krw")}
    result = plan(
        event(
            rsvps=tuple(rsvp(f"rsvp-{r}", f"u-{r}") for r in paid),
            reservations=tuple(reservation(r, f"u-{r}", rsvp_id=f"rsvp-{r}") for r in paid),
            payments=tuple(
                payment(f"p-{r}", r, amount=amount, currency=currency)
                for r, (amount, currency) in paid.items()
            ),
        )
    )
    assert (result.settled, result.holds, result.external_seats) == ((), (), {"vip": 3})
    assert kinds(result) == [ProblemKind.PAYMENT_DIFFERS] * 3
    details = [p.detail for p in result.problems]
    assert "100 KRW for a reservation of 30000 KRW (amount differs)" in details[0]
    assert "30000 USD for a reservation of 30000 KRW (currency differs)" in details[1]
    assert "30000 krw for a reservation of 30000 KRW (currency differs)" in details[2]
    assert all("not imported; its RSVP rsvp-r" in d for d in details)


def test_a_reservation_with_a_matching_payment_beside_a_differing_one_is_settled_by_it() -> None:
    result = plan(
        event(
            rsvps=(rsvp("rsvp-1", "u1"),),
            reservations=(reservation("r1", "u1", rsvp_id="rsvp-1"),),
            payments=(payment("wrong", "r1", amount=5), payment("right", "r1", minute=1)),
        )
    )
    [settled] = result.settled
    assert (settled.reservation.status, settled.payment.payment_row_id) == (
        ReservationStatus.CONFIRMED,
        "right",
    )
    assert kinds(result) == [ProblemKind.PAYMENT_DIFFERS]
    assert "payment wrong (pay_wrong) with 5 KRW" in result.problems[0].detail


def test_a_paid_reservation_of_a_negative_amount_is_listed_and_its_rsvp_keeps_a_seat() -> None:
    result = plan(
        event(
            rsvps=(rsvp("rsvp-1", "u1"),),
            reservations=(reservation("r1", "u1", rsvp_id="rsvp-1", amount=-100),),
            payments=(payment("p1", "r1", amount=-100),),
        )
    )
    assert (result.settled, result.external_seats) == ((), {"vip": 1})
    assert kinds(result) == [ProblemKind.UNUSABLE_RESERVATION]
    assert "has a negative amount, -100 KRW: not imported" in result.problems[0].detail


@pytest.mark.parametrize("checkout_id", ["c" * 129, "chk\x00"], ids=["too-long", "nul"])
def test_a_hold_whose_checkout_no_callback_could_confirm_is_listed_not_imported(
    checkout_id: str,
) -> None:
    # Imported, its payment's callback would be refused (ConfirmPayment takes ids of at most
    # 128 printable characters): a paid hold nothing could settle.
    result = plan(
        event(
            reservations=(
                reservation("h", "u8", status="pending_payment", checkout_id=checkout_id),
            ),
            payments=(payment("hp", "h", status="requires_payment"),),
        )
    )
    assert result.holds == ()
    assert kinds(result) == [ProblemKind.UNUSABLE_RESERVATION]
    assert "which the service could never confirm: not imported" in result.problems[0].detail


def test_a_reservation_naming_another_users_rsvp_is_listed_and_the_owner_keeps_the_seat() -> None:
    result = plan(
        event(
            rsvps=(rsvp("rsvp-1", "u1"), rsvp("rsvp-2", "u2")),
            reservations=(
                reservation("r1", "u1", rsvp_id="rsvp-1"),
                reservation("r2", "u2", rsvp_id="rsvp-1"),
            ),
            payments=(payment("p1", "r1"), payment("p2", "r2")),
        )
    )
    assert by_id(result) == {"r1": (ReservationStatus.CONFIRMED, "rsvp-1")}
    assert result.external_seats == {"vip": 1}  # u2's own RSVP
    assert kinds(result) == [ProblemKind.UNUSABLE_RESERVATION]
    [problem] = result.problems
    assert "r2" in problem.subject
    assert "names RSVP rsvp-1 as its own, but that RSVP is user u1's" in problem.detail
    assert "its RSVP rsvp-2 counts as a seat" in problem.detail


# Postgres's infinity and -infinity as the driver reads them, made aware as the source adapter
# makes every time.
INFINITY, MINUS_INFINITY = read_as_utc(datetime.max), read_as_utc(datetime.min)


def test_a_time_without_a_zone_is_read_as_utc_and_an_aware_one_is_kept() -> None:
    assert read_as_utc(datetime(2030, 5, 1, 12)) == NOW
    kst = NOW.astimezone(timezone(timedelta(hours=9)))
    assert read_as_utc(kst) is kst


def test_only_times_from_1970_to_the_end_of_9999_can_be_kept() -> None:
    assert time_problem("expires_at", NOW) is None
    assert time_problem("paid_at", None) is None
    assert time_problem("x", datetime(1970, 1, 1, tzinfo=UTC)) is None
    assert time_problem("x", datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)) is None
    assert "its expires_at infinity is outside" in (time_problem("expires_at", INFINITY) or "")
    assert "its paid_at -infinity is outside" in (time_problem("paid_at", MINUS_INFINITY) or "")
    before = time_problem("created_at", datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC))
    assert before is not None
    assert "1969-12-31T23:59:59+00:00 is outside the times the service keeps" in before


def test_a_reservation_with_a_time_the_service_cannot_keep_is_listed_and_left_out() -> None:
    endless = replace(reservation("endless", "u1", status="pending_payment"), expires_at=INFINITY)
    result = plan(
        event(
            rsvps=(rsvp("rsvp-2", "u2"),),
            reservations=(endless, reservation("r2", "u2", rsvp_id="rsvp-2")),
            payments=(replace(payment("p2", "r2"), paid_at=MINUS_INFINITY),),
        )
    )
    assert (result.settled, result.holds, result.external_seats) == ((), (), {"vip": 1})
    assert kinds(result) == [ProblemKind.UNUSABLE_RESERVATION] * 2
    details = sorted(p.detail for p in result.problems)
    assert details[0].startswith("its expires_at infinity is outside")
    assert details[1].startswith("its payment p2's paid_at -infinity is outside")


def test_an_event_or_tier_time_the_service_cannot_keep_brings_in_nothing_of_the_event() -> None:
    result = plan(event(tiers=(replace(tier(), closes_at=INFINITY),)))
    assert (result.settings, kinds(result)) == (None, [ProblemKind.UNUSABLE_SETTINGS])
    assert "its tier vip's closes_at infinity is outside" in result.problems[0].detail


def test_answers_within_the_apis_limits_are_kept_and_over_them_say_which_limit() -> None:
    longest = Answer("q", "x" * MAX_ANSWER_LENGTH)
    assert answers_over_limits((longest,)) is None
    assert answers_over_limits(tuple(Answer(f"q{i}", "a") for i in range(MAX_ANSWERS))) is None
    many = tuple(Answer(f"q{i}", "a") for i in range(MAX_ANSWERS + 1))
    assert answers_over_limits(many) == "51 answers (at most 50)"
    too_long = (Answer("q", "x" * (MAX_ANSWER_LENGTH + 1)),)
    assert answers_over_limits(too_long) == "an answer of 4001 characters (at most 4000)"
    # Five answers of 4000 characters of 한 (3 bytes each): each fits, together they do not.
    heavy = tuple(Answer(f"q{i}", "한" * MAX_ANSWER_LENGTH) for i in range(5))
    over = answers_over_limits(heavy)
    assert over == f"60010 bytes of answers (at most {MAX_ANSWERS_BYTES}, question ids included)"


def test_a_hold_and_a_registration_with_answers_over_the_limits_come_in_without_them() -> None:
    huge = [{"questionId": "q1", "answer": "x" * 5_000_000}]
    result = plan(
        event(
            rsvps=(rsvp("rsvp-1", "u1"),),
            reservations=(
                reservation("r1", "u1", rsvp_id="rsvp-1", answers=huge),
                reservation("h", "u2", status="pending_payment", answers=huge),
            ),
            payments=(payment("p1", "r1"),),
        )
    )
    assert by_id(result) == {
        "r1": (ReservationStatus.CONFIRMED, "rsvp-1"),
        "h": (ReservationStatus.PENDING_PAYMENT, None),
    }
    assert [i.reservation.answers for i in (*result.settled, *result.holds)] == [(), ()]
    assert kinds(result) == [ProblemKind.ANSWERS_OVER_LIMITS] * 2
    assert "has an answer of 5000000 characters (at most 4000)" in result.problems[0].detail


def waitlisted_after_paying(payment_id: str | None = "pay_p4") -> SourceEvent:
    return event(
        rsvps=(rsvp("rsvp-1", "u1"), rsvp("rsvp-4", "u4", status="waitlisted")),
        reservations=(
            reservation("r1", "u1", rsvp_id="rsvp-1"),
            reservation("r4", "u4", rsvp_id="rsvp-4"),
        ),
        payments=(
            payment("p1", "r1"),
            replace(payment("p4", "r4"), provider_payment_id=payment_id),
        ),
    )


def test_a_payment_without_a_seat_owes_a_full_refund_when_auto_refund_is_on() -> None:
    result = plan(waitlisted_after_paying())
    owed = {i.reservation.reservation_id: i.refund_owed for i in result.settled}
    assert owed == {"r1": False, "r4": True}
    [unfulfilled] = [i for i in result.settled if i.refund_owed]
    assert (unfulfilled.payment.amount, unfulfilled.payment.provider_payment_id) == (
        30000,
        "pay_p4",
    )


def test_with_auto_refund_off_a_payment_without_a_seat_owes_nothing() -> None:
    result = plan(waitlisted_after_paying(), auto_refund=False)
    assert [i.refund_owed for i in result.settled] == [False, False]
    assert kinds(result) == [ProblemKind.PAID_NOT_ACCEPTED]


def test_a_payment_without_a_seat_or_a_provider_payment_id_is_listed_to_refund_by_hand() -> None:
    result = plan(waitlisted_after_paying(payment_id=None))
    assert by_id(result) == {"r1": (ReservationStatus.CONFIRMED, "rsvp-1")}
    [problem] = result.problems
    assert problem.kind is ProblemKind.PAYMENT_WITHOUT_ID
    assert "refund it by hand if Moim gave it no seat" in problem.detail


def test_the_services_own_live_holds_take_their_seats_before_a_moim_hold_is_kept_live() -> None:
    source = event(
        tiers=(tier(capacity=2),),
        reservations=(reservation("moim-hold", "u3", status="pending_payment"),),
    )
    own = (ServiceHold("its-1", "u1", "vip"), ServiceHold("its-2", "u2", "vip"))
    result = plan(source, held=own)
    assert by_id(result) == {"moim-hold": (ReservationStatus.EXPIRED, None)}
    assert kinds(result) == [ProblemKind.HOLD_OVER_CAPACITY]
    # With one of them, a seat is left for it.
    assert by_id(plan(source, held=own[:1])) == {
        "moim-hold": (ReservationStatus.PENDING_PAYMENT, None)
    }


def test_a_hold_brought_in_before_is_not_counted_twice_when_planned_again() -> None:
    source = event(
        tiers=(tier(capacity=1),),
        reservations=(reservation("moim-hold", "u3", status="pending_payment"),),
    )
    result = plan(source, held=(ServiceHold("moim-hold", "u3", "vip"),))
    assert (by_id(result), result.problems) == (
        {"moim-hold": (ReservationStatus.PENDING_PAYMENT, None)},
        (),
    )


def test_a_moim_hold_of_a_user_who_holds_a_seat_in_the_service_ends() -> None:
    source = event(reservations=(reservation("moim-hold", "u1", status="pending_payment"),))
    result = plan(source, held=(ServiceHold("its-own", "u1", "vip"),))
    assert by_id(result) == {"moim-hold": (ReservationStatus.EXPIRED, None)}
    assert kinds(result) == [ProblemKind.HOLD_OF_REGISTERED_USER]
    assert "holds reservation its-own here" in result.problems[0].detail


def test_a_user_who_gave_up_a_seat_here_and_paid_again_in_moim_gets_a_new_registration() -> None:
    # Moim keeps one RSVP per user and event: the new paid reservation names the same RSVP
    # whose id the cancelled registration has.
    given_up = ServiceRegistration("rsvp-1", "r-first", "u1", "vip", accepted=False)
    source = event(
        rsvps=(rsvp("rsvp-1", "u1"),),
        reservations=(
            reservation("r-first", "u1", rsvp_id="rsvp-1"),
            reservation("r-again", "u1", rsvp_id="rsvp-1"),
        ),
        payments=(payment("p", "r-again", minute=30), payment("first", "r-first")),
    )
    result = plan(source, registered=(given_up,))
    again = next(i.reservation for i in result.settled if i.reservation.reservation_id == "r-again")
    assert again.status is ReservationStatus.CONFIRMED
    assert again.registration_id not in (None, "rsvp-1")
    assert result.problems == ()
    assert plan(source, registered=(given_up,)) == result  # the same id on every import
    assert result.external_seats == {"vip": 0}


@pytest.mark.parametrize(
    ("reservation_status", "payment_status", "rsvp_status", "unknown"),
    [
        ("confirmed", "paid", "ACCEPTED", "RSVP r1 has the unknown status 'ACCEPTED'"),
        ("CONFIRMED", "paid", "accepted", "has the unknown status 'CONFIRMED'"),
        ("confirmed", "PAID", "accepted", "payment p1 has the unknown status 'PAID'"),
        ("PENDING_PAYMENT", "requires_payment", "accepted", "unknown status 'PENDING_PAYMENT'"),
    ],
)
def test_a_status_the_original_never_writes_leaves_its_reservation_out_owing_nothing(
    reservation_status: str, payment_status: str, rsvp_status: str, unknown: str
) -> None:
    result = plan(
        event(
            rsvps=(rsvp("r1", "u1", status=rsvp_status),),
            reservations=(reservation("p1", "u1", status=reservation_status, rsvp_id="r1"),),
            payments=(payment("p1", "p1", status=payment_status),),
        )
    )
    assert by_id(result) == {}
    assert ProblemKind.UNKNOWN_STATUS in kinds(result)
    assert any(unknown in p.detail for p in result.problems)


def test_an_rsvp_of_an_unknown_status_is_listed_and_counts_as_no_seat() -> None:
    result = plan(event(rsvps=(rsvp("odd", "u1", status="ACCEPTED"),)))
    assert result.external_seats == {"vip": 0}
    assert kinds(result) == [ProblemKind.UNKNOWN_STATUS]


def test_an_rsvp_of_a_user_the_service_keeps_a_reservation_of_in_the_tier_is_no_moim_seat() -> None:
    given_up = ServiceRegistration("g1", "s1", "u1", "vip", accepted=False)
    holding = ServiceReservation("s2", "u2", "vip")
    elsewhere = ServiceReservation("s3", "u3", "other")
    # A hold abandoned here seated no one: Moim's seat for that user is still Moim's.
    abandoned = ServiceReservation("s5", "u5", "vip", ended_unpaid=True)
    rsvps = tuple(rsvp(f"r{n}", f"u{n}") for n in range(1, 6))
    result = plan_event(
        event(rsvps=rsvps),
        (given_up,),
        BASE_URL,
        NOW,
        auto_refund=True,
        reconcile=POLICY,
        reserved=(holding, elsewhere, abandoned),
    )
    assert result.external_seats == {"vip": 3}  # u3 (another tier's reservation), u4 and u5


def test_a_live_hold_ending_past_the_hold_length_is_cut_to_it_once() -> None:
    far = reservation("h1", "u1", status="pending_payment", expires_in=timedelta(days=99))
    source = event(reservations=(far,))
    first = plan_event(
        source,
        (),
        BASE_URL,
        NOW,
        auto_refund=True,
        reconcile=POLICY,
        hold_length=timedelta(minutes=10),
    )
    [hold] = first.holds
    assert hold.reservation.status is ReservationStatus.PENDING_PAYMENT
    assert hold.reservation.expire_time == NOW + timedelta(minutes=10)
    assert kinds(first) == [ProblemKind.HOLD_CUT_SHORT]
    again = plan_event(
        source,
        (),
        BASE_URL,
        NOW,
        auto_refund=True,
        reconcile=POLICY,
        reserved=(ServiceReservation("h1", "u1", "vip"),),
    )
    assert kinds(again) == []


def test_an_event_the_service_knows_is_mapped_to_its_own_tiers() -> None:
    own = Tier("vip", "Own VIP", 30000, 2, None, STARTS)
    source = event(
        tiers=(tier("vip"), tier("added")),
        reservations=(reservation("p1", "u1", tier_id="added", rsvp_id="r1"),),
        rsvps=(rsvp("r1", "u1", "added"),),
        payments=(payment("p1", "p1"),),
    )
    result = plan_event(
        source, (), BASE_URL, NOW, auto_refund=True, reconcile=POLICY, service_tiers=(own,)
    )
    assert result.settings is not None
    assert result.settings.tiers == (own,)
    assert by_id(result) == {}
    assert ProblemKind.UNUSABLE_RESERVATION in kinds(result)
