/**
 * Streams the server refused before running their call, and how the client reports them:
 * UNAVAILABLE (retry later), not the INTERNAL that Node's HTTP/2 reset becomes in the transport.
 */
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";

/**
 * The HTTP/2 resets of a stream the server refused before running its call: REFUSED_STREAM, or
 * ENHANCE_YOUR_CALM for the streams past the server's limit that a new connection sent before it
 * learned the limit (its first burst). Node reports them as an error of the stream, which the
 * transport passes on as INTERNAL.
 */
const REFUSED_STREAM = /^Stream closed with error code NGHTTP2_(REFUSED_STREAM|ENHANCE_YOUR_CALM)$/;

/** Whether `error` is the transport's INTERNAL for a stream the server refused unrun. */
export function refusedStream(error: unknown): error is ConnectError {
  if (!(error instanceof ConnectError) || error.code !== Code.Internal) {
    return false;
  }
  const cause = error.cause;
  return cause instanceof Error && REFUSED_STREAM.test(cause.message);
}

/**
 * An interceptor, the outermost, that turns a refused stream which reaches the caller (retries
 * used up, or off) into UNAVAILABLE with the original error as its cause: nothing of the call ran,
 * so the caller's handling of UNAVAILABLE (retry later) is the right one. Inner interceptors, the
 * retry among them, still see the original.
 */
export const refusedAsUnavailable: Interceptor = (next) => async (request) => {
  try {
    const response = await next(request);
    if (!response.stream) {
      return response;
    }
    return { ...response, message: unavailableOnRefusal(response.message) };
  } catch (error) {
    throw asUnavailable(error);
  }
};

async function* unavailableOnRefusal<T>(messages: AsyncIterable<T>): AsyncIterable<T> {
  try {
    yield* messages;
  } catch (error) {
    throw asUnavailable(error);
  }
}

function asUnavailable(error: unknown): unknown {
  if (!refusedStream(error)) {
    return error;
  }
  const reset = error.cause instanceof Error ? error.cause.message : error.rawMessage;
  return new ConnectError(
    `The server refused the call before running it (${reset}); it is safe to send again later.`,
    Code.Unavailable,
    error.metadata,
    undefined,
    error,
  );
}
