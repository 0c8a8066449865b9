/**
 * Runs the real Python service for end-to-end tests, with an embedded Postgres in a fresh data
 * directory: `ticketing_service serve` on port 0, ready once it logs the port it bound, or
 * `ticketing_service dev` (server, webhook shim, sandbox payment service) on ports 0, ready once
 * it prints its banner of addresses.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const REPO_ROOT = fileURLToPath(new URL("../../..", import.meta.url));
const READY = /serving moim\.ticketing\.v1\.TicketingService on [\d.]+:(\d+)/;
// The dev stack's banner (stdout), printed once every part is listening.
const DEV_BANNER = [
  /^\s*gRPC server\s+([\d.]+:\d+)\s/,
  /^\s*webhook shim\s+(http:\/\/\S+)/,
  /^\s*payment sandbox\s+(http:\/\/\S+)/,
];
// uv, the embedded Postgres (initdb, start) and the migrations take a few seconds; a minute means
// something is wrong, and the log tail in the error says what.
const START_TIMEOUT_MS = 60_000;
// The server finishes in-flight calls and stops Postgres on SIGTERM; this bounds a hung shutdown.
const STOP_TIMEOUT_MS = 20_000;
const LOG_TAIL_LINES = 60;

export interface RunningServer {
  /** `127.0.0.1:<port>`, for createTicketingClient({ address }). */
  readonly address: string;
  /** The last lines the server logged, for a failing test's message. */
  logTail(): string;
  /**
   * Runs another `ticketing_service` command (e.g. `prune-events`) on the server's database:
   * the embedded Postgres in the same data directory is reused, not started again.
   */
  run(args: string[]): Promise<void>;
  /** Sends SIGTERM, waits for the exit (SIGKILL past a bound) and removes the data directory. */
  stop(): Promise<void>;
}

/**
 * Starts a server with the given extra environment (e.g. TICKETING_GRPC_TOKEN). DATABASE_URL and
 * TICKETING_GRPC_TOKEN are never inherited from the caller's environment. `serve` needs a payment
 * service URL and token: unless `env` names them, a port nothing listens on and a placeholder (no
 * test here opens a checkout through a bare server; the paid flow runs on the dev stack).
 */
