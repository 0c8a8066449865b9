/**
 * Retries of unary calls that failed with UNAVAILABLE or ABORTED, that the server cancelled (not
 * the caller), or that a busy server refused before running them (RESOURCE_EXHAUSTED with reason
 * SERVER_BUSY, or a refused stream): a bounded number of attempts, exponential back-off with
 * full jitter, all inside the call's one deadline.
 *
 * Every unary RPC of the service is safe to retry (the service's contract: reads change nothing,
 * UpdateTicketingSettings replaces the settings with the same ones, StartPaidRegistration answers
 * a repeat with the same hold and checkout, CancelReservation, ConfirmPayment,
 * CancelRegistration and CancelEvent answer a repeat from what is stored, RefundReservation a repeat
 * of its `request_id` with the refund it made). The server stream is never retried: a consumer of
 * WatchRegistrationEvents resumes after the last sequence it applied instead.
 */
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { setTimeout as delay } from "node:timers/promises";
import { ErrorInfoSchema } from "./gen/google/rpc/error_details_pb.js";
import { refusedStream } from "./refusal.js";

export interface RetryPolicy {
  /** Attempts in all, the first included; 1 means no retry. */
  maxAttempts: number;
  /** The back-off ceiling before the first retry, in ms; it doubles with each retry. */
  initialBackoffMs: number;
  /** The back-off ceiling never grows past this, in ms. */
  maxBackoffMs: number;
}

export const DEFAULT_RETRY_POLICY: Readonly<RetryPolicy> = {
  maxAttempts: 4,
  initialBackoffMs: 100,
  maxBackoffMs: 2_000,
};

/**
 * The least time a retry must have left after its back-off. One started in the deadline's last
 * moments could only end in DEADLINE_EXCEEDED, which would hide the error worth reporting.
 */
const LAST_ATTEMPT_ROOM_MS = 20;

/** What a retry may fix: the server or the path to it was briefly away, or a lock conflicted. */
const RETRYABLE = new Set([Code.Unavailable, Code.Aborted]);

/**
 * Whether a retry may fix `error`: a RETRYABLE code, the server running as many calls as it
 * takes, or a refused stream (nothing of the call ran). Other RESOURCE_EXHAUSTED answers, such as
 * a message over the size limit, would only fail again.
 */
function retryable(error: unknown, signal: AbortSignal): boolean {
  const refusal = ConnectError.from(error);
  if (RETRYABLE.has(refusal.code)) {
    return true;
  }
  if (refusal.code === Code.Canceled) {
    // The server's or the transport's (a server flooded with streams cancelled calls it had not
    // run, a stopping one those still running), unless the caller itself aborted the call.
    return !signal.aborted;
  }
  if (refusedStream(error)) {
    return true;
  }
  const busy = (info: { reason: string }) => info.reason === "SERVER_BUSY";
  return refusal.code === Code.ResourceExhausted && refusal.findDetails(ErrorInfoSchema).some(busy);
}

/**
 * How long to wait before retry number `retry` (1 for the first): a uniformly random time up to
 * a ceiling that doubles each time ("full jitter", as gRPC's own retry policy does), so clients
 * that failed together do not come back together.
 */
export function backoffMs(policy: RetryPolicy, retry: number, random: () => number): number {
  const ceiling = Math.min(policy.maxBackoffMs, policy.initialBackoffMs * 2 ** (retry - 1));
  return Math.floor(random() * ceiling);
}

/**
 * An interceptor that retries a failed unary call while the policy allows and the back-off
 * still ends well before the call's deadline; otherwise the last error is thrown as it came.
 */
export function retryInterceptor(
  policy: RetryPolicy,
  random: () => number = Math.random,
): Interceptor {
  validate(policy);
  return (next) => async (request) => {
    if (request.stream) {
      return next(request);
    }
    const deadline = Date.now() + deadlineBudgetMs(request.header);
    for (let attempt = 1; ; attempt += 1) {
      try {
        return await next(request);
      } catch (error) {
        const wait = backoffMs(policy, attempt, random);
        const retry =
          attempt < policy.maxAttempts &&
          retryable(error, request.signal) &&
          Date.now() + wait + LAST_ATTEMPT_ROOM_MS < deadline;
        if (!retry) {
          throw error;
        }
        // A deadline or cancellation during the wait ends the call with its own error.
        await delay(wait, undefined, { signal: request.signal });
        if (Number.isFinite(deadline)) {
          // Tell the server the time that is left, not the whole call's.
          request.header.set(GRPC_TIMEOUT, `${Math.max(1, deadline - Date.now())}m`);
        }
      }
    }
  };
}

function validate(policy: RetryPolicy): void {
  const counts = [policy.maxAttempts, policy.initialBackoffMs, policy.maxBackoffMs];
  if (!counts.every(Number.isInteger) || policy.maxAttempts < 1 || policy.initialBackoffMs < 0) {
    const given = JSON.stringify(policy);
    throw new Error(`A retry policy takes whole numbers of ms and at least 1 attempt: ${given}.`);
  }
}

const GRPC_TIMEOUT = "grpc-timeout";
const TIMEOUT_UNIT_MS: Record<string, number> = {
  H: 3_600_000,
  M: 60_000,
  S: 1_000,
  m: 1,
  u: 0.001,
  n: 0.000_001,
};

/** The call's deadline as the transport wrote it (`grpc-timeout`); none: unbounded. */
function deadlineBudgetMs(header: Headers): number {
  const match = /^(\d{1,8})([HMSmun])$/.exec(header.get(GRPC_TIMEOUT) ?? "");
  return match ? Number(match[1]) * (TIMEOUT_UNIT_MS[match[2] ?? ""] ?? 0) : Infinity;
}
