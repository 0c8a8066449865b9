/**
 * A typed client for moim.ticketing.v1.TicketingService: a Connect client speaking gRPC over
 * HTTP/2, plus errorReason() to read the service's rich errors. The messages, enums and the
 * service descriptor are generated into ./gen (scripts/generate-clients; never edit them).
 */
import {
  Code,
  ConnectError,
  createClient,
  type Client,
  type Interceptor,
} from "@connectrpc/connect";
import { BadRequestSchema, ErrorInfoSchema } from "./gen/google/rpc/error_details_pb.js";
import { TicketingService } from "./gen/moim/ticketing/v1/ticketing_service_pb.js";
import { refusedAsUnavailable } from "./refusal.js";
import { DEFAULT_RETRY_POLICY, retryInterceptor, type RetryPolicy } from "./retry.js";
import { createTransport, type TlsOptions } from "./transport.js";

export * from "./gen/moim/ticketing/v1/error_reason_pb.js";
export * from "./gen/moim/ticketing/v1/refund_pb.js";
export * from "./gen/moim/ticketing/v1/registration_event_pb.js";
export * from "./gen/moim/ticketing/v1/reservation_pb.js";
export * from "./gen/moim/ticketing/v1/settings_pb.js";
export * from "./gen/moim/ticketing/v1/ticketing_service_pb.js";
export { Code, ConnectError, DEFAULT_RETRY_POLICY };
export type { Interceptor, RetryPolicy, TlsOptions };

/** The `google.rpc.ErrorInfo` domain of every error the service raises. */
export const ERROR_DOMAIN = "ticketing.moim.social";

/**
 * The deadline of a unary call that names none: generous for the service's short transactions.
 * Only StartPaidRegistration waits on something slower, the payment service, which the server
 * bounds by TICKET_PAYMENT_TIMEOUT_SECONDS (also 10 s by default): when that service hangs, the
 * call ends here as DEADLINE_EXCEEDED, the hold stays, and a repeat of the call is safe.
 */
export const DEFAULT_DEADLINE_MS = 10_000;

/** How often a connection with open calls is pinged, and how long a ping may go unanswered. */
export const DEFAULT_PING_INTERVAL_MS = 30_000;
export const DEFAULT_PING_TIMEOUT_MS = 15_000;

/** The client: one async method per RPC, named in lowerCamel (`startPaidRegistration`, ...). */
export type TicketingClient = Client<typeof TicketingService>;

export interface TicketingClientOptions {
  /** `host:port` (plain HTTP/2 with prior knowledge, or TLS when `tls` is given), or a full
   * `http://` or `https://` base URL. */
  address: string;
  /** The server's TICKETING_GRPC_TOKEN, sent as `authorization: Bearer <token>`; empty: none.
   * Of a comma-separated list (the server's, during a rotation, newest first) the first token is
   * sent, trimmed, as the Python client and the webhook shim do. */
  token?: string;
  /** TLS, and mutual TLS with a client certificate: PEM text, not file paths. Unset: no TLS
   * (unless the address is `https://`, which then trusts Node's default roots). */
  tls?: TlsOptions;
  /** The deadline of each unary call, in ms, covering all its attempts (10 000 unless given;
   * 0: none). A call's own `timeoutMs` overrides it. WatchRegistrationEvents gets none. */
  deadlineMs?: number;
  /** How UNAVAILABLE, ABORTED, server-CANCELLED, SERVER_BUSY and refused-stream unary calls are
   * retried (DEFAULT_RETRY_POLICY for what is not given); false: never. The server stream is never
   * retried. A refused stream that reaches the caller is thrown as UNAVAILABLE either way. */
  retry?: Partial<RetryPolicy> | false;
  /** More interceptors (tracing, request ids), run on every attempt, after the token is set. */
  interceptors?: Interceptor[];
  /** While calls are open (the feed stream above all), the connection is pinged this often, in
   * ms (30 000 unless given; the server answers pings at any rate). A ping unanswered for
   * `pingTimeoutMs` (15 000) ends the connection and its calls with UNAVAILABLE: a quiet feed
   * stream to a server whose machine is gone ends, instead of waiting forever. */
  pingIntervalMs?: number;
  pingTimeoutMs?: number;
}

/** Creates a client; the transport keeps one HTTP/2 session to the server and reuses it. */
export function createTicketingClient(options: TicketingClientOptions): TicketingClient {
  const retry = options.retry === false ? [] : [{ ...DEFAULT_RETRY_POLICY, ...options.retry }];
  const token = sentToken(options.token);
  const interceptors = [
    // Outermost: a refused stream that reaches the caller is UNAVAILABLE; the retry sees it as
    // it came.
    refusedAsUnavailable,
    ...retry.map((policy) => retryInterceptor(policy)),
    // An empty token means none, as an empty TICKETING_GRPC_TOKEN does on the server.
    ...(token ? [bearerToken(token)] : []),
    ...(options.interceptors ?? []),
  ];
  const transport = createTransport({
    address: options.address,
    tls: options.tls,
    deadlineMs: options.deadlineMs ?? DEFAULT_DEADLINE_MS,
    interceptors,
    pingIntervalMs: options.pingIntervalMs ?? DEFAULT_PING_INTERVAL_MS,
    pingTimeoutMs: options.pingTimeoutMs ?? DEFAULT_PING_TIMEOUT_MS,
  });
  return createClient(TicketingService, transport);
}

/** The token sent of `token`: its first comma-separated token that is not blank, trimmed
 * ("" when none), as the server reads its own list. */
function sentToken(token: string | undefined): string {
  return (token ?? "").split(",").map((t) => t.trim()).find((t) => t !== "") ?? "";
}

function bearerToken(token: string): Interceptor {
  const value = `Bearer ${token}`;
  return (next) => async (request) => {
    request.header.set("authorization", value);
    return next(request);
  };
}

/** One invalid request field, as listed in the error's `google.rpc.BadRequest` detail. */
export interface FieldViolation {
  /** The field's path in the request, e.g. `tiers[0].price_amount`. */
  field: string;
  /** Why the value was refused, as a sentence. */
  description: string;
}

/** What a failed call means, read from the error's `google.rpc` details. */
export interface ErrorReason {
  /** The canonical status code, e.g. `Code.NotFound`. */
  code: Code;
  /** The `ErrorInfo` reason, e.g. "SOLD_OUT" (the ErrorReason enum's names). */
  reason: string;
  /** The `ErrorInfo` metadata, keys in lowerCamel (e.g. `reservationId`). */
  metadata: Record<string, string>;
  /** The `BadRequest` field violations; empty unless the code is InvalidArgument. */
  fieldViolations: FieldViolation[];
}

/**
 * Reads the service's reason from an error thrown by a client call. Undefined when the error is
 * not a ConnectError or carries no ErrorInfo of this service (a transport failure, an
 * unimplemented method, a proxy's answer): then use `ConnectError.from(err).code`.
 */
export function errorReason(err: unknown): ErrorReason | undefined {
  if (!(err instanceof ConnectError)) {
    return undefined;
  }
  const info = err.findDetails(ErrorInfoSchema).find((detail) => detail.domain === ERROR_DOMAIN);
  if (info === undefined) {
    return undefined;
  }
  const fieldViolations = err
    .findDetails(BadRequestSchema)
    .flatMap((detail) => detail.fieldViolations)
    .map(({ field, description }) => ({ field, description }));
  return { code: err.code, reason: info.reason, metadata: { ...info.metadata }, fieldViolations };
}
