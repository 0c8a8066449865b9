"""One event's rows of the original, indexed, and the reservation rows built from them.

Ids are kept: a reservation keeps its id (the payment service's idempotency key is
`reservation:<id>`, and late callbacks name it), a registration takes its RSVP's id (unless a
registration of another reservation has it already), a payment row its own. So a second
import finds every row it made, and changes nothing.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from ticketing_service.domain.moim_plan import (
    ImportedPayment,
    ImportedReservation,
    Problem,
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
    time_problem,
)
from ticketing_service.domain.money import is_known_currency
from ticketing_service.domain.reconciliation import ReconcilePolicy
from ticketing_service.domain.reservations import (
    Answer,
    Reservation,
    ReservationStatus,
    answers_over_limits,
    drop_blank_answers,
    is_usable_id,
    return_urls,
)
from ticketing_service.domain.settings import Tier

# The statuses the original writes (moim-original.md); any other is read as nothing: a row with
# one is listed and left alone, never read as "not accepted" or "not paid" with money to move.
RESERVATION_STATUSES = frozenset({"pending_payment", "confirmed", "expired", "cancelled"})
PAYMENT_STATUSES = frozenset({"requires_payment", "paid"})
RSVP_STATUSES = frozenset({"accepted", "waitlisted", "declined"})

# The payment row of a hold the original recorded none for gets an id fixed by its
# reservation and checkout, so every import makes the same one.
_HOLD_PAYMENT_IDS = uuid.UUID("6d1f3c1e-6f1a-4b8e-9a55-0c7d0e6a4f21")
_REGISTRATION_IDS = uuid.UUID("0b4f6a52-3c1d-4e0a-8f6e-2d9c7b1a5e30")


class EventRows:
    """The rows of one event, who got a seat so far, and what could not be mapped."""

    def __init__(
        self,
        event: SourceEvent,
        tiers: Sequence[Tier],
        registered: Sequence[ServiceRegistration],
        public_base_url: str,
        now: datetime,
        auto_refund: bool,
        reconcile: ReconcilePolicy,
        held: Sequence[ServiceHold] = (),
        owners: Mapping[str, str] | None = None,
        *,
        reserved: Sequence[ServiceReservation] = (),
        hold_length: timedelta = timedelta(minutes=10),
    ) -> None:
        self.event = event
        self.hold_length = hold_length
        # provider payment id -> the reservation it paid first (payment_owners), source-wide.
        self.owners = owners if owners is not None else payment_owners([event])
        self.now = now
        self.auto_refund = auto_refund
        self.reconcile = reconcile
        self.tiers = {t.tier_id: t for t in tiers}
        # What the service already keeps at the event, by user: registrations, and live holds
        # other than those of this source's reservations (this plan decides those again).
        self.registered = {g.user_id: g for g in registered if g.accepted}
        self._registration_ids = {g.registration_id: g.reservation_id for g in registered}
        # Reservations whose registration here was cancelled (the user gave the seat up).
        self.given_up = {g.reservation_id for g in registered if not g.accepted}
        ours = {r.reservation_id for r in event.reservations}
        self.held = {h.user_id: h for h in held if h.reservation_id not in ours}
        # (user, tier) of whoever the service itself keeps a registration of, in any state, or a
        # hold that did not end unpaid: their RSVP in Moim follows the service's (the feed), so
        # it is no seat Moim gave away. A hold that ended unpaid seated no one here: Moim's seat
        # for its user is Moim's. This source's reservations are left out: this plan decides them.
        # Reservations already here: an import never rewrites a hold it finds.
        self.kept_here = {r.reservation_id for r in reserved}
        self.known_here = {(g.user_id, g.tier_id) for g in registered} | {
            (r.user_id, r.tier_id)
            for r in reserved
            if r.reservation_id not in ours and not r.ended_unpaid
        }
        self.paid = paid_payments(event.payments)
        self._payments_of = defaultdict(list)
        for payment in event.payments:
            self._payments_of[payment.reservation_id].append(payment)
        self._rsvps = {r.rsvp_id: r for r in event.rsvps}
        self._rsvp_of_user = {r.user_id: r for r in event.rsvps if r.user_id is not None}
        self._return_urls = return_urls(public_base_url, event.event_id)
        # user id -> the reservation that gave them a seat in this plan, and its tier
        self.seated: dict[str, tuple[str, str]] = {}
        self.problems: list[Problem] = []

    def problem(self, kind: ProblemKind, reservation: SourceReservation, detail: str) -> None:
        """Note a reservation that could not be brought in as it stands."""
        who = "" if reservation.user_id is None else f" (user {reservation.user_id})"
        subject = f"reservation {reservation.reservation_id}{who}"
        self.problems.append(Problem(kind, subject, detail))

    def usable(self, reservation: SourceReservation) -> bool:
        """Whether the reservation has what every reservation here needs (a user, one of the
        event's tiers, a currency the service knows, an amount of 0 or more, and times the
        service can keep, its payments' too); noted when it has not."""
        why = None
        if self.unknown_status(reservation):
            return False
        if reservation.user_id is None:
            why = "has no user (an anonymous reservation)"
        elif reservation.tier_id not in self.tiers:
            why = f"is in tier {reservation.tier_id}, which the event does not have"
        elif not is_known_currency(reservation.currency):
            why = f"is in the unknown currency {reservation.currency!r}"
        elif reservation.amount < 0:
            why = f"has a negative amount, {reservation.amount} {reservation.currency}"
        elif (checkout := self._unusable_checkout(reservation)) is not None:
            why = f"has the checkout id {checkout!r}, which the service could never confirm"
        else:
            why = self._time_problem(reservation)
        if why is not None:
            self.problem(ProblemKind.UNUSABLE_RESERVATION, reservation, why + ": not imported")
        return why is None

    def unknown_status(self, reservation: SourceReservation) -> bool:
        """Whether the reservation or one of its payments has a status the original never
        wrote; noted when it has: nothing is decided on a value not understood."""
        unknown = [
            f"its payment {p.payment_row_id} has the unknown status {p.status!r}"
            for p in self._payments_of[reservation.reservation_id]
            if p.status not in PAYMENT_STATUSES
        ]
        if reservation.status not in RESERVATION_STATUSES:
            unknown.insert(0, f"has the unknown status {reservation.status!r}")
        if unknown:
            detail = "; ".join(unknown) + ": not imported, left as it is"
            self.problem(ProblemKind.UNKNOWN_STATUS, reservation, detail)
        return bool(unknown)

    def _unusable_checkout(self, reservation: SourceReservation) -> str | None:
        """A checkout id of the reservation or its payments no callback could confirm here
        (cut short to be named), if it has one."""
        ids = [
            reservation.checkout_id,
            *(p.checkout_id for p in self._payments_of[reservation.reservation_id]),
        ]
        bad = next((i for i in ids if i is not None and not is_usable_id(i)), None)
        return None if bad is None else cut(bad)

    def _time_problem(self, reservation: SourceReservation) -> str | None:
        """Why a time of the reservation or of its payments cannot be kept, if one cannot."""
        times: list[tuple[str, datetime | None]] = [
            ("expires_at", reservation.expires_at),
            ("created_at", reservation.created_at),
            ("updated_at", reservation.updated_at),
        ]
        for p in self._payments_of[reservation.reservation_id]:
            name = f"payment {p.payment_row_id}'s"
            times += [(f"{name} {column}", value) for column, value in _payment_times(p)]
        return next((why for c, v in times if (why := time_problem(c, v)) is not None), None)

    def rsvp_of(self, reservation: SourceReservation) -> SourceRsvp | None:
        """The RSVP the reservation made (its rsvp_id), else the user's RSVP at the event."""
        by_id = self._rsvps.get(reservation.rsvp_id) if reservation.rsvp_id else None
        if by_id is not None and by_id.user_id == reservation.user_id:
            return by_id
        return None if reservation.user_id is None else self._rsvp_of_user.get(reservation.user_id)

    def foreign_rsvp(self, reservation: SourceReservation) -> SourceRsvp | None:
        """The RSVP the reservation names when it is not its user's: the row cannot be right,
        and the RSVP's id (a registration's id here) belongs to another seat."""
        by_id = self._rsvps.get(reservation.rsvp_id) if reservation.rsvp_id else None
        return by_id if by_id is not None and by_id.user_id != reservation.user_id else None

    def registration_id(self, reservation_id: str, rsvp_id: str) -> str:
        """The id of a new registration: its RSVP's, unless a registration of another
        reservation has it (the user gave that seat up here and paid again in Moim, whose RSVP
        keeps its id); then one fixed by the reservation, so every import makes the same."""
        holder = self._registration_ids.get(rsvp_id)
        if holder is None or holder == reservation_id:
            return rsvp_id
        return str(uuid.uuid5(_REGISTRATION_IDS, reservation_id))

    def has_seat(self, user_id: str) -> bool:
        """Whether the user has a registration here, kept already or planned."""
        return user_id in self.seated or user_id in self.registered

    def reservation(
        self, source: SourceReservation, status: ReservationStatus, checkout_id: str | None
    ) -> Reservation:
        """Our reservation for a usable source reservation, with the service's return URLs."""
        assert source.user_id is not None, "checked by usable()"
        assert source.tier_id is not None, "checked by usable()"
        success_url, cancel_url = self._return_urls
        return Reservation(
            reservation_id=source.reservation_id,
            event_id=self.event.event_id,
            tier_id=source.tier_id,
            user_id=source.user_id,
            status=status,
            amount=source.amount,
            currency_code=source.currency,
            provider=source.provider,
            provider_account_id=source.provider_account_id,
            answers=self._answers(source),
            customer_name=None,
            customer_email=None,
            success_url=success_url,
            cancel_url=cancel_url,
            create_time=source.created_at,
            expire_time=source.expires_at,
            checkout_id=checkout_id,
        )

    def _answers(self, source: SourceReservation) -> tuple[Answer, ...]:
        answers = parse_answers(source.answers_snapshot)
        if answers is None:
            self.problem(
                ProblemKind.UNREADABLE_ANSWERS,
                source,
                "has answers that are not a list of {questionId, answer}: imported without answers",
            )
            return ()
        kept = drop_blank_answers(answers)
        if (over := answers_over_limits(kept)) is not None:
            # Its seat and payment are real; answers the API would refuse are not brought in.
            detail = (
                f"has {over}: imported without its answers (they stay in Moim's"
                " ticket_reservations.answers_snapshot)"
            )
            self.problem(ProblemKind.ANSWERS_OVER_LIMITS, source, detail)
            return ()
        return kept


def cut(text: str, length: int = 40) -> str:
    """`text` shown in at most `length` characters, and marked when it was cut."""
    return text if len(text) <= length else text[:length] + "…"


def _payment_times(payment: SourcePayment) -> tuple[tuple[str, datetime | None], ...]:
    return (
        ("paid_at", payment.paid_at),
        ("created_at", payment.created_at),
        ("updated_at", payment.updated_at),
    )


def paid_payments(payments: Iterable[SourcePayment]) -> defaultdict[str, list[SourcePayment]]:
    """reservation id -> its paid payments, the first paid first. A row that repeats an earlier
    one's provider payment id, amount and currency is the same payment recorded twice (the
    original inserted a row per callback it was sent): it is left out."""
    paid: defaultdict[str, list[SourcePayment]] = defaultdict(list)
    for payment in sorted(payments, key=lambda p: (paid_time(p), p.payment_row_id)):
        if payment.status != "paid":
            continue
        kept = paid[payment.reservation_id]
        if payment.provider_payment_id is None or all(
            (k.provider_payment_id, k.amount, k.currency)
            != (payment.provider_payment_id, payment.amount, payment.currency)
            for k in kept
        ):
            kept.append(payment)
    return paid


def payment_owners(events: Iterable[SourceEvent]) -> dict[str, str]:
    """provider payment id -> the reservation it paid first, across the whole source: the
    original could record one payment against two reservations, and one payment pays for one
    seat."""
    owners: dict[str, tuple[datetime, str, str]] = {}
    for event in events:
        for payment in event.payments:
            pid = payment.provider_payment_id
            if payment.status != "paid" or pid is None:
                continue
            key = (paid_time(payment), payment.payment_row_id, payment.reservation_id)
            if pid not in owners or key < owners[pid]:
                owners[pid] = key
    return {pid: key[2] for pid, key in owners.items()}


def paid_time(payment: SourcePayment) -> datetime:
    """When a payment was paid; its last update for a row the callback left without a time."""
    return payment.paid_at or payment.updated_at


def settled_reservation(
    reservation: Reservation,
    payment: SourcePayment,
    registration_id: str | None,
    source_updated_at: datetime,
) -> ImportedReservation:
    """A paid reservation with its paid payment row (and its registration's id, if seated)."""
    paid_at = paid_time(payment)
    return ImportedReservation(
        reservation=replace(
            reservation,
            paid_time=paid_at,
            payment_id=payment.provider_payment_id,
            registration_id=registration_id,
        ),
        payment=ImportedPayment(
            payment_row_id=payment.payment_row_id,
            checkout_id=reservation.checkout_id or "",
            status="paid",
            provider=payment.provider,
            amount=payment.amount,
            currency_code=payment.currency,
            provider_payment_id=payment.provider_payment_id,
            tx_id=payment.tx_id,
            paid_time=paid_at,
            raw_event=payment.raw_event,
            create_time=payment.created_at,
            update_time=payment.updated_at,
        ),
        update_time=max(source_updated_at, payment.updated_at),
    )


def unpaid_reservation(
    reservation: Reservation, recorded: SourcePayment | None, updated_at: datetime
) -> ImportedReservation:
    """A hold with its `requires_payment` row: the one the original recorded, if it did."""
    checkout_id = reservation.checkout_id or ""
    row_id = uuid.uuid5(_HOLD_PAYMENT_IDS, f"{reservation.reservation_id}/{checkout_id}")
    payment = ImportedPayment(
        payment_row_id=recorded.payment_row_id if recorded else str(row_id),
        checkout_id=checkout_id,
        status="requires_payment",
        provider=reservation.provider,
        amount=reservation.amount,
        currency_code=reservation.currency_code,
        provider_payment_id=None,
        tx_id=None,
        paid_time=None,
        raw_event=None,
        create_time=recorded.created_at if recorded else reservation.create_time,
        update_time=recorded.updated_at if recorded else updated_at,
    )
    return ImportedReservation(reservation, payment, updated_at)


def parse_answers(snapshot: object) -> tuple[Answer, ...] | None:
    """The answers of a snapshot `[{questionId, answer}, ...]`; None if it is not one."""
    if snapshot is None:
        return ()
    if not isinstance(snapshot, list):
        return None
    answers = []
    for item in snapshot:
        if not isinstance(item, dict):
            return None
        question_id, answer = item.get("questionId"), item.get("answer")
        if not isinstance(question_id, str) or not isinstance(answer, str):
            return None
        answers.append(Answer(question_id, answer))
    return tuple(answers)
