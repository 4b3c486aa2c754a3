/**
 * One `strata` process (or another script run the same way) as a child of this one, for the
 * failover harness (./cluster.ts) and benches: start it through tsx, wait for the line it logs
 * when ready, SIGKILL / SIGTERM / SIGSTOP / SIGCONT it by PID, start it again with the same
 * arguments, ask it something over IPC when it was started with a channel.
 *
 *   const p = new StrataProcess("coordinator", ["coordinator", "--data", dir, "--nats", url], /coordinator ready/);
 *   await p.start();          // resolves once it logged the ready line (bounded), rejects if it exits first
 *   await p.kill9();          // resolves once it has exited
 *   await p.restart();        // same arguments, new PID
 *
 * Ownership: only the process started here is ever signalled, always by its PID. Readiness is an
 * event (the ready line), never a fixed sleep; `waitFor` polls a condition with a bound where no
 * event exists. The tail of the output of every incarnation is kept for diagnostics.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";

/** The repository root: the working directory of every child (they run `src/cli/main.ts`). */
export const REPO_ROOT = fileURLToPath(new URL("../..", import.meta.url));
const CLI = "src/cli/main.ts";
export const READY_TIMEOUT_MS = 30_000;
export const EXIT_TIMEOUT_MS = 10_000;
const OUTPUT_TAIL_CHARS = 40_000;
const IPC_TIMEOUT_MS = 10_000;

export interface Proc {
  readonly name: string;
  /** PID of the current process (changes on restart). */
  readonly pid: number;
  readonly args: readonly string[];
  /** Started, not exited. */
  readonly running: boolean;
  readonly paused: boolean;
  /** Resolves when the current process exits, with its code or signal. */
  readonly exited: Promise<string>;
  /** SIGKILL by PID; resolves once the process has exited. */
  kill9(): Promise<void>;
  /** SIGTERM by PID; resolves with the exit code once it has exited (SIGKILL after `EXIT_TIMEOUT_MS`). */
  stop(): Promise<string>;
  /** SIGSTOP / SIGCONT by PID. */
  pause(): void;
  resume(): void;
  /** Starts the same command again (same id, same data dir) once the old process has exited. */
  restart(): Promise<void>;
  /** The tail of its stdout + stderr (all incarnations), for diagnostics. */
  output(): string;
  /** Resolves when the output of the current process matches `re` (bounded). */
  waitForOutput(re: RegExp, timeoutMs?: number): Promise<void>;
  /**
   * Sends `message` over the IPC channel and resolves with the first message back whose `type`
   * is the same (bounded). Only for a process started with `ipc: true`.
   */
  request(message: { type: string } & Record<string, unknown>, timeoutMs?: number): Promise<Record<string, unknown>>;
}

export interface ProcessOptions {
  /** The script node runs (through tsx), relative to the repository root; default the CLI. */
  script?: string;
  /** Open an IPC channel to the child (`request`). */
  ipc?: boolean;
  /** Environment variables set for the child on top of this process's (e.g. `STRATA_<FLAG>`). */
  env?: Record<string, string>;
}

