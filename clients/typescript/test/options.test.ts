/** The back-off schedule and the client options that are refused before any connection. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { ErrorInfoSchema } from "../src/gen/google/rpc/error_details_pb.js";
import {
  Code,
  ConnectError,
  DEFAULT_RETRY_POLICY,
  ERROR_DOMAIN,
  type Interceptor,
  type TicketingClientOptions,
  createTicketingClient,
} from "../src/index.js";
import { backoffMs } from "../src/retry.js";

test("the back-off ceiling doubles from initialBackoffMs up to maxBackoffMs", () => {
  const ceiling = (retry: number) => backoffMs(DEFAULT_RETRY_POLICY, retry, () => 1);

  const ceilings = [1, 2, 3, 4, 5, 6].map(ceiling);

  assert.deepEqual(ceilings, [100, 200, 400, 800, 1600, 2000]);
});

test("the back-off is a uniformly random share of its ceiling (full jitter)", () => {
  assert.equal(backoffMs(DEFAULT_RETRY_POLICY, 3, () => 0), 0);
  assert.equal(backoffMs(DEFAULT_RETRY_POLICY, 3, () => 0.5), 200);
});

/** How many attempts a call makes when each is refused with `refusal()`. */
async function attemptsWhen(refusal: () => ConnectError): Promise<number> {
  let attempts = 0;
  const refuse: Interceptor = () => async () => {
    attempts += 1;
    throw refusal();
  };
  const retry = { initialBackoffMs: 1, maxBackoffMs: 1 };
  const client = createTicketingClient({ address: "127.0.0.1:1", retry, interceptors: [refuse] });
  await assert.rejects(client.getTicketingSettings({ eventId: "event-1" }), /refused/);
  return attempts;
}

/** RESOURCE_EXHAUSTED with `reason`, as the server refuses a call. */
function exhausted(reason?: string): () => ConnectError {
  const info = { desc: ErrorInfoSchema, value: { reason, domain: ERROR_DOMAIN } };
  return () => new ConnectError("refused", Code.ResourceExhausted, undefined, reason ? [info] : []);
}

/** INTERNAL caused by an HTTP/2 reset of the stream with `code`, as Node reports one. */
function reset(code: string): () => ConnectError {
  const cause = () => new Error(`Stream closed with error code NGHTTP2_${code}`);
  return () => new ConnectError("refused", Code.Internal, undefined, undefined, cause());
}

test("of RESOURCE_EXHAUSTED refusals, only a busy server's is retried", async () => {
  // Nothing of a call refused SERVER_BUSY ran; a request over the size limit, or one without
  // the service's reason, would only be refused again.
  assert.equal(await attemptsWhen(exhausted("SERVER_BUSY")), DEFAULT_RETRY_POLICY.maxAttempts);
  assert.equal(await attemptsWhen(exhausted("TOO_MANY_WATCHERS")), 1);
  assert.equal(await attemptsWhen(exhausted()), 1);
});

test("a call the server cancelled is retried, one the caller aborted is not", async () => {
  const cancelled = () => new ConnectError("refused", Code.Canceled);
  assert.equal(await attemptsWhen(cancelled), DEFAULT_RETRY_POLICY.maxAttempts);
  let attempts = 0;
  const caller = new AbortController();
  const abortThenRefuse: Interceptor = () => async () => {
    attempts += 1;
    caller.abort();
    throw cancelled();
  };
  const retry = { initialBackoffMs: 1, maxBackoffMs: 1 };
  const client = createTicketingClient({
    address: "127.0.0.1:1",
    retry,
    interceptors: [abortThenRefuse],
  });
  await assert.rejects(
    client.getTicketingSettings({ eventId: "event-1" }, { signal: caller.signal }),
  );
  assert.equal(attempts, 1);
});

test("of INTERNAL failures, only a stream the server refused before running it is retried", async () => {
  const { maxAttempts } = DEFAULT_RETRY_POLICY;
  assert.equal(await attemptsWhen(reset("ENHANCE_YOUR_CALM")), maxAttempts);
  assert.equal(await attemptsWhen(reset("REFUSED_STREAM")), maxAttempts);
  // The server may have run the call, or its answer was broken: tried once.
  assert.equal(await attemptsWhen(reset("INTERNAL_ERROR")), 1);
  assert.equal(await attemptsWhen(() => new ConnectError("refused", Code.Internal)), 1);
});

