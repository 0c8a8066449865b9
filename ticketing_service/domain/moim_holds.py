"""Holds of the original (unpaid reservations with a checkout) brought in as holds here.

A hold is brought in live when it may still be paid inside its time and keeps a seat the
service can give: the user has no seat nor live hold here yet, it is that user's latest live
hold (the service keeps one per user and event), and its tier has a seat left after every
registration, every live hold of the service's own and every seat Moim gave away. Any other
hold with a checkout is brought in ended (`expired`, or `cancelled` as in Moim). Moim answered
a callback after a hold's end with 409, and the payment service never sends it again, so such a
hold may well have been paid: reconciliation asks about it at once and follows it up as it
follows up the service's own ended holds, while its reconciliation window lasts (counted, as
there, from its making); a payment found is settled as a late payment (a free seat, else a
refund). A hold without a checkout could never be paid: it is left out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace

from ticketing_service.domain.moim_plan import ImportedReservation, ProblemKind
from ticketing_service.domain.moim_rows import EventRows, unpaid_reservation
from ticketing_service.domain.moim_source import SourceReservation
from ticketing_service.domain.reservations import ReservationStatus

_STATUSES = {
    "pending_payment": ReservationStatus.EXPIRED,  # once its time is over
    "expired": ReservationStatus.EXPIRED,
    "cancelled": ReservationStatus.CANCELLED,
}


def holds(rows: EventRows, external_seats: Mapping[str, int]) -> tuple[ImportedReservation, ...]:
    """Every hold with a checkout: live ones first-come first-served while seats last."""
    candidates = sorted(
        (r for r in rows.event.reservations if _is_hold(rows, r)),
        key=lambda r: (r.created_at, r.reservation_id),
    )
    seats_left = _seats_left(rows, external_seats)
    live = {
        r.reservation_id for r in _may_stay_live(rows, candidates) if _keeps(rows, r, seats_left)
    }
    return tuple(_hold(rows, r, r.reservation_id in live) for r in candidates)


def _is_live(rows: EventRows, reservation: SourceReservation) -> bool:
    return reservation.status == "pending_payment" and reservation.expires_at > rows.now


def _is_hold(rows: EventRows, reservation: SourceReservation) -> bool:
    """An unpaid reservation that can still be paid (it has a checkout) and can be mapped."""
    if rows.paid[reservation.reservation_id] or reservation.status == "confirmed":
        return False  # settled, or listed as a confirmed one without a payment
    if rows.unknown_status(reservation):
        return False
    if reservation.checkout_id is None:
        if _is_live(rows, reservation):  # an ended one was never payable: nothing to say
            detail = "is a live hold whose checkout was never opened (no checkout id): not imported"
            rows.problem(ProblemKind.HOLD_WITHOUT_CHECKOUT, reservation, detail)
        return False
    return rows.usable(reservation)


def _may_stay_live(
    rows: EventRows, candidates: Sequence[SourceReservation]
) -> list[SourceReservation]:
    """The live holds that may keep a seat: each user's latest, if the user has no seat."""
    latest: dict[str, SourceReservation] = {}
    for hold in (r for r in candidates if _is_live(rows, r)):
        assert hold.user_id is not None, "checked by usable()"
        if (earlier := latest.get(hold.user_id)) is not None:
            detail = f"is a live hold, but the user's latest is {hold.reservation_id}"
            rows.problem(ProblemKind.EXTRA_HOLDS, earlier, detail + ": imported as expired")
        latest[hold.user_id] = hold
    for user_id, hold in list(latest.items()):
        if rows.has_seat(user_id):
            detail = "is a live hold of a user who already has a seat: imported as expired"
            rows.problem(ProblemKind.HOLD_OF_REGISTERED_USER, hold, detail)
            del latest[user_id]
        elif (own := rows.held.get(user_id)) is not None:
            # The service keeps one live hold per user and event.
            detail = (
                f"is a live hold of a user who holds reservation {own.reservation_id} here:"
                " imported as expired"
            )
            rows.problem(ProblemKind.HOLD_OF_REGISTERED_USER, hold, detail)
            del latest[user_id]
    return sorted(latest.values(), key=lambda r: (r.created_at, r.reservation_id))


def _seats_left(rows: EventRows, external_seats: Mapping[str, int]) -> Counter[str]:
    """Seats each capped tier can still give before the live holds take theirs: what Moim
    gave away, the service's registrations and its own live holds are taken."""
    taken = Counter(external_seats)
    taken.update(g.tier_id for g in rows.registered.values())
    taken.update(h.tier_id for h in rows.held.values())
    taken.update(tier for user, (_, tier) in rows.seated.items() if user not in rows.registered)
    return Counter(
        {t.tier_id: t.capacity - taken[t.tier_id] for t in rows.tiers.values() if t.capacity}
    )


def _keeps(rows: EventRows, hold: SourceReservation, seats_left: Counter[str]) -> bool:
    """Whether a live hold keeps its seat: its tier is unlimited or has one left."""
    assert hold.tier_id is not None, "checked by usable()"
    if hold.tier_id not in seats_left:
        return True
    if seats_left[hold.tier_id] > 0:
        seats_left[hold.tier_id] -= 1
        return True
    detail = (
        "is a live hold in a tier with no seat left: imported as expired (a payment for it"
        " gets a seat only if one is free by then)"
    )
    rows.problem(ProblemKind.HOLD_OVER_CAPACITY, hold, detail)
    return False


def _hold(rows: EventRows, source: SourceReservation, live: bool) -> ImportedReservation:
    status = ReservationStatus.PENDING_PAYMENT if live else _STATUSES[source.status]
    reservation = rows.reservation(source, status, source.checkout_id)
    if live and reservation.expire_time > (end := rows.now + rows.hold_length):
        # Moim's holds last 10 minutes: a later end is no hold the service would make, and it
        # would keep the seat (and the reservation pending) until then.
        reservation = replace(reservation, expire_time=end)
        if source.reservation_id not in rows.kept_here:  # else brought in (and cut) before
            detail = (
                f"is a live hold until {source.expires_at.isoformat()} in Moim: brought in to"
                f" end by {end.isoformat()}, the service's hold length (TICKETING_HOLD_SECONDS)"
                " from the import"
            )
            rows.problem(ProblemKind.HOLD_CUT_SHORT, source, detail)
    recorded = next(
        (
            p
            for p in rows.event.payments
            if p.reservation_id == source.reservation_id and p.checkout_id == source.checkout_id
        ),
        None,
    )
    imported = unpaid_reservation(reservation, recorded, source.updated_at)
    # A live hold is asked about as the service's own are (early on, then at its end).
    follow_up = not live and rows.reconcile.follows_up(reservation, rows.now)
    return replace(imported, follow_up=follow_up)