/** Polls `condition` every `intervalMs` until it returns a truthy value; throws after `timeoutMs`. */
export async function waitFor<T>(what: string, condition: () => T | Promise<T>, timeoutMs: number, intervalMs = 50): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await condition();
      if (value) return value as NonNullable<T>;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastError ? ` (last error: ${(lastError as Error).message})` : ""}`);
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

/** True while a process with this PID exists (ours: children are reaped by Node at once). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** A `strata` command run to its end (drain, move, …), killed by its PID after `timeoutMs`. */
export function runCli(args: string[], timeoutMs: number, env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", CLI, ...args], { cwd: REPO_ROOT, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...env } });
    let stdout = "";
    let stderr = "";
    child.stdout!.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      if (child.pid !== undefined && child.exitCode === null) process.kill(child.pid, "SIGKILL");
      reject(new Error(`strata ${args.join(" ")} did not finish within ${timeoutMs} ms:\n${stdout}\n${stderr}`));
    }, timeoutMs);
    child.once("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

export class StrataProcess implements Proc {
  private child: ChildProcess | undefined;
  private log = "";
  private current = "";
  private exitedPromise: Promise<string> = Promise.resolve("not started");
  private isPaused = false;

  constructor(
    readonly name: string,
    readonly args: readonly string[],
    private readonly readyPattern: RegExp,
    private readonly options: ProcessOptions = {},
  ) {}

  get pid(): number {
    if (this.child?.pid === undefined) throw new Error(`${this.name} is not started`);
    return this.child.pid;
  }

  pidOrNone(): number | string {
    return this.child?.pid ?? "none";
  }

  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  get paused(): boolean {
    return this.running && this.isPaused;
  }

  get exited(): Promise<string> {
    return this.exitedPromise;
  }

  /** Spawns the process (synchronously, before the first await) and resolves once it is ready. */
  async start(): Promise<void> {
    if (this.running) throw new Error(`${this.name} is already running (pid ${this.pid})`);
    const stdio: Array<"ignore" | "pipe" | "ipc"> = this.options.ipc ? ["ignore", "pipe", "pipe", "ipc"] : ["ignore", "pipe", "pipe"];
    const child = spawn(process.execPath, ["--import", "tsx", this.options.script ?? CLI, ...this.args], { cwd: REPO_ROOT, stdio, env: { ...process.env, ...this.options.env } });
    this.child = child;
    this.isPaused = false;
    this.current = "";
    this.append(`[harness] started pid ${child.pid}: ${this.options.script ?? "strata"} ${this.args.join(" ")}\n`);
    const onData = (d: Buffer) => this.append(d.toString());
    child.stdout!.on("data", onData);
    child.stderr!.on("data", onData);
    this.exitedPromise = new Promise<string>((resolve) => {
      child.once("exit", (code, signal) => {
        const how = signal ?? String(code);
        this.append(`[harness] pid ${child.pid} exited (${how})\n`);
        resolve(how);
      });
      child.once("error", (err) => resolve(`error: ${err.message}`));
    });
    await this.waitForOutput(this.readyPattern, READY_TIMEOUT_MS);
  }

  async waitForOutput(re: RegExp, timeoutMs = READY_TIMEOUT_MS): Promise<void> {
    const child = this.child;
    if (!child) throw new Error(`${this.name} is not started`);
    if (re.test(this.current)) return;
    await new Promise<void>((resolve, reject) => {
      const check = () => {
        if (re.test(this.current)) done(undefined);
      };
      const timer = setTimeout(() => done(new Error(`${this.name} did not log ${re} within ${timeoutMs} ms`)), timeoutMs);
      const onExit = (code: number | null, signal: string | null) => done(new Error(`${this.name} exited (${signal ?? code}) before logging ${re}`));
      const done = (err: Error | undefined) => {
        clearTimeout(timer);
        child.stdout!.off("data", check);
        child.stderr!.off("data", check);
        child.off("exit", onExit);
        if (err) reject(new Error(`${err.message}:\n${this.output()}`));
        else resolve();
      };
      // Listeners run after append() (registered later), so `current` already holds the chunk.
      child.stdout!.on("data", check);
      child.stderr!.on("data", check);
      child.once("exit", onExit);
    });
  }

  request(message: { type: string } & Record<string, unknown>, timeoutMs = IPC_TIMEOUT_MS): Promise<Record<string, unknown>> {
    const child = this.child;
    if (!child || !this.running) return Promise.reject(new Error(`${this.name} is not running`));
    if (!this.options.ipc) return Promise.reject(new Error(`${this.name} was started without an IPC channel`));
    return new Promise((resolve, reject) => {
      const onMessage = (reply: unknown) => {
        if ((reply as { type?: unknown })?.type !== message.type) return;
        done(undefined, reply as Record<string, unknown>);
      };
      const onExit = () => done(new Error(`${this.name} exited before answering ${message.type}`));
      const timer = setTimeout(() => done(new Error(`${this.name} did not answer ${message.type} within ${timeoutMs} ms`)), timeoutMs);
      const done = (err: Error | undefined, reply?: Record<string, unknown>) => {
        clearTimeout(timer);
        child.off("message", onMessage);
        child.off("exit", onExit);
        if (err) reject(err);
        else resolve(reply!);
      };
      child.on("message", onMessage);
      child.once("exit", onExit);
      child.send(message);
    });
  }

  async kill9(): Promise<void> {
    if (!this.running) return;
    process.kill(this.pid, "SIGKILL");
    await this.waitExit();
  }

  async stop(): Promise<string> {
    if (!this.running) return this.exitedPromise;
    if (this.isPaused) this.resume(); // a stopped process cannot handle SIGTERM
    process.kill(this.pid, "SIGTERM");
    const timer = setTimeout(() => this.killNow(), EXIT_TIMEOUT_MS);
    try {
      return await this.exitedPromise;
    } finally {
      clearTimeout(timer);
    }
  }

  pause(): void {
    if (!this.running) throw new Error(`${this.name} is not running`);
    process.kill(this.pid, "SIGSTOP");
    this.isPaused = true;
    this.append(`[harness] SIGSTOP at ${new Date().toISOString()}\n`);
  }

  resume(): void {
    if (!this.running) throw new Error(`${this.name} is not running`);
    process.kill(this.pid, "SIGCONT");
    this.isPaused = false;
    this.append(`[harness] SIGCONT at ${new Date().toISOString()}\n`);
  }

  async restart(): Promise<void> {
    if (this.running) await this.stop();
    await this.start();
  }

  output(): string {
    return this.log;
  }

  /** Synchronous SIGKILL for a process-exit hook. */
  killNow(): void {
    if (this.running) {
      try {
        process.kill(this.pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
  }

  private async waitExit(): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${this.name} (pid ${this.pidOrNone()}) did not exit within ${EXIT_TIMEOUT_MS} ms`)), EXIT_TIMEOUT_MS);
    });
    try {
      await Promise.race([this.exitedPromise, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  private append(text: string): void {
    this.current += text;
    if (this.current.length > OUTPUT_TAIL_CHARS) this.current = this.current.slice(-OUTPUT_TAIL_CHARS);
    this.log += text;
    if (this.log.length > OUTPUT_TAIL_CHARS) this.log = this.log.slice(-OUTPUT_TAIL_CHARS);
  }
}
