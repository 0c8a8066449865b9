/**
 * The RSVP feed consumer example against a fake feed: faults at moments a live stack cannot be
 * made to fail on cue.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { ErrorInfoSchema } from "../src/gen/google/rpc/error_details_pb.js";
import {
  Code,
  ConnectError,
  ERROR_DOMAIN,
  ReservationSchema,
  ReservationStatus,
  type Reservation,
  type TicketingClient,
} from "../src/index.js";
import { followFeed } from "../examples/rsvp-feed-consumer/consumer.js";
import { FileRsvpStore } from "../examples/rsvp-feed-consumer/rsvp-store.js";

function pruned(firstRetainedSequence: string): ConnectError {
  return new ConnectError("pruned", Code.OutOfRange, undefined, [
    {
      desc: ErrorInfoSchema,
      value: { reason: "EVENTS_PRUNED", domain: ERROR_DOMAIN, metadata: { firstRetainedSequence } },
    },
  ]);
}

test("a resync whose reads fail backs off and resynchronises, instead of ending", async () => {
  const dir = await mkdtemp(join(tmpdir(), "rsvp-faults-"));
  try {
    const reservation = (status: ReservationStatus): Reservation =>
      create(ReservationSchema, {
        reservationId: "r1",
        eventId: "e1",
        userId: "u1",
        tierId: "vip",
        status,
      });
    const store = await FileRsvpStore.open(join(dir, "store.json"));
    await store.applyEvent(1n, reservation(ReservationStatus.PENDING_PAYMENT));
    const stopped = new AbortController();
    let reads = 0;
    const fake = {
      // Every watch finds the events after the cursor pruned, until the cursor reaches them.
      async *watchRegistrationEvents() {
        if ((await store.lastSequence()) < 9n) throw pruned("10");
        stopped.abort();
      },
      async getReservation() {
        reads += 1;
        if (reads === 1) throw new ConnectError("the service restarts", Code.Unavailable);
        return { reservation: reservation(ReservationStatus.CONFIRMED) };
      },
    } as unknown as TicketingClient;
    const lines: string[] = [];

    await followFeed(fake, store, {
      signal: stopped.signal,
      log: (line) => lines.push(line),
      initialBackoffMs: 1,
    });

    assert.equal(await store.lastSequence(), 9n);
    assert.equal(reads, 2);
    const backedOff = /the feed failed \(Unavailable: the service restarts\); reconnecting/;
    assert.ok(lines.some((line) => backedOff.test(line)), lines.join("\n"));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
