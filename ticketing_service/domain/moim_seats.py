"""Who has a seat: paid reservations of the original settled here, and the seats Moim gave away.

A paid reservation (one with a `paid` payment of its own amount and currency) is confirmed with
a registration, the RSVP's id, when its RSVP is accepted and the user has no other seat;
otherwise it is brought in as `paid_unfulfilled`, owing its payment back in full when auto
refund is on. Of a user's paid reservations the first paid gets the seat. A payment of another
amount or currency settles nothing here: the service would refund the reservation's price for
it, not what was paid.
Accepted RSVPs of anyone left without a registration count as seats taken.
"""

from __future__ import annotations

from dataclasses import replace

from ticketing_service.domain.moim_plan import ImportedReservation, Problem, ProblemKind
from ticketing_service.domain.moim_rows import (
    RSVP_STATUSES,
    EventRows,
    paid_time,
    settled_reservation,
)
from ticketing_service.domain.moim_source import SourcePayment, SourceReservation, SourceRsvp
from ticketing_service.domain.reservations import ReservationStatus


def settled_reservations(rows: EventRows) -> tuple[ImportedReservation, ...]:
    """Every paid reservation: confirmed with its registration, or paid_unfulfilled."""
    paid = [(r, rows.paid[r.reservation_id]) for r in rows.event.reservations]
    for reservation, payments in paid:
        confirmed = not payments and reservation.status == "confirmed"
        if confirmed and not rows.unknown_status(reservation):
            _payment_missing(rows, reservation)
    usable = [(r, p) for r, p in paid if p and rows.usable(r)]
    matching = [(r, _matching(rows, r, p)) for r, p in usable]
    settleable = [(r, p) for r, p in matching if p and _settleable(rows, r, p)]
    settleable.sort(key=lambda rp: (paid_time(rp[1][0]), rp[0].reservation_id))
    return tuple(_settle(rows, r, p[0]) for r, p in settleable)


def external_seats(rows: EventRows) -> dict[str, int]:
    """Per tier, the accepted RSVPs of anyone without a registration here: free tiers,
    attendees from before paid ticketing, paid RSVPs without a payment, anonymous ones. The
    RSVP of a user the service keeps a registration or reservation of in the tier (a seat given
    up here, until Moim hears of it) is the service's seat, not one Moim gave away."""
    counts = dict.fromkeys(rows.tiers, 0)
    for rsvp in rows.event.rsvps:
        if rsvp.status not in RSVP_STATUSES:
            who = "anonymous" if rsvp.user_id is None else f"user {rsvp.user_id}"
            detail = f"has the unknown status {rsvp.status!r}: not counted as a seat"
            rows.problems.append(
                Problem(ProblemKind.UNKNOWN_STATUS, f"RSVP {rsvp.rsvp_id} ({who})", detail)
            )
            continue
        if rsvp.status != "accepted" or (rsvp.user_id and rows.has_seat(rsvp.user_id)):
            continue
        tier_id = _tier_of(rows, rsvp)
        if tier_id is not None and (rsvp.user_id, tier_id) not in rows.known_here:
            counts[tier_id] += 1
    return counts


def _matching(
    rows: EventRows, reservation: SourceReservation, paid: list[SourcePayment]
) -> list[SourcePayment]:
    """The paid payments of the reservation's amount and currency; the others are noted."""
    matching = [p for p in paid if _difference(reservation, p) is None]
    # A payment the service can name (a provider payment id) settles it before one it cannot.
    matching.sort(key=lambda p: p.provider_payment_id is None)
    for payment in paid:
        if (difference := _difference(reservation, payment)) is None:
            continue
        if matching:
            fate = "not imported (a refund may be due); the reservation is settled by another"
        else:
            fate = f"the reservation is not imported; {_standing(rows, reservation)}"
        detail = f"was paid by {_payment_name(payment)} with {difference}: {fate}"
        rows.problem(ProblemKind.PAYMENT_DIFFERS, reservation, detail)
    return matching


