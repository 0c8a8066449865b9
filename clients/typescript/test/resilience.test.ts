/**
 * The client's connection options against the real server as it is deployed: mutual TLS
 * (certificates made by openssl for this run) and a bearer token; deadlines against a listener
 * that never answers; retries counted by an interceptor that sees every attempt.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  Code,
  ConnectError,
  TicketingMode,
  createTicketingClient,
  errorReason,
  type Interceptor,
  type TicketingClient,
  type TicketingClientOptions,
} from "../src/index.js";
import { CertificateAuthority, type Issued } from "./certificates.js";
import { newEventId as eventIdWith, rejection } from "./flows.js";
import { freePort, silentListener, tcpProxy, type Listener } from "./network.js";
import { startServer, type RunningServer } from "./server.js";

const TOKEN = "mtls-test-token";
const VIP = { tierId: "vip", name: "VIP", priceAmount: 30000n, capacity: 5 };
// Long enough for any call here to be answered on a busy machine; the deadline tests set their own.
const CALL_DEADLINE_MS = 20_000;
// A deadline that does not fire shows as this test's timeout, not as the whole run's.
const HANG = { timeout: 30_000 };

let serverCa: CertificateAuthority;
let clientCa: CertificateAuthority;
let clientCert: Issued;
let server: RunningServer;

before(async () => {
  serverCa = await CertificateAuthority.create("ticketing-server-ca");
  clientCa = await CertificateAuthority.create("ticketing-client-ca");
  const serverCert = await serverCa.issue("ticketing-server", { server: true });
  clientCert = await clientCa.issue("moim-backend", { server: false });
  server = await startServer({
    TICKETING_TLS_CERT: serverCert.certFile,
    TICKETING_TLS_KEY: serverCert.keyFile,
    TICKETING_TLS_CLIENT_CA: clientCa.certFile,
    TICKETING_GRPC_TOKEN: TOKEN,
    // Nothing listens there: StartPaidRegistration of a paid tier answers UNAVAILABLE.
    TICKET_PAYMENT_SERVICE_URL: `http://127.0.0.1:${await freePort()}`,
  });
});

after(async () => {
  await server?.stop();
  await serverCa?.remove();
  await clientCa?.remove();
});

/** The options the Moim backend uses in production: the server's CA, its client pair, the token. */
function deployed(overrides: Partial<TicketingClientOptions> = {}): TicketingClientOptions {
  return {
    address: server.address,
    token: TOKEN,
    tls: { ca: serverCa.pem, cert: clientCert.cert, key: clientCert.key },
    deadlineMs: CALL_DEADLINE_MS,
    ...overrides,
  };
}

describe("mutual TLS", () => {
  test("a client with a certificate of the client CA is served", async () => {
    const client = createTicketingClient(deployed());
    const eventId = newEventId();

    await client.updateTicketingSettings({ eventId, tiers: [VIP] });
    const { settings } = await client.getTicketingSettings({ eventId });

    assert.equal(settings?.mode, TicketingMode.PAID);
  });

  test("a client without a certificate is cut off before the server answers", async () => {
    const client = createTicketingClient(deployed({ tls: { ca: serverCa.pem } }));

    const error = await rejection(client.getTicketingSettings({ eventId: newEventId() }));

    // The server ends the TLS session; Node reports the stream it was carrying as cancelled.
    assert.equal(error.code, Code.Canceled, error.message);
    assert.equal(errorReason(error), undefined);
  });

  test("a client with a certificate of another CA is cut off too", async () => {
    const stranger = await CertificateAuthority.create("stranger");
    const intruder = await stranger.issue("intruder", { server: false });
    await stranger.remove();
    const tls = { ca: serverCa.pem, cert: intruder.cert, key: intruder.key };
    const client = createTicketingClient(deployed({ tls }));

    const error = await rejection(client.getTicketingSettings({ eventId: newEventId() }));

    assert.equal(error.code, Code.Canceled, error.message);
    assert.equal(errorReason(error), undefined);
  });

  test("a client that trusts another CA refuses the server's certificate", async () => {
    const tls = { ca: clientCa.pem, cert: clientCert.cert, key: clientCert.key };
    const client = createTicketingClient(deployed({ tls }));

    const error = await rejection(client.getTicketingSettings({ eventId: newEventId() }));

    assert.match(error.message, /unable to verify/);
  });

  test("the bearer token is still required over mutual TLS", async () => {
    const client = createTicketingClient(deployed({ token: undefined }));

    const error = await rejection(client.getTicketingSettings({ eventId: newEventId() }));

    assert.equal(errorReason(error)?.reason, "UNAUTHENTICATED");
  });
});

