/**
 * Network stand-ins for the deadline and retry tests: a listener that accepts and never answers,
 * a port where nothing listens (yet), and a TCP proxy that can be started on such a port later
 * and can go silent.
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

/** A proxy that can go silent: the machine behind it gone without a word. */
export interface Proxy extends Listener {
  /** Forward nothing more either way on the open connections, and close none of them. */
  silence(): void;
}

/** Forwards each connection on `port` byte for byte to `target` (`host:port`); TLS passes
 * through untouched. */
export async function tcpProxy(port: number, target: string): Promise<Proxy> {
  const [host = "", targetPort = ""] = target.split(":");
  const links = new Set<[Socket, Socket]>();
  const server = createServer((downstream) => {
    const upstream = connect(Number(targetPort), host);
    const link: [Socket, Socket] = [downstream, upstream];
    links.add(link);
    downstream.pipe(upstream).pipe(downstream);
    upstream.on("error", () => downstream.destroy());
    downstream.on("error", () => upstream.destroy());
    downstream.on("close", () => {
      upstream.destroy();
      links.delete(link);
    });
  });
  const listener = await listen(server, port);
  const silence = () => {
    for (const [downstream, upstream] of links) {
      downstream.unpipe(upstream);
      upstream.unpipe(downstream);
      downstream.pause();
      upstream.pause();
    }
  };
  return { ...listener, silence };
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