def _difference(reservation: SourceReservation, payment: SourcePayment) -> str | None:
    """How the payment differs from what the reservation asks, in numbers; None if it does not.

    Currency codes compare exactly: `krw` is no ISO 4217 code, so it is not KRW.
    """
    differ = [
        name
        for name, paid, asked in (
            ("amount", payment.amount, reservation.amount),
            ("currency", payment.currency, reservation.currency),
        )
        if paid != asked
    ]
    if not differ:
        return None
    verb = "differs" if len(differ) == 1 else "differ"
    return (
        f"{payment.amount} {payment.currency} for a reservation of"
        f" {reservation.amount} {reservation.currency} ({' and '.join(differ)} {verb})"
    )


def _settleable(rows: EventRows, reservation: SourceReservation, paid: list[SourcePayment]) -> bool:
    rsvp = rows.rsvp_of(reservation)
    if rsvp is not None and rsvp.status not in RSVP_STATUSES:
        # Not read as "not accepted": that would owe a refund of a seat Moim may have given.
        detail = f"is paid but its RSVP {rsvp.rsvp_id} has the unknown status {rsvp.status!r}"
        rows.problem(ProblemKind.UNKNOWN_STATUS, reservation, detail + ": not imported")
        return False
    if (foreign := rows.foreign_rsvp(reservation)) is not None:
        owner = "an anonymous one" if foreign.user_id is None else f"user {foreign.user_id}'s"
        detail = (
            f"names RSVP {foreign.rsvp_id} as its own, but that RSVP is {owner}: not imported;"
            f" {_standing(rows, reservation)}"
        )
        rows.problem(ProblemKind.UNUSABLE_RESERVATION, reservation, detail)
        return False
    if (paid[0].checkout_id or reservation.checkout_id) is None:
        detail = "is paid but neither it nor its payment has a checkout id: not imported"
        rows.problem(ProblemKind.UNUSABLE_RESERVATION, reservation, detail)
        return False
    if paid[0].provider_payment_id is None:
        detail = (
            f"is paid by {_payment_name(paid[0])}, which the service could neither confirm nor"
            f" refund: not imported (refund it by hand if Moim gave it no seat);"
            f" {_standing(rows, reservation)}"
        )
        rows.problem(ProblemKind.PAYMENT_WITHOUT_ID, reservation, detail)
        return False
    first_paid = rows.owners.get(paid[0].provider_payment_id)
    if first_paid is not None and first_paid != reservation.reservation_id:
        detail = (
            f"is paid by {_payment_name(paid[0])}, which paid reservation {first_paid} first:"
            f" not imported (one payment, one seat); {_standing(rows, reservation)}"
        )
        rows.problem(ProblemKind.PAYMENT_OF_ANOTHER, reservation, detail)
        return False
    if len(paid) > 1:
        others = ", ".join(_payment_name(p) for p in paid[1:])
        rows.problem(
            ProblemKind.EXTRA_PAYMENTS,
            reservation,
            f"has {len(paid)} paid payments: the first, {_payment_name(paid[0])}, was imported;"
            f" not imported: {others} (a refund may be due)",
        )
    return True


def _settle(
    rows: EventRows, source: SourceReservation, payment: SourcePayment
) -> ImportedReservation:
    registration_id = _seat_for(rows, source)
    status = ReservationStatus.PAID_UNFULFILLED
    if registration_id is not None:
        status = ReservationStatus.CONFIRMED
        assert source.user_id is not None, "checked by usable()"
        assert source.tier_id is not None, "checked by usable()"
        # A seat given up here is left given up (and listed by the writer): it seats no one.
        if source.reservation_id not in rows.given_up:
            rows.seated[source.user_id] = (source.reservation_id, source.tier_id)
    checkout_id = payment.checkout_id or source.checkout_id
    reservation = rows.reservation(source, status, checkout_id)
    imported = settled_reservation(reservation, payment, registration_id, source.updated_at)
    if status is ReservationStatus.PAID_UNFULFILLED and rows.auto_refund:
        return _owing_refund(imported)
    return imported