describe("deadlines", () => {
  let silent: Listener;
  before(async () => {
    silent = await silentListener();
  });
  after(async () => {
    await silent?.close();
  });

  test("the client's default deadline ends a call to a server that never answers", HANG, async () => {
    const attempts = new AttemptLog();
    const client = createTicketingClient(
      deployed({ address: silent.address, deadlineMs: 300, interceptors: [attempts.interceptor] }),
    );

    const error = await rejection(client.getTicketingSettings({ eventId: newEventId() }));

    assert.equal(error.code, Code.DeadlineExceeded, error.message);
    assert.equal(attempts.count, 1, "a deadline is not retried");
  });

  test("a call's own timeoutMs overrides the default", HANG, async () => {
    const options = deployed({ address: silent.address, deadlineMs: 600_000 });
    const client = createTicketingClient(options);

    const error = await rejection(
      client.getTicketingSettings({ eventId: newEventId() }, { timeoutMs: 300 }),
    );

    assert.equal(error.code, Code.DeadlineExceeded, error.message);
  });

  test("unary calls carry the 10 s default to the server; the feed stream carries none", async () => {
    const attempts = new AttemptLog();
    const options = deployed({ interceptors: [attempts.interceptor] });
    delete options.deadlineMs;
    const client = createTicketingClient(options);

    await rejection(client.getTicketingSettings({ eventId: newEventId() }));
    const watching = new AbortController();
    const stream = client.watchRegistrationEvents({}, { signal: watching.signal });
    watching.abort(); // the call has started (its headers are recorded); it need not go on
    await rejection(drain(stream));

    assert.deepEqual(attempts.timeouts, ["10000m", null]);
  });
});

describe("retries", () => {
  test("an UNAVAILABLE call is retried and succeeds once the server can be reached", async () => {
    const port = await freePort();
    let proxy: Listener | undefined;
    // Nothing listens on the port for the first attempt; the proxy to the server is up for the
    // next.
    const attempts = new AttemptLog(async () => {
      proxy ??= await tcpProxy(port, server.address);
    });
    // No deadline at all: the retry is bounded by its attempts, and sends no deadline either.
    const options = { address: `127.0.0.1:${port}`, deadlineMs: 0 };
    const client = createTicketingClient(
      deployed({ ...options, interceptors: [attempts.interceptor] }),
    );
    const eventId = newEventId();

    try {
      await client.updateTicketingSettings({ eventId, tiers: [VIP] });
    } finally {
      await proxy?.close();
    }

    assert.deepEqual(attempts.codes, [Code.Unavailable, "ok"]);
    assert.deepEqual(attempts.timeouts, [null, null]);
  });

  test("the server's UNAVAILABLE is retried up to maxAttempts, always for the same hold", async () => {
    const attempts = new AttemptLog();
    const client = createTicketingClient(deployed({ interceptors: [attempts.interceptor] }));
    const eventId = newEventId();
    await client.updateTicketingSettings({ eventId, tiers: [VIP] });
    attempts.clear();

    const error = await rejection(
      client.startPaidRegistration({ eventId, tierId: VIP.tierId, userId: "user-1" }),
    );

    assert.equal(errorReason(error)?.reason, "PAYMENT_SERVICE_UNAVAILABLE");
    assert.deepEqual(attempts.codes, Array(4).fill(Code.Unavailable));
    const holds = new Set(attempts.errors.map((each) => errorReason(each)?.metadata.reservationId));
    assert.equal(holds.size, 1, `one hold for every attempt, got ${[...holds].join(", ")}`);
    // Each retry tells the server the time left of the call's one deadline, not a fresh one.
    const budgets = attempts.timeouts.map((timeout) => Number.parseInt(timeout ?? ""));
    assert.equal(budgets[0], CALL_DEADLINE_MS);
    assert.ok(budgets.slice(1).every((left) => left < CALL_DEADLINE_MS), `${budgets}`);
  });

  test("a FAILED_PRECONDITION is answered at once, without a retry", async () => {
    const attempts = new AttemptLog();
    const client = createTicketingClient(deployed({ interceptors: [attempts.interceptor] }));
    const eventId = newEventId();
    const closed = { ...VIP, saleEndTime: timestampFromDate(new Date(Date.now() - 3_600_000)) };
    await client.updateTicketingSettings({ eventId, tiers: [closed] });
    attempts.clear();

    const error = await rejection(
      client.startPaidRegistration({ eventId, tierId: VIP.tierId, userId: "user-1" }),
    );

    assert.equal(errorReason(error)?.reason, "TIER_NOT_ON_SALE");
    assert.deepEqual(attempts.codes, [Code.FailedPrecondition]);
  });

  test("the feed stream is not retried", async () => {
    const attempts = new AttemptLog();
    const address = `127.0.0.1:${await freePort()}`;
    const options = deployed({ address, interceptors: [attempts.interceptor] });
    const client = createTicketingClient(options);

    const error = await rejection(drain(client.watchRegistrationEvents({})));

    assert.equal(error.code, Code.Unavailable, error.message);
    assert.deepEqual(attempts.codes, [Code.Unavailable]);
  });

  test("retries stop when the next back-off would end past the call's deadline", async () => {
    const attempts = new AttemptLog();
    const address = `127.0.0.1:${await freePort()}`;
    const retry = { maxAttempts: 1_000, initialBackoffMs: 20, maxBackoffMs: 20 };
    const client = createTicketingClient(
      deployed({ address, deadlineMs: 500, retry, interceptors: [attempts.interceptor] }),
    );

    const error = await rejection(client.getTicketingSettings({ eventId: newEventId() }));

    // The last attempt's own error, not DEADLINE_EXCEEDED from a back-off cut short.
    assert.equal(error.code, Code.Unavailable, error.message);
    const { count } = attempts;
    assert.ok(1 < count && count < retry.maxAttempts, `${count} attempts`);
  });
});

