/**
 * Network stand-ins for the deadline and retry tests: a listener that accepts and never answers,
 * a port where nothing listens (yet), and a TCP proxy that can be started on such a port later.
 */
import { once } from "node:events";
import { connect, createServer, type AddressInfo, type Server, type Socket } from "node:net";

/** A running listener; `close()` also cuts the connections it accepted. */
export interface Listener {
  readonly address: string;
  close(): Promise<void>;
}

/** Accepts connections on 127.0.0.1 and never sends a byte: a server that hangs. */
export async function silentListener(): Promise<Listener> {
  return listen(createServer(), 0);
}

/** A port on 127.0.0.1 where nothing listens: it was bound, then released. */
export async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  server.close();
  await once(server, "close");
  return port;
}

/** Forwards each connection on `port` byte for byte to `target` (`host:port`); TLS passes
 * through untouched. */
export async function tcpProxy(port: number, target: string): Promise<Listener> {
  const [host = "", targetPort = ""] = target.split(":");
  const server = createServer((downstream) => {
    const upstream = connect(Number(targetPort), host);
    downstream.pipe(upstream).pipe(downstream);
    upstream.on("error", () => downstream.destroy());
    downstream.on("error", () => upstream.destroy());
    downstream.on("close", () => upstream.destroy());
  });
  return listen(server, port);
}

async function listen(server: Server, port: number): Promise<Listener> {
  const sockets = new Set<Socket>();
  server.on("connection", (socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  server.listen(port, "127.0.0.1");
  await once(server, "listening");
  const address = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    address,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      server.close();
      await once(server, "close");
    },
  };
}
