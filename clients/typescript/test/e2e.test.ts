/**
 * The TypeScript client against the real Python service (embedded Postgres, port 0). Each test
 * uses its own event id, so tests share one server without seeing each other's data.
 *
 * The paid registration flow (settings → startPaidRegistration → the user pays → getReservation)
 * runs against `ticketing_service dev`: its sandbox payment service opens the checkout, and
 * "clicking Pay" on the checkout page makes the sandbox send the signed callback to the webhook
 * shim, which calls ConfirmPayment, exactly as in production.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  Code,
  RefundReason,
  RefundState,
  RegistrationEventType,
  ReservationStatus,
  TicketingMode,
  createTicketingClient,
  errorReason,
  type RegistrationEvent,
  type TicketingClient,
} from "../src/index.js";
import { VIP, clickPay, givenPaidEvent, holdSeat, newEventId, rejection } from "./flows.js";
import { startDevStack, startServer, type RunningDevStack, type RunningServer } from "./server.js";

// The sandbox answers at once, after one callback round trip to the shim; this bounds a hang.
const FEED_TIMEOUT_MS = 10_000;

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

describe("the paid registration flow through the dev stack", () => {
  let stack: RunningDevStack;
  let client: TicketingClient;
  before(async () => {
    stack = await startDevStack();
    client = createTicketingClient({ address: stack.address });
  });
  after(async () => {
    await stack?.stop();
  });

  test("clicking Pay confirms the registration; the next user finds it SOLD_OUT", async () => {
    const eventId = newEventId();
    await givenPaidEvent(client, eventId, { ...VIP, capacity: 1 });

    const held = await holdSeat(client, eventId, "user-1");
    assert.ok(
      held.checkoutUrl.startsWith(`${stack.sandboxUrl}/checkout/`),
      `the checkout is not the sandbox's: ${held.checkoutUrl}`,
    );
    const returnedTo = await clickPay(held.checkoutUrl);
    const { reservation } = await client.getReservation({ reservationId: held.reservationId });
    const feed = await registrationEventsOf(client, held.reservationId, 2);
    const soldOut = await rejection(
      client.startPaidRegistration({ eventId, tierId: VIP.tierId, userId: "user-2" }),
    );

    assert.equal(returnedTo, `${stack.sandboxUrl}/events/${eventId}/register?payment=success`);
    assert.equal(reservation?.status, ReservationStatus.CONFIRMED, stack.logTail());
    assert.ok(reservation?.registrationId, "a confirmed reservation has a registration id");
    assert.deepEqual(
      feed.map((event) => [event.type, event.reservation?.status]),
      [
        [RegistrationEventType.RESERVATION_CREATED, ReservationStatus.PENDING_PAYMENT],
        [RegistrationEventType.RESERVATION_CONFIRMED, ReservationStatus.CONFIRMED],
      ],
    );
    assert.equal(feed[1]?.reservation?.registrationId, reservation?.registrationId);
    assert.equal(soldOut.code, Code.FailedPrecondition);
    assert.equal(errorReason(soldOut)?.reason, "SOLD_OUT");
  });

  test("a payment of the wrong amount is PAYMENT_MISMATCH and the hold stays payable", async () => {
    const eventId = newEventId();
    await givenPaidEvent(client, eventId, { ...VIP, capacity: 1 });
    const held = await holdSeat(client, eventId, "user-1");

    const mismatch = await rejection(
      client.confirmPayment({
        reservationId: held.reservationId,
        checkoutId: held.checkoutId,
        paymentId: "e2e-underpaid",
        provider: held.provider,
        amount: held.amount - 1n,
        currencyCode: held.currencyCode,
      }),
    );
    const afterMismatch = await client.getReservation({ reservationId: held.reservationId });
    await clickPay(held.checkoutUrl);
    const afterPaying = await client.getReservation({ reservationId: held.reservationId });

    assert.equal(mismatch.code, Code.FailedPrecondition);
    assert.equal(errorReason(mismatch)?.reason, "PAYMENT_MISMATCH");
    assert.equal(errorReason(mismatch)?.metadata.reservationId, held.reservationId);
    assert.equal(afterMismatch.reservation?.status, ReservationStatus.PENDING_PAYMENT);
    assert.equal(afterPaying.reservation?.status, ReservationStatus.CONFIRMED, stack.logTail());
  });

  test("a seat given up ten days ahead is refunded in full and sold again", async () => {
    const eventId = newEventId();
    const tenDaysAhead = timestampFromDate(new Date(Date.now() + 10 * 24 * 3_600_000));
    await client.updateTicketingSettings({
      eventId,
      eventTitle: "End-to-end test event",
      tiers: [{ ...VIP, capacity: 1 }],
      eventStartTime: tenDaysAhead,
    });
    const held = await holdSeat(client, eventId, "user-1");
    await clickPay(held.checkoutUrl);

    const cancelled = await client.cancelRegistration({
      reservationId: held.reservationId,
      userId: "user-1",
      requestId: "give-up-1",
    });
    const repeated = await client.cancelRegistration({
      reservationId: held.reservationId,
      userId: "user-1",
      requestId: "give-up-1",
    });
    // The dev stack's refund sender runs every two seconds; the sandbox refunds at once.
    const feed = await registrationEventsOf(client, held.reservationId, 4);
    const { reservation } = await client.getReservation({ reservationId: held.reservationId });
    const next = await holdSeat(client, eventId, "user-2");

    assert.equal(cancelled.reservation?.status, ReservationStatus.REGISTRATION_CANCELLED);
    assert.equal(cancelled.refund?.amount, VIP.priceAmount);
    assert.equal(cancelled.refund?.reason, RefundReason.CANCELLATION);
    assert.equal(repeated.refund?.refundId, cancelled.refund?.refundId);
    assert.deepEqual(
      feed.map((event) => event.type),
      [
        RegistrationEventType.RESERVATION_CREATED,
        RegistrationEventType.RESERVATION_CONFIRMED,
        RegistrationEventType.REGISTRATION_CANCELLED,
        RegistrationEventType.REFUND_SUCCEEDED,
      ],
    );
    assert.equal(feed[3]?.refund?.refundId, cancelled.refund?.refundId);
    assert.equal(reservation?.refundedAmount, VIP.priceAmount, stack.logTail());
    assert.deepEqual(
      reservation?.refunds.map((refund) => refund.state),
      [RefundState.SUCCEEDED],
    );
    assert.equal(next.status, ReservationStatus.PENDING_PAYMENT);
  });
});

/**
 * The first `count` feed events about one reservation, in sequence order, followed the way a
 * consumer follows the feed: events are numbered shortly after they commit, so the watch waits
 * for them (up to FEED_TIMEOUT_MS, after which the test fails with the abort).
 */
async function registrationEventsOf(
  client: TicketingClient,
  reservationId: string,
  count: number,
): Promise<RegistrationEvent[]> {
  const events: RegistrationEvent[] = [];
  const stream = client.watchRegistrationEvents(
    { afterSequence: 0n },
    { signal: AbortSignal.timeout(FEED_TIMEOUT_MS) },
  );
  for await (const { event } of stream) {
    if (event?.reservation?.reservationId === reservationId) {
      events.push(event);
    }
    if (events.length === count) {
      break;
    }
  }
  return events;
}