describe("a busy server", () => {
  // One call at a time: an open feed stream holds the server's only place.
  let busy: RunningServer;
  before(async () => {
    busy = await startServer({ TICKETING_GRPC_MAX_CONCURRENT_RPCS: "1" });
    const client = createTicketingClient({ address: busy.address });
    await client.updateTicketingSettings({ ...SOME, tiers: [VIP] });
  });
  after(async () => {
    await busy?.stop();
  });

  /** Whether the server refuses a call as busy now (any other failure fails the test). One
   * connection for every question: one each passed the server's connection limit while a
   * loaded machine was slow to open the stream. */
  let asking: TicketingClient;
  async function refusedAsBusy(): Promise<boolean> {
    asking ??= createTicketingClient({ address: busy.address, retry: false });
    try {
      await asking.getTicketingSettings(SOME);
      return false;
    } catch (error) {
      assert.equal(errorReason(error)?.reason, "SERVER_BUSY", String(error));
      return true;
    }
  }

  /** Opens a feed stream; returns its switch once the server refuses other calls as busy. A
   * stream that came while a question held the place was itself refused: it is opened again. */
  async function occupy(): Promise<AbortController> {
    const client = createTicketingClient({ address: busy.address });
    const end = Date.now() + BUSY_WAIT_MS;
    for (;;) {
      const watching = new AbortController();
      let open = true;
      drain(client.watchRegistrationEvents({}, { signal: watching.signal }))
        .catch(() => {})
        .finally(() => (open = false));
      while (open) {
        if (await refusedAsBusy()) {
          return watching;
        }
        assert.ok(Date.now() < end, `the feed stream took no place\n${busy.logTail()}`);
      }
    }
  }

  /** Asks `check` until it is true; fails the test naming `what` after BUSY_WAIT_MS. */
  async function until(check: () => Promise<boolean>, what: () => string): Promise<void> {
    const end = Date.now() + BUSY_WAIT_MS;
    while (!(await check())) {
      assert.ok(Date.now() < end, `${what()}\n${busy.logTail()}`);
    }
  }

  test("a call refused SERVER_BUSY is retried, and served once a place is free", async () => {
    const watching = await occupy();
    const attempts = new AttemptLog(async () => {
      watching.abort();
      await until(async () => !(await refusedAsBusy()), () => "the stream's place stayed taken");
    });
    const client = createTicketingClient({
      address: busy.address,
      interceptors: [attempts.interceptor],
    });

    await client.getTicketingSettings(SOME);

    assert.deepEqual(attempts.codes, [Code.ResourceExhausted, "ok"]);
    assert.equal(errorReason(attempts.errors[0])?.reason, "SERVER_BUSY");
  });
});

