/**
 * The TypeScript client against the real Python server (embedded Postgres, port 0). Each test
 * uses its own event id, so tests share one server without seeing each other's data.
 *
 * The paid registration flow (settings → startPaidRegistration → confirmPayment →
 * getReservation) belongs in a `describe` of its own here once those RPCs are served: start its
 * server with `startServer({ TICKET_PAYMENT_SERVICE_URL: <a stand-in> })` and reuse
 * givenPaidEvent() for the first step.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";
import {
  Code,
  ConnectError,
  TicketingMode,
  createTicketingClient,
  errorReason,
  type TicketingClient,
  type TicketingSettings,
} from "../src/index.js";
import { startServer, type RunningServer } from "./server.js";

const VIP = { tierId: "vip", name: "VIP", priceAmount: 30000n, capacity: 50 };

describe("the TypeScript client against the ticketing server", () => {
  let server: RunningServer;
  let client: TicketingClient;
  before(async () => {
    server = await startServer();
    client = createTicketingClient({ address: server.address });
  });
  after(async () => {
    await server?.stop();
  });

  test("stores a paid tier and reads it back as a paid event in KRW", async () => {
    const eventId = newEventId();
    await givenPaidEvent(client, eventId);

    const { settings } = await client.getTicketingSettings({ eventId });

    assert.equal(settings?.mode, TicketingMode.PAID);
    assert.equal(settings?.currencyCode, "KRW");
    assert.deepEqual(
      settings?.tiers.map((tier) => [tier.tierId, tier.name, tier.priceAmount, tier.capacity]),
      [[VIP.tierId, VIP.name, VIP.priceAmount, VIP.capacity]],
    );
  });

  test("an event without settings is NOT_FOUND with reason EVENT_NOT_FOUND", async () => {
    const error = await rejection(client.getTicketingSettings({ eventId: newEventId() }));

    assert.equal(error.code, Code.NotFound);
    assert.equal(errorReason(error)?.reason, "EVENT_NOT_FOUND");
  });

  test("a negative price is INVALID_ARGUMENT naming tiers[0].price_amount", async () => {
    const error = await rejection(
      client.updateTicketingSettings({
        eventId: newEventId(),
        tiers: [{ ...VIP, priceAmount: -1n }],
      }),
    );

    const reason = errorReason(error);
    assert.equal(error.code, Code.InvalidArgument);
    assert.equal(reason?.reason, "INVALID_ARGUMENT");
    assert.deepEqual(
      reason?.fieldViolations.map((violation) => violation.field),
      ["tiers[0].price_amount"],
    );
  });
});

describe("the TypeScript client against a server that requires a token", () => {
  let server: RunningServer;
  before(async () => {
    server = await startServer({ TICKETING_GRPC_TOKEN: "s3cret" });
  });
  after(async () => {
    await server?.stop();
  });

  test("a call without the token is UNAUTHENTICATED", async () => {
    const client = createTicketingClient({ address: server.address });

    const error = await rejection(client.getTicketingSettings({ eventId: newEventId() }));

    assert.equal(error.code, Code.Unauthenticated);
    assert.equal(errorReason(error)?.reason, "UNAUTHENTICATED");
  });

  test("a call with a wrong token is UNAUTHENTICATED", async () => {
    const client = createTicketingClient({ address: server.address, token: "guess" });

    const error = await rejection(client.getTicketingSettings({ eventId: newEventId() }));

    assert.equal(errorReason(error)?.reason, "UNAUTHENTICATED");
  });

  test("a call with the token is served", async () => {
    const client = createTicketingClient({ address: server.address, token: "s3cret" });
    const eventId = newEventId();

    await givenPaidEvent(client, eventId);
    const { settings } = await client.getTicketingSettings({ eventId });

    assert.equal(settings?.mode, TicketingMode.PAID);
  });
});

/** Stores settings with the one paid VIP tier; the first step of every paid flow. */
async function givenPaidEvent(client: TicketingClient, eventId: string): Promise<TicketingSettings> {
  const { settings } = await client.updateTicketingSettings({
    eventId,
    eventTitle: "End-to-end test event",
    tiers: [VIP],
  });
  assert.ok(settings, "UpdateTicketingSettings answered without settings");
  return settings;
}

function newEventId(): string {
  return `e2e-${randomUUID()}`;
}

/** The error a call fails with; fails the test when the call succeeds. */
async function rejection(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (error) {
    assert.ok(error instanceof ConnectError, `expected a ConnectError, got ${String(error)}`);
    return error;
  }
  assert.fail("expected the call to fail");
}
