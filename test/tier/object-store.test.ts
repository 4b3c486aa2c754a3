/**
 * Runs the ObjectStore conformance suite against every backend (directory, memory, S3 against a
 * real s3rver), plus what is particular to each: tier URL parsing, the directory backend's file
 * layout, and how the S3 backend fails when its server is gone.
 */
import { randomBytes } from "node:crypto";
import { createServer, type IncomingHttpHeaders } from "node:http";
import type { AddressInfo } from "node:net";
import { link, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StrataError } from "../../src/errors.js";
import { DirObjectStore, linkNew } from "../../src/tier/dir-store.js";
import { FaultyObjectStore, MemoryObjectStore } from "../../src/testing/fault-store.js";
import { openObjectStore, parseTierUrl, redactTierUrl } from "../../src/tier/object-store.js";
import { S3ObjectStore } from "../../src/tier/s3-store.js";
import { S3RVER_CREDENTIALS, startS3rver, type RunningS3rver } from "../../src/testing/s3rver.js";
import { collect, objectStoreConformance } from "./object-store-suite.js";

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);

async function tempDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), "strata-dir-store-"));
}

async function rejection(promise: Promise<unknown>): Promise<StrataError> {
  const err = await promise.then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(StrataError);
  return err as StrataError;
}

objectStoreConformance("dir", async () => {
  const dir = await tempDir();
  const store = new DirObjectStore({ path: join(dir, "root") }); // the root is created on demand
  return {
    store,
    cleanup: async () => {
      await store.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
});

objectStoreConformance("memory", async () => {
  const store = new MemoryObjectStore();
  return { store, cleanup: () => store.close() };
});

// A fault injector with every rate at zero must be indistinguishable from what it wraps.
objectStoreConformance("faulty(memory) without faults", async () => {
  const store = new FaultyObjectStore(new MemoryObjectStore(), { seed: 7 });
  return { store, cleanup: () => store.close() };
});

describe("S3 backend against s3rver", () => {
  let s3: RunningS3rver;
  beforeAll(async () => {
    s3 = await startS3rver();
  });
  afterAll(async () => {
    await s3?.stop();
  });

  const s3Store = (prefix: string) => new S3ObjectStore({
    bucket: s3.bucket,
    prefix,
    endpoint: s3.endpoint,
    credentials: S3RVER_CREDENTIALS,
  });

  // Every test gets a fresh prefix in the shared bucket, which also exercises prefix handling.
  // Its objects are left in place: no other test looks there, and the server's directory is
  // removed when it stops (deleting 1,100 objects one request at a time would double the time).
  objectStoreConformance("s3", async () => {
    const store = s3Store(`suite/${randomBytes(6).toString("hex")}`);
    return { store, cleanup: () => store.close() };
  });

  it("pages through listings with a small page size", async () => {
    const keys = ["a-b/x", "a.b", "a/b/c", "a/x", "a0", "b", "c/1", "c/2", "c/3", "c/4", "d"];
    const store = new S3ObjectStore({
      bucket: s3.bucket, prefix: `pages/${randomBytes(6).toString("hex")}`, endpoint: s3.endpoint,
      credentials: S3RVER_CREDENTIALS, listPageSize: 2,
    });
    try {
      await Promise.all(keys.map((k) => store.put(k, enc(k))));
      expect((await collect(store.list(""))).map((o) => o.key)).toEqual(keys);
      expect((await collect(store.list("c/"))).map((o) => o.key)).toEqual(["c/1", "c/2", "c/3", "c/4"]);
      expect((await collect(store.list("a"))).map((o) => o.key)).toEqual(keys.slice(0, 5));
    } finally {
      await store.close();
    }
  });

  it("stores key k under PREFIX/k, and a store sees only its own prefix", async () => {
    const inner = s3Store("iso/inner");
    const outer = s3Store("iso");
    const sibling = s3Store("iso/inner-2");
    try {
      await inner.put("k", enc("v"));
      await sibling.put("k", enc("w"));
      expect(await outer.get("inner/k")).toEqual(enc("v"));
      expect((await collect(inner.list(""))).map((o) => o.key)).toEqual(["k"]);
      expect((await collect(outer.list(""))).map((o) => o.key)).toEqual(["inner-2/k", "inner/k"]);
    } finally {
      await Promise.all([inner.close(), outer.close(), sibling.close()]);
    }
  });

  it("s3rver ignores If-None-Match, which is why an endpoint's default createOnly is best-effort", async () => {
    const prefix = `ifnm/${randomBytes(6).toString("hex")}`;
    // Declared "enforced" against a server that is not: putIfAbsent trusts the server and overwrites.
    const trusting = new S3ObjectStore({ bucket: s3.bucket, prefix, endpoint: s3.endpoint, credentials: S3RVER_CREDENTIALS, createOnly: "enforced" });
    const checking = s3Store(prefix);
    try {
      expect(checking.createOnly).toBe("best-effort");
      expect(new S3ObjectStore({ bucket: s3.bucket }).createOnly).toBe("enforced"); // AWS S3 itself
      expect(await trusting.putIfAbsent("k", enc("first"))).toBe("created");
      // If s3rver starts honouring If-None-Match this answers "exists": then s3rver can be "enforced".
      expect(await trusting.putIfAbsent("k", enc("second"))).toBe("created");
      expect(await trusting.get("k")).toEqual(enc("second"));
      // The best-effort store looks first, so a later create over an existing object is refused.
      expect(await checking.putIfAbsent("k", enc("third"))).toBe("exists");
      expect(await checking.get("k")).toEqual(enc("second"));
    } finally {
      await Promise.all([trusting.close(), checking.close()]);
    }
  });

  it("opens from a tier URL", async () => {
    const { accessKeyId, secretAccessKey } = S3RVER_CREDENTIALS;
    const url = `s3://${s3.bucket}/url/test?endpoint=${encodeURIComponent(s3.endpoint)}&accessKeyId=${accessKeyId}&secretAccessKey=${secretAccessKey}`;
    const store = openObjectStore(url);
    try {
      expect(store).toBeInstanceOf(S3ObjectStore);
      await store.put("x", enc("from url"));
      expect(await store.get("x")).toEqual(enc("from url"));
    } finally {
      await store.close();
    }
  });

  it("refuses unknown credentials with a non-retryable IO error", async () => {
    const store = new S3ObjectStore({
      bucket: s3.bucket, endpoint: s3.endpoint, credentials: { accessKeyId: "NOBODY", secretAccessKey: "x" },
    });
    try {
      const err = await rejection(store.get("k"));
      expect(err.code).toBe("IO");
      expect(err.retryable).toBe(false);
    } finally {
      await store.close();
    }
  });

  it("refuses a missing bucket with a non-retryable IO error", async () => {
    const store = new S3ObjectStore({ bucket: "no-such-bucket", endpoint: s3.endpoint, credentials: S3RVER_CREDENTIALS });
    try {
      const err = await rejection(store.put("k", enc("v")));
      expect(err.code).toBe("IO");
      expect(err.retryable).toBe(false);
    } finally {
      await store.close();
    }
  });
});

describe("S3 backend whose server is gone", () => {
  it("rejects every call with UNAVAILABLE within a few seconds", async () => {
    const server = await startS3rver();
    await server.stop(); // nothing listens on its port any more
    const store = new S3ObjectStore({ bucket: server.bucket, endpoint: server.endpoint, credentials: S3RVER_CREDENTIALS });
    try {
      const started = Date.now();
      // All at once, each with its handler attached at once (no unhandled rejection meanwhile).
      const errors = await Promise.all([
        store.put("k", enc("v")),
        store.get("k"),
        store.get("k", { offset: 1, length: 2 }),
        store.head("k"),
        store.delete("k"),
        collect(store.list("")),
      ].map(rejection));
      for (const err of errors) {
        expect(err.code).toBe("UNAVAILABLE");
        expect(err.retryable).toBe(true);
        expect(err.cause).toBeDefined();
      }
      expect(Date.now() - started).toBeLessThan(5_000);
    } finally {
      await store.close();
    }
  });
});

describe("S3 create-only answers a real S3 gives and s3rver cannot (a loopback stand-in server)", () => {
  /** Answers every request with `status` and an S3 error body of `code`, recording the headers seen. */
  async function answering(status: number, code: string): Promise<{ endpoint: string; seen: IncomingHttpHeaders[]; close: () => Promise<void> }> {
    const seen: IncomingHttpHeaders[] = [];
    const server = createServer((req, res) => {
      seen.push(req.headers);
      req.resume();
      req.on("end", () => {
        res.writeHead(status, { "content-type": "application/xml" });
        res.end(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>${code}</Code><Message>stand-in</Message><RequestId>1</RequestId></Error>`);
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const { port } = server.address() as AddressInfo;
    return { endpoint: `http://127.0.0.1:${port}`, seen, close: () => new Promise((resolve) => server.close(() => resolve())) };
  }

  it("sends If-None-Match: * and reads 412 PreconditionFailed as \"exists\"", async () => {
    const server = await answering(412, "PreconditionFailed");
    const store = new S3ObjectStore({ bucket: "bkt", endpoint: server.endpoint, credentials: S3RVER_CREDENTIALS, createOnly: "enforced" });
    try {
      expect(await store.putIfAbsent("seg/1", enc("x"))).toBe("exists");
      expect(server.seen).toHaveLength(1); // enforced: no HEAD first, and a 412 is not retried
      expect(server.seen[0]!["if-none-match"]).toBe("*");
    } finally {
      await store.close();
      await server.close();
    }
  });

  it("reads 409 ConditionalRequestConflict (a concurrent conditional write) as retryable UNAVAILABLE", async () => {
    const server = await answering(409, "ConditionalRequestConflict");
    const store = new S3ObjectStore({ bucket: "bkt", endpoint: server.endpoint, credentials: S3RVER_CREDENTIALS, createOnly: "enforced" });
    try {
      const err = await rejection(store.putIfAbsent("seg/1", enc("x")));
      expect(err.code).toBe("UNAVAILABLE");
      expect(err.retryable).toBe(true);
    } finally {
      await store.close();
      await server.close();
    }
  });
});

describe("directory backend specifics", () => {
  it("leaves no temp files behind and ignores foreign or leftover ones", async () => {
    const dir = await tempDir();
    const store = new DirObjectStore({ path: dir });
    try {
      await store.put("seg/a", enc("1"));
      await store.put("seg/a", enc("2"));
      expect(await store.putIfAbsent("seg/a", enc("3"))).toBe("exists");
      expect(await store.putIfAbsent("seg/b", enc("4"))).toBe("created");
      expect((await readdir(join(dir, "seg"))).sort()).toEqual(["a", "b"]);
      // What a crash mid-put leaves, and a file whose name is no key: neither is an object.
      await writeFile(join(dir, "seg", ".tmp~123-abc"), "partial");
      await writeFile(join(dir, "seg", "not a key"), "x");
      expect(await collect(store.list(""))).toEqual([{ key: "seg/a", size: 1 }, { key: "seg/b", size: 1 }]);
    } finally {
      await store.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("refuses a key next to keys below it (a and a/b) with INVALID_ARGUMENT", async () => {
    const dir = await tempDir();
    const store = new DirObjectStore({ path: dir });
    try {
      await store.put("a", enc("file"));
      expect((await rejection(store.put("a/b", enc("x")))).code).toBe("INVALID_ARGUMENT");
      await store.put("c/d", enc("x"));
      expect((await rejection(store.put("c", enc("x")))).code).toBe("INVALID_ARGUMENT");
      expect((await rejection(store.putIfAbsent("a/b", enc("x")))).code).toBe("INVALID_ARGUMENT");
      expect((await rejection(store.putIfAbsent("c", enc("x")))).code).toBe("INVALID_ARGUMENT"); // link() says EEXIST for a directory too
      expect(await store.get("a/b")).toBeUndefined();
      expect(await store.get("c")).toBeUndefined();
      expect(await store.head("c")).toBeUndefined();
      expect((await collect(store.list(""))).map((o) => o.key)).toEqual(["a", "c/d"]);
    } finally {
      await store.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("recognises a link whose reply was lost (NFS retransmit: EEXIST, but the temp file has two links)", async () => {
    const dir = await tempDir();
    try {
      const temp = join(dir, ".tmp~1-a");
      await writeFile(temp, "ours");
      await link(temp, join(dir, "k")); // the first try, whose success the client never heard of
      expect(await linkNew(temp, join(dir, "k"))).toBe("created");
      const other = join(dir, ".tmp~1-b");
      await writeFile(other, "someone else's");
      expect(await linkNew(other, join(dir, "k"))).toBe("exists");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("opens from a dir: URL, relative paths included", () => {
    const store = openObjectStore("dir:some/relative/path");
    expect(store).toBeInstanceOf(DirObjectStore);
    expect((store as DirObjectStore).root).toBe(join(process.cwd(), "some/relative/path"));
  });
});

describe("parseTierUrl", () => {
  it("parses directory URLs", () => {
    expect(parseTierUrl("dir:/var/lib/strata/tier")).toEqual({ kind: "dir", path: "/var/lib/strata/tier" });
    expect(parseTierUrl("dir:./tier")).toEqual({ kind: "dir", path: "./tier" });
    expect(parseTierUrl("dir:tier")).toEqual({ kind: "dir", path: "tier" });
  });

  it("parses S3 URLs", () => {
    expect(parseTierUrl("s3://my-bucket")).toEqual({ kind: "s3", bucket: "my-bucket", prefix: "" });
    expect(parseTierUrl("s3://my-bucket/")).toEqual({ kind: "s3", bucket: "my-bucket", prefix: "" });
    expect(parseTierUrl("s3://my-bucket/cluster-1/tier/")).toEqual({ kind: "s3", bucket: "my-bucket", prefix: "cluster-1/tier" });
    expect(parseTierUrl(
      "s3://b.k-t/p?endpoint=http://127.0.0.1:4568&region=eu-west-1&forcePathStyle=false&accessKeyId=AK&secretAccessKey=SK&sessionToken=T",
    )).toEqual({
      kind: "s3",
      bucket: "b.k-t",
      prefix: "p",
      endpoint: "http://127.0.0.1:4568",
      region: "eu-west-1",
      forcePathStyle: false,
      credentials: { accessKeyId: "AK", secretAccessKey: "SK", sessionToken: "T" },
    });
    expect(parseTierUrl("s3://bkt?endpoint=https%3A%2F%2Fminio.local%3A9000&forcePathStyle=true")).toEqual({
      kind: "s3", bucket: "bkt", prefix: "", endpoint: "https://minio.local:9000", forcePathStyle: true,
    });
    expect(parseTierUrl("s3://bkt?endpoint=http://127.0.0.1:9000&createOnly=enforced")).toEqual({
      kind: "s3", bucket: "bkt", prefix: "", endpoint: "http://127.0.0.1:9000", createOnly: "enforced",
    });
    expect(() => parseTierUrl("s3://bkt?createOnly=yes")).toThrow(/createOnly must be/);
  });

  it("rejects bad URLs with INVALID_ARGUMENT showing the accepted forms", () => {
    const bad = [
      "", "/just/a/path", "file:///x", "dir:", "s3://", "s3://UPPER", "s3://ab", "s3://b_k", "s3://bucket:9000/p",
      "s3://user:pass@bucket", "s3://bucket/a//b", "s3://bucket/../x", "s3://bucket/sp%20ace", "s3://bucket#frag",
      "s3://bucket?endpoint=ftp://x", "s3://bucket?endpoint=not-a-url", "s3://bucket?forcePathStyle=yes",
      "s3://bucket?accessKeyId=AK", "s3://bucket?secretAccessKey=SK", "s3://bucket?sessionToken=T",
      "s3://bucket?bogus=1", "s3://bucket?region=us-east-1&region=eu-west-1", "s3://bucket?region=US EAST",
      "S3://bucket", "http://bucket",
    ];
    for (const url of bad) {
      let caught: unknown;
      try {
        parseTierUrl(url);
      } catch (err) {
        caught = err;
      }
      expect(caught, url).toBeInstanceOf(StrataError);
      expect((caught as StrataError).code, url).toBe("INVALID_ARGUMENT");
      expect((caught as StrataError).message, url).toContain("dir:/path/to/dir");
      expect((caught as StrataError).message, url).toContain("s3://bucket");
    }
    expect(() => openObjectStore("nfs://x")).toThrow(StrataError);
  });

  it("keeps '+' and '/' of a secret key (no form decoding)", () => {
    const config = parseTierUrl("s3://bucket?accessKeyId=AK&secretAccessKey=a+b/c%2Bd");
    expect(config.kind === "s3" && config.credentials?.secretAccessKey).toBe("a+b/c+d");
  });

  it("never shows a secret in an error message", () => {
    const url = "s3://bucket?accessKeyId=AK&secretAccessKey=TOPSECRET&bogus=1";
    expect(() => parseTierUrl(url)).toThrow(/secretAccessKey=\*\*\*/);
    expect(() => parseTierUrl(url)).not.toThrow(/TOPSECRET/);
    expect(redactTierUrl("s3://b?sessionToken=abc&region=x")).toBe("s3://b?sessionToken=***&region=x");
  });
});
