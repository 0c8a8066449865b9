/**
 * Runs the real Python server for end-to-end tests: `ticketing_service serve` on port 0 with an
 * embedded Postgres in a fresh data directory, ready once it logs the port it bound.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const REPO_ROOT = fileURLToPath(new URL("../../..", import.meta.url));
const READY = /serving moim\.ticketing\.v1\.TicketingService on [\d.]+:(\d+)/;
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
  /** Sends SIGTERM, waits for the exit (SIGKILL past a bound) and removes the data directory. */
  stop(): Promise<void>;
}

/**
 * Starts a server with the given extra environment (e.g. TICKETING_GRPC_TOKEN). DATABASE_URL and
 * TICKETING_GRPC_TOKEN are never inherited from the caller's environment.
 */
export async function startServer(env: Record<string, string> = {}): Promise<RunningServer> {
  const dataDir = await mkdtemp(join(tmpdir(), "ticketing-e2e-"));
  const childEnv: NodeJS.ProcessEnv = { ...process.env };
  delete childEnv.DATABASE_URL;
  delete childEnv.TICKETING_GRPC_TOKEN;
  Object.assign(childEnv, env, { TICKETING_DATA_DIR: dataDir });
  const child = spawn(
    "uv",
    ["run", "--frozen", "python", "-m", "ticketing_service", "serve", "--listen", "127.0.0.1:0"],
    { cwd: REPO_ROOT, env: childEnv, stdio: ["ignore", "ignore", "pipe"] },
  );
  const log = new LogTail(child);
  const stop = () => stopServer(child, dataDir);
  try {
    const port = await log.waitFor(READY, START_TIMEOUT_MS);
    return { address: `127.0.0.1:${port}`, logTail: () => log.text(), stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** Keeps reading stderr (a full pipe would block the server) and remembers the last lines. */
class LogTail {
  private readonly lines: string[] = [];
  private partial = "";
  private readonly waiters = new Set<(line: string) => void>();

  constructor(private readonly child: ChildProcess) {
    child.stderr?.setEncoding("utf8");
    child.stderr?.on("data", (chunk: string) => this.take(chunk));
  }

  text(): string {
    return [...this.lines, this.partial].join("\n");
  }

  /** Resolves with the first capture group of the first line matching `pattern`. */
  waitFor(pattern: RegExp, timeoutMs: number): Promise<string> {
    return new Promise((resolve, reject) => {
      const finish = (outcome: () => void) => {
        clearTimeout(timer);
        this.waiters.delete(onLine);
        this.child.off("exit", onExit).off("error", onError);
        outcome();
      };
      const onLine = (line: string) => {
        const match = pattern.exec(line);
        if (match) finish(() => resolve(match[1] ?? ""));
      };
      const onExit = (code: number | null, signal: string | null) =>
        finish(() => reject(this.failure(`exited (code ${code}, signal ${signal}) before serving`)));
      const onError = (error: Error) =>
        finish(() => reject(this.failure(`could not be started (${error.message}); is uv on PATH?`)));
      const timer = setTimeout(
        () => finish(() => reject(this.failure(`did not log ${pattern} within ${timeoutMs} ms`))),
        timeoutMs,
      );
      this.waiters.add(onLine);
      this.child.on("exit", onExit).on("error", onError);
    });
  }

  private take(chunk: string): void {
    const parts = (this.partial + chunk).split("\n");
    this.partial = parts.pop() ?? "";
    for (const line of parts) {
      this.lines.push(line);
      if (this.lines.length > LOG_TAIL_LINES) this.lines.shift();
      for (const waiter of [...this.waiters]) waiter(line);
    }
  }

  private failure(what: string): Error {
    return new Error(`The ticketing server ${what}. Its last log lines:\n${this.text()}`);
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
