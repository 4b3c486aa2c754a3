/**
 * Starts a real S3-compatible server (s3rver) for tests and the tier bench: on 127.0.0.1, on a free port, storing in
 * a fresh temp directory, with one bucket created. Every test that needs S3 goes through here.
 * `kill()` and `restart()` make an outage: the process dies, then a new one serves the same
 * directory on the same port, so clients configured with the endpoint reconnect by themselves.
 *
 * The server runs in a child process, for three reasons:
 * - s3rver encrypts ListObjectsV2 continuation tokens with DES, which OpenSSL 3 (Node >= 17) only
 *   offers with `--openssl-legacy-provider`; without it every truncated listing is a 500.
 * - s3rver walks its directory with blocking fs calls; in its own process that cannot stall the
 *   test's event loop (and with it the client timeouts under test).
 * - "the server is gone" is then a real dead process and a closed port, as in production.
 *
 * Two deviations of s3rver 3.7.1 from S3 are corrected in the child, so the conformance suite
 * checks our client against S3's documented behaviour rather than s3rver's:
 * - S3 lists keys in UTF-8 binary order; s3rver lists in directory-walk order, which puts
 *   "a/x" before "a-b" and "a.b". The walk is made to order a directory `d` as `d/`.
 * - S3 answers a ranged GET of an empty object with 416 InvalidRange; s3rver promises one byte
 *   and sends none, so the client waits for its keep-alive timeout and the connection resets.
 * A third one is left in place on purpose: s3rver reads `Range: bytes=0-0` as "from 0 to the
 * end". The S3 backend tolerates servers that answer more than the range asked for, and this
 * keeps that path tested.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";

/** s3rver knows only this access key (it checks the key id, though not SigV4 signatures). */
export const S3RVER_CREDENTIALS = Object.freeze({ accessKeyId: "S3RVER", secretAccessKey: "S3RVER" });
export const S3RVER_BUCKET = "test";
/** Bound on starting and on stopping the child; a healthy one needs well under a second. */
const S3RVER_START_TIMEOUT_MS = 15_000;
const S3RVER_STOP_TIMEOUT_MS = 5_000;

export interface RunningS3rver {
  /** `http://127.0.0.1:PORT` */
  endpoint: string;
  bucket: string;
  /** The directory s3rver stores the bucket in (kept across `kill` and `restart`). */
  directory: string;
  /**
   * Stops the server process abruptly (SIGKILL), keeping its directory: an outage as clients see
   * it, with connections reset and the port refusing new ones. Idempotent while stopped.
   */
  kill(): Promise<void>;
  /** Starts the server again on the same port and directory (after `kill`): the outage is over. */
  restart(): Promise<void>;
  /** Stops the server process and removes its directory. Idempotent. */
  stop(): Promise<void>;
}

/** The child's program (CommonJS, run with `node -e`). It exits when its stdin closes. */
const CHILD_SOURCE = String.raw`
"use strict";
const path = require("node:path");
const fs = require("node:fs");
const { S3RVER_MAIN, S3RVER_DIR, S3RVER_BUCKET, S3RVER_PORT } = process.env;
const lib = path.dirname(S3RVER_MAIN);

// Deviation 1: list in S3 order. Must be patched before s3rver's store module captures walk().
const utils = require(path.join(lib, "utils.js"));
const SUFFIX = "._S3rver_";
const orderOf = (name, isDir) => isDir ? name + "/" : (name.includes(SUFFIX) ? name.slice(0, name.indexOf(SUFFIX)) : name);
utils.walk = function* walk(dir, recurseFilter) {
  const entries = fs.readdirSync(dir, { withFileTypes: true })
    .map((e) => ({ name: e.name, isDir: e.isDirectory(), order: orderOf(e.name, e.isDirectory()) }))
    .sort((a, b) => (a.order < b.order ? -1 : a.order > b.order ? 1 : 0));
  for (const e of entries) {
    const p = path.posix.join(dir, e.name);
    if (!e.isDir) yield p;
    else if (!recurseFilter || recurseFilter(p)) yield* walk(p, recurseFilter);
  }
};

// Deviation 2: a ranged read of an empty object is unsatisfiable (416), as in S3.
const FilesystemStore = require(path.join(lib, "stores", "filesystem.js"));
const getObject = FilesystemStore.prototype.getObject;
FilesystemStore.prototype.getObject = async function (bucket, key, options) {
  const object = await getObject.call(this, bucket, key, options);
  if (object && object.range && object.size === 0 && object.content) {
    object.content.destroy();
    object.content = null;
  }
  return object;
};

const S3rver = require(S3RVER_MAIN);
const server = new S3rver({
  port: Number(S3RVER_PORT), address: "127.0.0.1", silent: true, directory: S3RVER_DIR,
  configureBuckets: [{ name: S3RVER_BUCKET, configs: [] }],
});
server.run().then((address) => {
  process.stdout.write(JSON.stringify({ port: address.port }) + "\n");
}, (err) => {
  process.stderr.write(String(err && err.stack || err) + "\n");
  process.exit(1);
});
process.stdin.on("data", () => {});
process.stdin.on("end", () => {
  server.close().finally(() => process.exit(0));
});
`;

