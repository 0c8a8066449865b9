/**
 * Steps of the paid flow that several end-to-end tests take, as the Moim backend and a user's
 * browser take them.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import {
  ConnectError,
  ReservationStatus,
  type Reservation,
  type TicketingClient,
  type TicketingSettings,
} from "../src/index.js";

export const VIP = { tierId: "vip", name: "VIP", priceAmount: 30000n, capacity: 50 };
const HTTP_TIMEOUT_MS = 15_000;

/** Stores settings with one paid tier (VIP unless given); the first step of every paid flow. */
export async function givenPaidEvent(
  client: TicketingClient,
  eventId: string,
  tier: typeof VIP = VIP,
): Promise<TicketingSettings> {
  const { settings } = await client.updateTicketingSettings({
    eventId,
    eventTitle: "End-to-end test event",
    tiers: [tier],
  });
  assert.ok(settings, "UpdateTicketingSettings answered without settings");
  return settings;
}

export function newEventId(prefix = "e2e"): string {
  return `${prefix}-${randomUUID()}`;
}

/** The error a call fails with; fails the test when the call succeeds. */
export async function rejection(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (error) {
    assert.ok(error instanceof ConnectError, `expected a ConnectError, got ${String(error)}`);
    return error;
  }
  assert.fail("expected the call to fail");
}

/** StartPaidRegistration for the VIP tier: a seat held while the user pays at the checkout. */
export async function holdSeat(
  client: TicketingClient,
  eventId: string,
  userId: string,
): Promise<Reservation> {
  const started = await client.startPaidRegistration({ eventId, tierId: VIP.tierId, userId });
  assert.equal(started.requiresPayment, true, "a paid tier requires payment");
  assert.ok(started.reservation, "StartPaidRegistration answered without a reservation");
  assert.equal(started.reservation.status, ReservationStatus.PENDING_PAYMENT);
  assert.ok(started.reservation.checkoutUrl, "the hold has no checkout URL");
  return started.reservation;
}

/**
 * What a user's browser does: loads the sandbox checkout page, submits its "Pay" form (the
 * sandbox sends the signed callback to the shim before answering) and is sent back to Moim.
 * Returns where it is sent.
 */
export async function clickPay(checkoutUrl: string): Promise<string> {
  const page = await fetch(checkoutUrl, { signal: AbortSignal.timeout(HTTP_TIMEOUT_MS) });
  const html = await page.text();
  assert.equal(page.status, 200, html);
  assert.match(html, /<button type=submit id=pay>Pay<\/button>/);
  const action = /<form method=post action='([^']+)'>/.exec(html)?.[1];
  assert.ok(action, `the checkout page has no Pay form:\n${html}`);
  assert.equal(new URL(action, checkoutUrl).href, `${checkoutUrl}/pay`);

  const paid = await fetch(`${checkoutUrl}/pay`, {
    method: "POST",
    redirect: "manual",
    signal: AbortSignal.timeout(HTTP_TIMEOUT_MS),
  });
  const body = await paid.text();
  assert.equal(paid.status, 303, body);
  const location = paid.headers.get("location");
  assert.ok(location, "the 303 has no Location");
  assert.ok(location.endsWith("payment=success"), `redirected to ${location}`);
  return location;
}