export async function startServer(env: Record<string, string> = {}): Promise<RunningServer> {
  const serverEnv = {
    TICKET_PAYMENT_SERVICE_URL: "http://127.0.0.1:9",
    TICKET_PAYMENT_SERVICE_TOKEN: "e2e-payment-token",
    ...env,
  };
  const { log, stop, run } = await spawnService("the ticketing server", serverEnv, [
    "serve",
    "--listen",
    "127.0.0.1:0",
  ]);
  try {
    const [port] = await log.waitFor([READY], START_TIMEOUT_MS);
    return { address: `127.0.0.1:${port}`, logTail: () => log.text(), run, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

export interface RunningDevStack extends RunningServer {
  /** The webhook shim's callback URL, `http://127.0.0.1:<port>/api/ticket-payment-callbacks`. */
  readonly webhookUrl: string;
  /** The sandbox payment service's base URL, `http://127.0.0.1:<port>` (checkout pages). */
  readonly sandboxUrl: string;
}

/**
 * Starts `ticketing_service dev` (embedded Postgres, gRPC server, webhook shim, sandbox payment
 * service, all on port 0) and reads their addresses from the banner it prints on stdout.
 */
export async function startDevStack(env: Record<string, string> = {}): Promise<RunningDevStack> {
  const { log, stop, run } = await spawnService("the dev stack", env, [
    "dev",
    "--grpc-listen",
    "127.0.0.1:0",
    "--webhook-listen",
    "127.0.0.1:0",
    "--sandbox-listen",
    "127.0.0.1:0",
  ]);
  try {
    const [address = "", webhookUrl = "", sandboxUrl = ""] = await log.waitFor(
      DEV_BANNER,
      START_TIMEOUT_MS,
    );
    return { address, webhookUrl, sandboxUrl, logTail: () => log.text(), run, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

/**
 * Spawns `python -m ticketing_service <args>` under uv with a fresh embedded-Postgres data
 * directory; DATABASE_URL and TICKETING_GRPC_TOKEN are never inherited from the caller.
 */
async function spawnService(
  name: string,
  env: Record<string, string>,
  args: string[],
): Promise<{ log: LogTail; stop: () => Promise<void>; run: (args: string[]) => Promise<void> }> {
  const dataDir = await mkdtemp(join(tmpdir(), "ticketing-e2e-"));
  const childEnv: NodeJS.ProcessEnv = { ...process.env };
  delete childEnv.DATABASE_URL;
  delete childEnv.TICKETING_GRPC_TOKEN;
  Object.assign(childEnv, env, { TICKETING_DATA_DIR: dataDir });
  const child = spawnCommand(childEnv, args);
  return {
    log: new LogTail(child, name),
    stop: () => stopServer(child, dataDir),
    run: (more) => runToEnd(spawnCommand(childEnv, more), more.join(" ")),
  };
}

function spawnCommand(env: NodeJS.ProcessEnv, args: string[]): ChildProcess {
  return spawn("uv", ["run", "--frozen", "python", "-m", "ticketing_service", ...args], {
    cwd: REPO_ROOT,
    env,
    stdio: ["ignore", "pipe", "pipe"],
  });
}

/** Waits for a command to exit (bounded); rejects with its output unless it exits with 0. */
async function runToEnd(child: ChildProcess, name: string): Promise<void> {
  const log = new LogTail(child, `ticketing_service ${name}`);
  const timer = setTimeout(() => child.kill("SIGKILL"), START_TIMEOUT_MS);
  const [code, signal] = (await once(child, "exit")) as [number | null, string | null];
  clearTimeout(timer);
  if (code !== 0) {
    throw new Error(`ticketing_service ${name} ended with ${code ?? signal}:\n${log.text()}`);
  }
}

/**
 * Keeps reading stdout and stderr (a full pipe would block the service) and remembers the last
 * lines of both, interleaved as they arrive.
 */
class LogTail {
  private readonly lines: string[] = [];
  private readonly partial = new Map<NodeJS.ReadableStream, string>();
  private readonly waiters = new Set<(line: string) => void>();

  constructor(
    private readonly child: ChildProcess,
    private readonly name: string,
  ) {
    for (const stream of [child.stdout, child.stderr]) {
      stream?.setEncoding("utf8");
      stream?.on("data", (chunk: string) => this.take(stream, chunk));
    }
  }

  text(): string {
    return [...this.lines, ...[...this.partial.values()].filter(Boolean)].join("\n");
  }

  /**
   * Resolves, once a line has matched each of `patterns`, with the first capture group of each
   * pattern's first matching line (in the order of `patterns`).
   */
  waitFor(patterns: RegExp[], timeoutMs: number): Promise<string[]> {
    const found = new Map<number, string>();
    return new Promise((resolve, reject) => {
      const finish = (outcome: () => void) => {
        clearTimeout(timer);
        this.waiters.delete(onLine);
        this.child.off("exit", onExit).off("error", onError);
        outcome();
      };
      const onLine = (line: string) => {
        patterns.forEach((pattern, index) => {
          const match = found.has(index) ? null : pattern.exec(line);
          if (match) found.set(index, match[1] ?? "");
        });
        if (found.size === patterns.length) {
          finish(() => resolve(patterns.map((_, index) => found.get(index) ?? "")));
        }
      };
      const missing = () => patterns.filter((_, index) => !found.has(index)).join(", ");
      const onExit = (code: number | null, signal: string | null) =>
        finish(() => reject(this.failure(`exited (code ${code}, signal ${signal}) before serving`)));
      const onError = (error: Error) =>
        finish(() => reject(this.failure(`could not be started (${error.message}); is uv on PATH?`)));
      const timeout = () => this.failure(`did not print ${missing()} within ${timeoutMs} ms`);
      const timer = setTimeout(() => finish(() => reject(timeout())), timeoutMs);
      this.waiters.add(onLine);
      this.child.on("exit", onExit).on("error", onError);
    });
  }

  private take(stream: NodeJS.ReadableStream, chunk: string): void {
    const parts = ((this.partial.get(stream) ?? "") + chunk).split("\n");
    this.partial.set(stream, parts.pop() ?? "");
    for (const line of parts) {
      this.lines.push(line);
      if (this.lines.length > LOG_TAIL_LINES) this.lines.shift();
      for (const waiter of [...this.waiters]) waiter(line);
    }
  }

  private failure(what: string): Error {
    const name = this.name.charAt(0).toUpperCase() + this.name.slice(1);
    return new Error(`${name} ${what}. Its last output lines:\n${this.text()}`);
  }
}

async function stopServer(child: ChildProcess, dataDir: string): Promise<void> {
  if (child.exitCode === null && child.signalCode === null) {
    const exited = once(child, "exit");
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), STOP_TIMEOUT_MS);
    await exited;
    clearTimeout(timer);
  }
  await rm(dataDir, { recursive: true, force: true });
}