export async function startS3rver(): Promise<RunningS3rver> {
  const directory = await mkdtemp(join(tmpdir(), "strata-s3rver-"));
  let child: ChildProcess;
  let port: number;
  try {
    ({ child, port } = await spawnS3rver(directory, 0));
  } catch (err) {
    await rm(directory, { recursive: true, force: true });
    throw err;
  }
  let stopped: Promise<void> | undefined;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    bucket: S3RVER_BUCKET,
    directory,
    async kill() {
      if (stopped) throw new Error("s3rver was stopped for good");
      await killChild(child);
    },
    async restart() {
      if (stopped) throw new Error("s3rver was stopped for good");
      if (child.exitCode === null && child.signalCode === null) throw new Error("s3rver is still running; kill() it first");
      // The port was the old server's; it is free again once that process is gone.
      ({ child } = await spawnS3rver(directory, port));
    },
    stop() {
      stopped ??= (async () => {
        try {
          await stopChild(child);
        } finally {
          await rm(directory, { recursive: true, force: true });
        }
      })();
      return stopped;
    },
  };
}

/** Starts the child on `port` (0: any free one) and waits until it listens. */
async function spawnS3rver(directory: string, port: number): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn(process.execPath, ["--openssl-legacy-provider", "-e", CHILD_SOURCE], {
    stdio: ["pipe", "pipe", "inherit"],
    env: {
      ...process.env,
      NODE_OPTIONS: "",
      S3RVER_MAIN: createRequire(import.meta.url).resolve("s3rver"),
      S3RVER_DIR: directory,
      S3RVER_BUCKET,
      S3RVER_PORT: String(port),
    },
  });
  try {
    return { child, port: await readPort(child) };
  } catch (err) {
    child.kill("SIGKILL");
    throw err;
  }
}

/** Kills the child at once and waits until it is gone. */
function killChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once("exit", () => resolve());
    child.kill("SIGKILL");
  });
}

/** Resolves with the port the child reports on its first stdout line. */
function readPort(child: ChildProcess): Promise<number> {
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: child.stdout! });
    const timer = setTimeout(() => fail(new Error(`s3rver did not start within ${S3RVER_START_TIMEOUT_MS} ms`)), S3RVER_START_TIMEOUT_MS);
    const onExit = (code: number | null) => fail(new Error(`s3rver exited with code ${code} before it was ready`));
    function finish(): void {
      clearTimeout(timer);
      child.off("exit", onExit);
      lines.close();
    }
    function fail(err: Error): void {
      finish();
      reject(err);
    }
    child.once("exit", onExit);
    child.once("error", fail);
    lines.once("line", (line) => {
      finish();
      const port = (JSON.parse(line) as { port?: unknown }).port;
      if (typeof port === "number" && Number.isInteger(port) && port > 0) resolve(port);
      else reject(new Error(`s3rver reported no port: ${line}`));
    });
  });
}

/** Closes the child's stdin (it then closes its server and exits); kills it if it does not. */
function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill("SIGKILL"), S3RVER_STOP_TIMEOUT_MS);
    child.once("exit", () => {
      clearTimeout(timer);
      resolve();
    });
    child.stdin!.end();
  });
}
