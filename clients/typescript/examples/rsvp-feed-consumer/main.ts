/**
 * Keeps a Moim-style RSVP table in sync with the ticketing service's registration event feed.
 *
 *   cd clients/typescript
 *   TICKETING_GRPC_ADDRESS=127.0.0.1:50051 RSVP_STORE_FILE=rsvps.json \
 *     node --import tsx examples/rsvp-feed-consumer/main.ts
 *
 * Settings (the webhook shim's names for the same things):
 *   TICKETING_GRPC_ADDRESS   the server, host:port (127.0.0.1:50051)
 *   TICKETING_GRPC_TOKEN     the server's bearer token, if it has one
 *   TICKETING_TLS_CA         PEM file: the CA that signed the server's certificate (TLS)
 *   TICKETING_TLS_CLIENT_CERT, TICKETING_TLS_CLIENT_KEY   PEM files: the client pair (mutual TLS)
 *   RSVP_STORE_FILE          the table and its cursor (./rsvps.json)
 * SIGINT or SIGTERM stops it after the event in hand is committed. A stored cursor ahead of the
 * feed (another environment's, or from before the service's database was restored) stops it
 * with exit code 1.
 */
import { readFileSync } from "node:fs";
import { createTicketingClient, type TlsOptions } from "../../src/index.js";
import { CursorAheadOfFeed, followFeed } from "./consumer.js";
import { FileRsvpStore } from "./rsvp-store.js";

const env = process.env;
const store = await FileRsvpStore.open(env.RSVP_STORE_FILE || "rsvps.json");
const client = createTicketingClient({
  address: env.TICKETING_GRPC_ADDRESS || "127.0.0.1:50051",
  token: env.TICKETING_GRPC_TOKEN,
  tls: tlsFromFiles(
    env.TICKETING_TLS_CA,
    env.TICKETING_TLS_CLIENT_CERT,
    env.TICKETING_TLS_CLIENT_KEY,
  ),
});

const stop = new AbortController();
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => stop.abort());
}
try {
  await followFeed(client, store, { signal: stop.signal, log: (line) => console.log(line) });
  console.log(`stopped after sequence ${await store.lastSequence()}`);
} catch (error) {
  if (!(error instanceof CursorAheadOfFeed)) throw error;
  console.error(`cannot follow the feed: ${error.message}`);
  process.exitCode = 1;
}

function tlsFromFiles(ca?: string, cert?: string, key?: string): TlsOptions | undefined {
  if (!ca && !cert && !key) {
    return undefined;
  }
  const read = (path?: string) => (path ? readFileSync(path) : undefined);
  return { ca: read(ca), cert: read(cert), key: read(key) };
}