def _owing_refund(imported: ImportedReservation) -> ImportedReservation:
    """A payment without a seat owes all of it back, as ConfirmPayment's paid_unfulfilled do."""
    if imported.payment.amount == 0:
        return imported  # nothing was taken
    return replace(imported, refund_owed=True)


def _seat_for(rows: EventRows, reservation: SourceReservation) -> str | None:
    """The registration id (its RSVP's) a paid reservation gets, or None (and why, noted)."""
    rsvp = rows.rsvp_of(reservation)
    refusal = _refusal(rows, reservation, rsvp)
    if refusal is not None:
        kind, why = refusal
        rows.problem(kind, reservation, why + ": imported as paid_unfulfilled (a refund is due)")
        return None
    assert rsvp is not None, "refused otherwise"
    assert reservation.user_id is not None, "checked by usable()"
    # A seat the service gave this reservation already (an earlier import's, or its own when a
    # callback or reconciliation reached it first) keeps its registration.
    known = rows.registered.get(reservation.user_id)
    if known is not None:
        return known.registration_id
    return rows.registration_id(reservation.reservation_id, rsvp.rsvp_id)


def _refusal(
    rows: EventRows, reservation: SourceReservation, rsvp: SourceRsvp | None
) -> tuple[ProblemKind, str] | None:
    """Why a paid reservation gets no seat, if it does not."""
    user_id = reservation.user_id
    assert user_id is not None, "checked by usable()"
    if reservation.status != "confirmed":
        return ProblemKind.PAID_NOT_CONFIRMED, f"is {reservation.status} but has a paid payment"
    if user_id in rows.seated:
        first = rows.seated[user_id][0]
        why = f"is the user's second paid reservation for the event ({first} has the seat)"
        return ProblemKind.SECOND_PAID_RESERVATION, why
    if rsvp is None or rsvp.status != "accepted":
        standing = "no RSVP" if rsvp is None else f"RSVP {rsvp.rsvp_id} {rsvp.status}"
        return ProblemKind.PAID_NOT_ACCEPTED, f"is paid but the user has {standing}"
    known = rows.registered.get(user_id)
    if known is not None and known.reservation_id != reservation.reservation_id:
        why = f"is paid but the user already has registration {known.registration_id} here"
        return ProblemKind.REGISTERED_IN_SERVICE, why
    return None


def _payment_missing(rows: EventRows, reservation: SourceReservation) -> None:
    standing = _standing(rows, reservation)
    detail = f"is confirmed but has no paid payment row: not imported; {standing}"
    rows.problem(ProblemKind.PAYMENT_MISSING, reservation, detail)


def _standing(rows: EventRows, reservation: SourceReservation) -> str:
    """What a paid reservation left out stands for: its accepted RSVP's seat, if it has one."""
    rsvp = rows.rsvp_of(reservation)
    if rsvp is not None and rsvp.status == "accepted":
        return f"its RSVP {rsvp.rsvp_id} counts as a seat"
    return "no seat is counted for it"


def _tier_of(rows: EventRows, rsvp: SourceRsvp) -> str | None:
    """The tier an accepted RSVP takes a seat in; None (and why, noted) when it is unclear."""
    who = "anonymous" if rsvp.user_id is None else f"user {rsvp.user_id}"
    subject = f"RSVP {rsvp.rsvp_id} ({who})"
    if rsvp.tier_id in rows.tiers:
        return rsvp.tier_id
    if rsvp.tier_id is None and len(rows.tiers) <= 1:
        return next(iter(rows.tiers), None)  # the one tier, or none to count in
    if rsvp.tier_id is None:
        kind = ProblemKind.TIERLESS_RSVP
        detail = f"is accepted without a tier on an event with {len(rows.tiers)} tiers"
    else:
        kind = ProblemKind.UNKNOWN_TIER
        detail = f"is accepted in tier {rsvp.tier_id}, which the event does not have"
    rows.problems.append(Problem(kind, subject, detail + ": not counted as a seat"))
    return None


def _payment_name(payment: SourcePayment) -> str:
    provider_id = payment.provider_payment_id or "no provider payment id"
    return f"payment {payment.payment_row_id} ({provider_id})"
