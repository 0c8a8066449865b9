/**
 * The RSVP feed consumer example (examples/rsvp-feed-consumer), run as its own process against
 * the dev stack, while users hold seats, pay at the sandbox checkout and cancel. The consumer is
 * killed and restarted in the middle; the table it leaves must be right and every feed event
 * must have been applied exactly once.
 */
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, test } from "node:test";
import {
  ReservationStatus,
  createTicketingClient,
  errorReason,
  type TicketingClient,
} from "../src/index.js";
import { FileRsvpStore, readTable } from "../examples/rsvp-feed-consumer/rsvp-store.js";
import { rsvpKey, type RsvpTable } from "../examples/rsvp-feed-consumer/rsvp-table.js";
import { freePort, tcpProxy } from "./network.js";
import { clickPay, givenPaidEvent, holdSeat, newEventId } from "./flows.js";
import { startDevStack, type RunningDevStack } from "./server.js";

const CLIENT_ROOT = fileURLToPath(new URL("..", import.meta.url));
// The consumer applies an event within milliseconds of its commit; this bounds a stuck one.
const CATCH_UP_TIMEOUT_MS = 20_000;
const POLL_MS = 50;
// Killed when the tests end, whatever state a failing test left them in.
const running = new Set<ChildProcess>();

describe("the RSVP feed consumer example", () => {
  let stack: RunningDevStack;
  let client: TicketingClient;
  let dir: string;
  before(async () => {
    stack = await startDevStack();
    client = createTicketingClient({ address: stack.address });
    dir = await mkdtemp(join(tmpdir(), "rsvp-consumer-"));
  });
  after(async () => {
    running.forEach((child) => child.kill("SIGKILL"));
    await stack?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  test("killed and restarted mid-way, it applies every event exactly once", async () => {
    const storeFile = join(dir, "restarted.json");
    const eventId = newEventId("consumer");
    await givenPaidEvent(client, eventId);
    let consumer = startConsumer(stack, storeFile);

    const made = [await payFor(client, eventId, "user-1")];
    const dropped = await holdSeat(client, eventId, "user-2");
    await client.cancelReservation({ reservationId: dropped.reservationId, userId: "user-2" });
    made.push(dropped.reservationId, await payFor(client, eventId, "user-3"));
    const beforeKill = await caughtUp(client, storeFile, consumer, made);
    consumer.kill("SIGKILL");
    made.push(await payFor(client, eventId, "user-4"));
    const pending = await holdSeat(client, eventId, "user-5");
    made.push(pending.reservationId);
    consumer = startConsumer(stack, storeFile);
    const table = await caughtUp(client, storeFile, consumer, made);
    await consumer.stop();

    assert.deepEqual(table.appliedLog, await feedSequences(client), "each event applied once");
    const resumedAt = `following the feed after sequence ${beforeKill.lastSequence}\n`;
    assert.ok(consumer.output().includes(resumedAt), consumer.output());
    assert.deepEqual(rsvpsOf(table, eventId), {
      "user-1": "accepted",
      "user-3": "accepted",
      "user-4": "accepted",
    });
    assert.equal(table.reservations.get(dropped.reservationId)?.status, "cancelled");
    assert.equal(table.reservations.get(pending.reservationId)?.status, "pending_payment");
  });

  test("when its connection drops, it reconnects with back-off and catches up", async () => {
    const storeFile = join(dir, "reconnected.json");
    const eventId = newEventId("consumer");
    await givenPaidEvent(client, eventId);
    const port = await freePort();
    let proxy = await tcpProxy(port, stack.address);
    const consumer = startConsumer(stack, storeFile, `127.0.0.1:${port}`);
    try {
      const first = await payFor(client, eventId, "user-1");
      await caughtUp(client, storeFile, consumer, [first]);
      await proxy.close(); // the stream drops, and nothing answers until the proxy is back
      const second = await payFor(client, eventId, "user-2");
      proxy = await tcpProxy(port, stack.address);
      const table = await caughtUp(client, storeFile, consumer, [first, second]);
      await consumer.stop();

      assert.match(consumer.output(), /the feed failed \(\w+: .*\); reconnecting in \d+ ms/);
      assert.deepEqual(rsvpsOf(table, eventId), { "user-1": "accepted", "user-2": "accepted" });
    } finally {
      await proxy.close();
    }
  });

  const ahead = "with a cursor ahead of the feed, it stops saying why instead of waiting";
  test(ahead, { timeout: CATCH_UP_TIMEOUT_MS }, async () => {
    const storeFile = join(dir, "ahead.json");
    // As when the service's database was restored from a backup older than the table.
    const store = await FileRsvpStore.open(storeFile);
    await store.applyEvent(1_000_000n, undefined);
    const consumer = startConsumer(stack, storeFile);

    assert.equal(await consumer.exitCode(), 1, consumer.output());
    const said = /cannot follow the feed: the stored cursor \(sequence 1000000\) is past/;
    assert.match(consumer.output(), said);
    assert.match(consumer.output(), /the feed's last sequence \(\d+\): it belongs to another feed/);
  });

  test("after the events it missed were pruned, it resynchronises from the reservations", async () => {
    const storeFile = join(dir, "pruned.json");
    const eventId = newEventId("consumer");
    await givenPaidEvent(client, eventId);
    let consumer = startConsumer(stack, storeFile);
    const held = await holdSeat(client, eventId, "user-1");
    await caughtUp(client, storeFile, consumer, [held.reservationId]);
    await consumer.stop();

    await clickPay(held.checkoutUrl); // confirmed while the consumer is away ...
    await stack.run(["prune-events", "--older-than-days", "0.00000001"]); // ... and pruned
    const later = await holdSeat(client, eventId, "user-2");
    consumer = startConsumer(stack, storeFile);
    const table = await caughtUp(client, storeFile, consumer, [
      held.reservationId,
      later.reservationId,
    ]);
    await consumer.stop();

    assert.match(consumer.output(), /events were pruned: resynchronising/);
    assert.deepEqual(rsvpsOf(table, eventId), { "user-1": "accepted" });
    assert.equal(table.rsvps.get(rsvpKey(eventId, "user-1"))?.reservationId, held.reservationId);
    assert.equal(table.reservations.get(later.reservationId)?.status, "pending_payment");
  });
});

/** The user holds a seat and pays for it at the sandbox checkout; returns the reservation id. */
async function payFor(client: TicketingClient, eventId: string, userId: string): Promise<string> {
  const held = await holdSeat(client, eventId, userId);
  await clickPay(held.checkoutUrl);
  return held.reservationId;
}

/** The RSVP status of each user of one event. */
function rsvpsOf(table: RsvpTable, eventId: string): Record<string, string> {
  const rows = [...table.rsvps.values()].filter((row) => row.eventId === eventId);
  return Object.fromEntries(rows.map((row) => [row.userId, row.status]));
}

/**
 * Every sequence the feed still holds, read page by page with ListRegistrationEvents, from the
 * first retained one when older ones were pruned.
 */
async function feedSequences(client: TicketingClient): Promise<bigint[]> {
  const sequences: bigint[] = [];
  for (let after = await firstRetained(client) - 1n; ; ) {
    const page = await client.listRegistrationEvents({ afterSequence: after, pageSize: 1000 });
    if (page.events.length === 0) return sequences;
    sequences.push(...page.events.map((event) => event.sequence));
    after = page.nextSequence;
  }
}

async function firstRetained(client: TicketingClient): Promise<bigint> {
  try {
    await client.listRegistrationEvents({ afterSequence: 0n, pageSize: 1 });
    return 1n;
  } catch (error) {
    const firstRetainedSequence = errorReason(error)?.metadata.firstRetainedSequence;
    if (firstRetainedSequence === undefined) throw error;
    return BigInt(firstRetainedSequence);
  }
}

/**
 * Waits until the consumer's table shows each reservation as the service has it now, and holds
 * the feed's last event; fails past a bound. Events are numbered shortly after their change
 * commits, so the feed alone may not show the last change yet: the reservations say what to
 * wait for.
 */
async function caughtUp(
  client: TicketingClient,
  storeFile: string,
  consumer: Consumer,
  reservationIds: string[],
): Promise<RsvpTable> {
  const expected = await Promise.all(
    reservationIds.map(async (reservationId) => {
      const { reservation } = await client.getReservation({ reservationId });
      const status = reservation?.status ?? ReservationStatus.UNSPECIFIED;
      return [reservationId, ReservationStatus[status].toLowerCase()] as const;
    }),
  );
  const deadline = Date.now() + CATCH_UP_TIMEOUT_MS;
  for (;;) {
    const table = await readTable(storeFile);
    const last = (await feedSequences(client)).at(-1) ?? 0n;
    const agrees = expected.every(([id, status]) => table.reservations.get(id)?.status === status);
    if (agrees && table.lastSequence >= last) return table;
    if (Date.now() > deadline) {
      const seen = `at sequence ${table.lastSequence} of ${last}, reservations agree: ${agrees}`;
      assert.fail(`the consumer is behind (${seen}):\n${consumer.output()}`);
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

interface Consumer {
  output(): string;
  kill(signal: NodeJS.Signals): void;
  /** SIGTERM, and the clean exit the example promises for it. */
  stop(): Promise<void>;
  /** Once it exited by itself. */
  exitCode(): Promise<number | null>;
}

/** Runs the example as Moim would run it: its own process, configured by environment. */
function startConsumer(
  stack: RunningDevStack,
  storeFile: string,
  address = stack.address,
): Consumer {
  const child: ChildProcess = spawn(
    process.execPath,
    ["--import", "tsx", "examples/rsvp-feed-consumer/main.ts"],
    {
      cwd: CLIENT_ROOT,
      env: { ...process.env, TICKETING_GRPC_ADDRESS: address, RSVP_STORE_FILE: storeFile },
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  running.add(child);
  let output = "";
  child.stdout?.setEncoding("utf8").on("data", (chunk: string) => (output += chunk));
  child.stderr?.setEncoding("utf8").on("data", (chunk: string) => (output += chunk));
  const exited = once(child, "exit") as Promise<[number | null, string | null]>;
  void exited.then(() => running.delete(child));
  return {
    output: () => output,
    kill: (signal) => child.kill(signal),
    stop: async () => {
      child.kill("SIGTERM");
      const [code] = await exited;
      assert.equal(code, 0, `the consumer did not stop cleanly:\n${output}`);
    },
    exitCode: async () => (await exited)[0],
  };
}
