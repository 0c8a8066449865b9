/**
 * The gRPC transport behind createTicketingClient(): where it connects (plain HTTP/2, TLS or
 * mutual TLS), which interceptors run on each call, and the default deadline of unary calls.
 */
import type { Interceptor, Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import type { SecureClientSessionOptions } from "node:http2";

/**
 * TLS material as PEM text (a string or a Buffer of the file's bytes), never file paths: the
 * caller reads its files or secrets however it keeps them. The client reads them once, when it
 * is created; after rotating a certificate, create a new client (or restart).
 */
export interface TlsOptions {
  /** The CA bundle (PEM, one or more certificates) that signed the server's certificate.
   * Unset: Node's default roots. */
  ca?: string | Buffer;
  /** The client certificate (PEM, chain allowed) for a server with mutual TLS. Needs `key`. */
  cert?: string | Buffer;
  /** The client certificate's private key (PEM). Needs `cert`. */
  key?: string | Buffer;
}

export interface TransportOptions {
  /** `host:port`, or a full `http://` or `https://` base URL. */
  address: string;
  /** Given: the connection uses TLS (an `address` without a scheme becomes `https://`). */
  tls?: TlsOptions;
  /** The deadline of each unary call in ms when the call names none; 0: none. */
  deadlineMs: number;
  /** Run on every call, outermost first. */
  interceptors: Interceptor[];
  /** While calls are open, ping the server this often (ms) ... */
  pingIntervalMs: number;
  /** ... and end the connection and its calls when a ping goes this long unanswered. */
  pingTimeoutMs: number;
}

/** A gRPC transport over one HTTP/2 connection, reused by every call. */
export function createTransport(options: TransportOptions): Transport {
  const transport = createGrpcTransport({
    baseUrl: baseUrl(options.address, options.tls !== undefined),
    interceptors: options.interceptors,
    nodeOptions: nodeTlsOptions(options.tls),
    pingIntervalMs: options.pingIntervalMs,
    pingTimeoutMs: options.pingTimeoutMs,
  });
  return withUnaryDeadline(transport, options.deadlineMs);
}

function baseUrl(address: string, tls: boolean): string {
  if (!address.includes("://")) {
    return `${tls ? "https" : "http"}://${address}`;
  }
  if (tls && !address.startsWith("https://")) {
    throw new Error(`TLS options were given but the address ${address} is not https://.`);
  }
  return address;
}

function nodeTlsOptions(tls: TlsOptions | undefined): SecureClientSessionOptions {
  if (tls === undefined) {
    return {};
  }
  if ((tls.cert === undefined) !== (tls.key === undefined)) {
    throw new Error("Give both tls.cert and tls.key for mutual TLS, or neither.");
  }
  const { ca, cert, key } = tls;
  return { ca, cert, key };
}

/**
 * Gives unary calls that name no `timeoutMs` the default deadline. The server stream
 * (WatchRegistrationEvents) is meant to stay open for as long as its consumer runs, so it gets
 * no default: pass `timeoutMs` (or a signal) to bound it.
 */
function withUnaryDeadline(transport: Transport, deadlineMs: number): Transport {
  return {
    unary: (method, signal, timeoutMs, header, input, contextValues) =>
      transport.unary(method, signal, timeoutMs ?? deadlineMs, header, input, contextValues),
    stream: (method, signal, timeoutMs, header, input, contextValues) =>
      transport.stream(method, signal, timeoutMs, header, input, contextValues),
  };
}