/** The error a call of a client with `retry` throws when each attempt is refused with `refusal()`. */
async function thrownWhen(
  refusal: () => ConnectError,
  retry: TicketingClientOptions["retry"],
): Promise<ConnectError> {
  const refuse: Interceptor = () => async () => {
    throw refusal();
  };
  const client = createTicketingClient({ address: "127.0.0.1:1", retry, interceptors: [refuse] });
  return rejection(client.getTicketingSettings({ eventId: "event-1" }));
}

async function rejection(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (error) {
    assert.ok(error instanceof ConnectError, `not a ConnectError: ${String(error)}`);
    return error;
  }
  assert.fail("the call succeeded");
}

test("a refused stream the retries did not fix reaches the caller as UNAVAILABLE, the reset its cause", async () => {
  // Nothing of the call ran: the caller's handling of UNAVAILABLE (retry later) applies, where
  // INTERNAL read as an unexplained failure.
  for (const retry of [{ initialBackoffMs: 1, maxBackoffMs: 1 }, false] as const) {
    for (const code of ["REFUSED_STREAM", "ENHANCE_YOUR_CALM"]) {
      const error = await thrownWhen(reset(code), retry);

      assert.equal(error.code, Code.Unavailable, `${code}, retry ${JSON.stringify(retry)}`);
      assert.match(error.rawMessage, new RegExp(`refused the call before running it .*NGHTTP2_${code}`));
      assert.ok(error.cause instanceof ConnectError);
      assert.equal(error.cause.code, Code.Internal);
    }
  }
});

test("an INTERNAL failure that is not a refused stream reaches the caller as it came", async () => {
  const error = await thrownWhen(reset("INTERNAL_ERROR"), false);

  assert.equal(error.code, Code.Internal);
  assert.equal(error.rawMessage, "refused");
});

test("a stream of the feed that the server refused ends with UNAVAILABLE", async () => {
  // The stream opens, then ends with the reset, as Node reports one mid-stream.
  const refuse: Interceptor = () => async (request) => {
    if (!request.stream) {
      throw new Error("only the stream is called here");
    }
    async function* refused(): AsyncIterable<never> {
      throw reset("REFUSED_STREAM")();
    }
    const { service, method } = request;
    const [header, trailer] = [new Headers(), new Headers()];
    return { stream: true, service, method, header, trailer, message: refused() };
  };
  const client = createTicketingClient({ address: "127.0.0.1:1", interceptors: [refuse] });

  const watch = async () => {
    for await (const _ of client.watchRegistrationEvents({})) {
      // no event comes
    }
  };
  const error = await rejection(watch());

  assert.equal(error.code, Code.Unavailable);
});

test("a client certificate without its key is refused", () => {
  assert.throws(
    () => createTicketingClient({ address: "127.0.0.1:1", tls: { cert: "PEM" } }),
    /both tls.cert and tls.key/,
  );
});

test("TLS options with a plain http:// address are refused", () => {
  assert.throws(
    () => createTicketingClient({ address: "http://127.0.0.1:1", tls: {} }),
    /not https:\/\//,
  );
});

test("a retry policy of zero attempts or fractions is refused", () => {
  assert.throws(() => createTicketingClient({ address: "127.0.0.1:1", retry: { maxAttempts: 0 } }));
  assert.throws(
    () => createTicketingClient({ address: "127.0.0.1:1", retry: { initialBackoffMs: 0.5 } }),
  );
});

/** The authorization header a call of a client with `token` carries (no connection is made). */
async function authorizationSent(token: TicketingClientOptions["token"]): Promise<string | null> {
  let sent: string | null = null;
  const record: Interceptor = () => async (request) => {
    sent = request.header.get("authorization");
    throw new ConnectError("recorded", Code.Canceled);
  };
  const client = createTicketingClient({ address: "127.0.0.1:1", token, interceptors: [record] });
  await assert.rejects(client.getTicketingSettings({ eventId: "event-1" }), /recorded/);
  return sent;
}

test("the token is sent as a bearer token", async () => {
  assert.equal(await authorizationSent("s3cret"), "Bearer s3cret");
});

test("of a comma-separated token (the server's, during a rotation) the first is sent, trimmed", async () => {
  assert.equal(await authorizationSent(" new-tok , old-tok"), "Bearer new-tok");
  // Blank entries are skipped, as the server and the shim read the same list.
  assert.equal(await authorizationSent(" ,old-tok"), "Bearer old-tok");
});

test("an empty token, or only separators and spaces, sends no authorization header", async () => {
  assert.equal(await authorizationSent(""), null);
  assert.equal(await authorizationSent(" , "), null);
  assert.equal(await authorizationSent(undefined), null);
});