describe("a new connection's first burst", () => {
  // Four calls at a time, eight streams per connection.
  let small: RunningServer;
  before(async () => {
    small = await startServer({ TICKETING_GRPC_MAX_CONCURRENT_RPCS: "4" });
  });
  after(async () => {
    await small?.stop();
  });

  test("streams the server reset before the client learned its limit are retried", async () => {
    // A connection's first calls go out before the server's settings arrive; the server resets
    // the streams past its limit (ENHANCE_YOUR_CALM) without running them. 92 of 100 calls
    // failed INTERNAL, not retried.
    const attempts = new AttemptLog();
    // Generous: what is shown is which failures are retried, not how soon a burst is served.
    const retry = { maxAttempts: 50, initialBackoffMs: 20, maxBackoffMs: 200 };
    const client = createTicketingClient({
      address: small.address,
      retry,
      deadlineMs: CALL_DEADLINE_MS,
      interceptors: [attempts.interceptor],
    });
    const eventId = newEventId();

    const answers = await Promise.all(
      Array.from({ length: 100 }, () => rejection(client.getTicketingSettings({ eventId }))),
    );

    // Each call was served: the service's own answer for an event it does not know.
    assert.deepEqual(
      answers.filter((error) => error.code !== Code.NotFound).map((error) => error.message),
      [],
    );
    const reset = attempts.errors.filter((error) => error.code === Code.Internal);
    assert.ok(reset.length > 0, `no stream was reset: ${attempts.codes.join(", ")}`);
  });
});

const SOME = { eventId: "busy-server-event" };
// Far past the time a stream takes to open or close on a loaded machine.
const BUSY_WAIT_MS = 20_000;

/**
 * An interceptor that records each attempt the retry makes: its outcome and the deadline it
 * carried. `onFailure` runs after a failed attempt, before the retry sees the failure.
 */
class AttemptLog {
  readonly codes: (Code | "ok")[] = [];
  readonly errors: ConnectError[] = [];
  readonly timeouts: (string | null)[] = [];

  constructor(private readonly onFailure: () => Promise<void> = async () => {}) {}

  get count(): number {
    return this.codes.length;
  }

  clear(): void {
    this.codes.length = this.errors.length = this.timeouts.length = 0;
  }

  readonly interceptor: Interceptor = (next) => async (request) => {
    this.timeouts.push(request.header.get("grpc-timeout"));
    try {
      const response = await next(request);
      this.codes.push("ok");
      return response;
    } catch (error) {
      const connectError = ConnectError.from(error);
      this.codes.push(connectError.code);
      this.errors.push(connectError);
      await this.onFailure();
      throw error;
    }
  };
}

describe("a server that is gone", () => {
  test("a quiet feed stream ends UNAVAILABLE once a ping goes unanswered", HANG, async () => {
    // The server's machine died, or its network dropped without a reset: a feed stream with
    // nothing to say waited on it forever (the stream has no deadline).
    const proxy = await tcpProxy(0, server.address);
    try {
      // An unanswered ping ends the stream 1 s on.
      const client = createTicketingClient(
        deployed({ address: proxy.address, pingIntervalMs: 10_000, pingTimeoutMs: 1_000 }),
      );
      await rejection(client.getTicketingSettings({ eventId: newEventId() })); // connected
      const watching = rejection(drain(client.watchRegistrationEvents({})));
      proxy.silence();

      const error = await watching;

      assert.equal(error.code, Code.Unavailable, error.message);
    } finally {
      await proxy.close();
    }
  });
});

function newEventId(): string {
  return eventIdWith("resilience");
}

async function drain(stream: AsyncIterable<unknown>): Promise<void> {
  for await (const _ of stream);
}
