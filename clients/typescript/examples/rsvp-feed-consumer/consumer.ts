/**
 * Follows WatchRegistrationEvents into an RsvpStore: resumes after the stored sequence, applies
 * each event with its sequence in one commit, reconnects with back-off when the stream drops
 * (or a resync's calls fail), resynchronises when the events it needs were pruned (OUT_OF_RANGE,
 * reason EVENTS_PRUNED), and stops when its cursor is ahead of the feed (OUT_OF_RANGE, reason
 * SEQUENCE_AHEAD_OF_FEED).
 */
import { setTimeout as delay } from "node:timers/promises";
import {
  Code,
  ConnectError,
  errorReason,
  RegistrationEventType,
  type RegistrationEvent,
  type TicketingClient,
} from "../../src/index.js";
import type { RsvpStore } from "./rsvp-store.js";

export interface FollowOptions {
  /** Aborting it ends followFeed() once the event in hand is committed. */
  signal: AbortSignal;
  /** Lines for the operator's log. */
  log?: (line: string) => void;
  /** The first reconnect waits up to this (random, "full jitter"); it doubles per failure. */
  initialBackoffMs?: number;
  /** Reconnects never wait longer than this. */
  maxBackoffMs?: number;
  /**
   * Each watch is ended and reopened after this long. A connection that died silently (no
   * reset ever arrives) would otherwise keep the consumer waiting for events forever.
   */
  watchWindowMs?: number;
}

/**
 * The stored cursor is past the last event the feed numbered, so it belongs to another feed:
 * another environment, or this one before the service's database was restored from a backup.
 * Waiting would skip every event up to the cursor once the feed got there, so followFeed stops
 * with this instead; someone must rebuild the table (the numbers up to the cursor may now name
 * other events, so resetting the cursor alone is not enough after a restore).
 */
export class CursorAheadOfFeed extends Error {
  constructor(
    readonly cursor: bigint,
    readonly lastSequence: bigint,
  ) {
    super(
      `the stored cursor (sequence ${cursor}) is past the feed's last sequence (${lastSequence}):` +
        " it belongs to another feed, or the service's database was restored;" +
        " rebuild the table",
    );
    this.name = "CursorAheadOfFeed";
  }
}

/** Runs until `signal` aborts; resolves then. Rejects with CursorAheadOfFeed (see there). */
export async function followFeed(
  client: TicketingClient,
  store: RsvpStore,
  options: FollowOptions,
): Promise<void> {
  const { signal, log = () => {} } = options;
  let failures = 0;
  while (!signal.aborted) {
    const after = await store.lastSequence();
    try {
      log(`following the feed after sequence ${after}`);
      const stream = client.watchRegistrationEvents(
        { afterSequence: after },
        { signal, timeoutMs: options.watchWindowMs ?? 300_000 },
      );
      for await (const { event } of stream) {
        await apply(store, event, log);
        failures = 0;
      }
    } catch (error) {
      if (signal.aborted) break;
      try {
        failures = await recover(client, store, error, failures, options);
      } catch (failed) {
        // The resync's own calls failed (the service restarting, say): back off, watch again.
        if (failed instanceof CursorAheadOfFeed) throw failed;
        if (signal.aborted) break;
        failures = await backOff(failed, failures, options);
      }
    }
  }
}

async function apply(
  store: RsvpStore,
  event: RegistrationEvent | undefined,
  log: (line: string) => void,
): Promise<void> {
  if (event === undefined) {
    throw new ConnectError("The feed sent a message without an event.", Code.Internal);
  }
  const applied = await store.applyEvent(event.sequence, event.reservation);
  const { reservation, paymentMismatch } = event;
  const what = `${RegistrationEventType[event.type]} ${reservation?.reservationId}`;
  log(`${applied ? "applied" : "skipped, already applied:"} sequence ${event.sequence} ${what}`);
  if (applied && paymentMismatch) {
    // The reservation did not change, but money may have been taken: someone must look.
    log(`payment ${paymentMismatch.paymentId} differs in ${paymentMismatch.fields.join(", ")}`);
  }
}

/** Handles a failed or ended watch; returns the failure count for the next back-off. */
async function recover(
  client: TicketingClient,
  store: RsvpStore,
  error: unknown,
  failures: number,
  options: FollowOptions,
): Promise<number> {
  const reason = errorReason(error);
  if (reason?.reason === "SEQUENCE_AHEAD_OF_FEED") {
    const lastSequence = BigInt(reason.metadata.lastSequence ?? "0");
    throw new CursorAheadOfFeed(await store.lastSequence(), lastSequence);
  }
  if (reason?.reason === "EVENTS_PRUNED") {
    const firstRetained = BigInt(reason.metadata.firstRetainedSequence ?? "0");
    await resync(client, store, firstRetained - 1n, options.log ?? (() => {}));
    return 0;
  }
  if (ConnectError.from(error).code === Code.DeadlineExceeded) {
    return 0; // the watch window ended: reopen at once
  }
  return backOff(error, failures, options);
}

/** Logs the failure, waits its back-off (or until aborted); returns the failure count. */
async function backOff(error: unknown, failures: number, options: FollowOptions): Promise<number> {
  const wait = backoffMs(failures + 1, options);
  const failed = ConnectError.from(error);
  const why = `${Code[failed.code]}: ${failed.rawMessage}`;
  options.log?.(`the feed failed (${why}); reconnecting in ${wait} ms`);
  await delay(wait, undefined, { signal: options.signal }).catch(() => {});
  return failures + 1;
}

/**
 * The events after our cursor are gone, so read every reservation we know as it is now, then
 * resume at the oldest event kept. Replaying kept events over the fresher states is harmless:
 * each event is a reservation's state after a change, so the last one applied is its latest.
 * A reservation created and finished entirely inside the pruned range is unknown to the table;
 * keep the retention (prune-events --older-than-days) longer than any consumer outage.
 */
async function resync(
  client: TicketingClient,
  store: RsvpStore,
  resumeAfter: bigint,
  log: (line: string) => void,
): Promise<void> {
  const ids = await store.knownReservationIds();
  log(`events were pruned: resynchronising ${ids.length} reservations`);
  log(`resuming after sequence ${resumeAfter}`);
  const reservations = [];
  for (const reservationId of ids) {
    const { reservation } = await client.getReservation({ reservationId });
    if (reservation) reservations.push(reservation);
  }
  await store.resync(reservations, resumeAfter);
}

function backoffMs(failures: number, options: FollowOptions): number {
  const initial = options.initialBackoffMs ?? 200;
  const ceiling = Math.min(options.maxBackoffMs ?? 10_000, initial * 2 ** (failures - 1));
  return Math.floor(Math.random() * ceiling);
}
