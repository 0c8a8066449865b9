/**
 * Certificates made at test time with the openssl command: a CA, and server or client
 * certificates it signs, valid for a day. Nothing here is checked in; each test run makes its own.
 */
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);
const EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

/** A PEM certificate, its PEM private key, and the files they were written to. */
export interface Issued {
  readonly cert: string;
  readonly key: string;
  readonly certFile: string;
  readonly keyFile: string;
}

/** A self-signed CA in its own temporary directory; `remove()` deletes the directory. */
export class CertificateAuthority {
  private constructor(
    private readonly dir: string,
    readonly pem: string,
    readonly certFile: string,
  ) {}

  static async create(commonName: string): Promise<CertificateAuthority> {
    const dir = await mkdtemp(join(tmpdir(), "ticketing-ca-"));
    const certFile = join(dir, "ca.crt");
    await openssl(dir, [
      ["req", "-x509", "-new", ...EC_KEY, "-keyout", "ca.key", "-out", "ca.crt"],
      ["-days", "1", "-subj", `/CN=${commonName}`],
      ["-addext", "basicConstraints=critical,CA:TRUE"],
      ["-addext", "keyUsage=critical,keyCertSign,cRLSign"],
    ]);
    return new CertificateAuthority(dir, await readFile(certFile, "utf8"), certFile);
  }

  /** A leaf certificate: for `localhost` and 127.0.0.1 as a server, else a client. */
  async issue(name: string, { server }: { server: boolean }): Promise<Issued> {
    const extensions = server
      ? "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
      : "extendedKeyUsage=clientAuth\n";
    await writeFile(join(this.dir, `${name}.ext`), extensions);
    await openssl(this.dir, [
      ["req", "-new", ...EC_KEY, "-keyout", `${name}.key`, "-out", `${name}.csr`],
      ["-subj", `/CN=${name}`],
    ]);
    await openssl(this.dir, [
      ["x509", "-req", "-in", `${name}.csr`, "-CA", "ca.crt", "-CAkey", "ca.key"],
      ["-CAcreateserial", "-days", "1", "-extfile", `${name}.ext`, "-out", `${name}.crt`],
    ]);
    const certFile = join(this.dir, `${name}.crt`);
    const keyFile = join(this.dir, `${name}.key`);
    const [cert, key] = await Promise.all([readFile(certFile, "utf8"), readFile(keyFile, "utf8")]);
    return { cert, key, certFile, keyFile };
  }

  async remove(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
  }
}

async function openssl(cwd: string, args: string[][]): Promise<void> {
  try {
    await run("openssl", args.flat(), { cwd });
  } catch (error) {
    const stderr = (error as { stderr?: string }).stderr ?? "";
    throw new Error(`openssl ${args.flat().join(" ")} failed: ${String(error)}\n${stderr}`);
  }
}
