/**
 * Moim's side of the feed, as data: the RSVP rows the paid flow gives, a mirror of each
 * reservation's status (for "payment pending" and "refund due" on Moim's pages), and the cursor,
 * the last feed sequence applied. How one reservation changes them is decided here, once; the
 * stores only make each change durable together with the cursor.
 */
import { ReservationStatus, type Reservation } from "../../src/index.js";

/** A row of Moim's `rsvps` table that a paid reservation gave (keyed by event and user). */
export interface RsvpRow {
  eventId: string;
  userId: string;
  tierId: string;
  /** `accepted` while the reservation holds a seat; `declined` once it gave the seat up. */
  status: "accepted" | "declined";
  reservationId: string;
  registrationId: string;
  /** For Moim's `rsvp_answers`: the snapshot taken when the seat was held, blanks dropped. */
  answers: { questionId: string; answer: string }[];
}

/** What Moim keeps of a reservation it learned about, to find it again on a resync. */
export interface ReservationRow {
  eventId: string;
  userId: string;
  tierId: string;
  /** The status's name in lower case: `pending_payment`, `confirmed`, `paid_unfulfilled`, ... */
  status: string;
}

export interface RsvpTable {
  /** The last feed sequence applied; 0 before the first. */
  lastSequence: bigint;
  /** Keyed by `rsvpKey(eventId, userId)`, as Moim's unique (user_id, event_id). */
  rsvps: Map<string, RsvpRow>;
  /** Keyed by reservation id. */
  reservations: Map<string, ReservationRow>;
  /** Every sequence applied, in order: the evidence that none was applied twice. */
  appliedLog: bigint[];
}

export function emptyTable(): RsvpTable {
  return { lastSequence: 0n, rsvps: new Map(), reservations: new Map(), appliedLog: [] };
}

export function rsvpKey(eventId: string, userId: string): string {
  return `${eventId} ${userId}`;
}

/**
 * Brings the table in line with a reservation as it is now. Applying the same state twice
 * changes nothing, so a resync may re-apply what the feed already gave.
 */
export function applyReservation(table: RsvpTable, reservation: Reservation): void {
  const { reservationId, eventId, userId, tierId } = reservation;
  const status = ReservationStatus[reservation.status].toLowerCase();
  table.reservations.set(reservationId, { eventId, userId, tierId, status });
  const key = rsvpKey(eventId, userId);
  if (holdsSeat(reservation)) {
    table.rsvps.set(key, {
      eventId,
      userId,
      tierId,
      status: "accepted",
      reservationId,
      registrationId: reservation.registrationId,
      answers: reservation.answers.map(({ questionId, answer }) => ({ questionId, answer })),
    });
    return;
  }
  // Only the reservation that gave the seat can take it back: an older hold of the same user
  // that expires late must not touch the RSVP a newer one gave.
  const row = table.rsvps.get(key);
  if (row?.reservationId === reservationId && row.status === "accepted") {
    table.rsvps.set(key, { ...row, status: "declined" });
  }
}

function holdsSeat(reservation: Reservation): boolean {
  return reservation.status === ReservationStatus.CONFIRMED && reservation.registrationId !== "";
}
