/**
 * The store's change feed (`Store.onChange`): every committed change of a location, in commit
 * order, to each listener. Chunk, import and config records are not changes of a location's data
 * and are not reported. A listener that throws is logged (`change_listener_threw`) and the others
 * still get the change: a listener can never fail a write, which is already committed.
 */
import { changeOf } from "./changes.js";
import type { Committed } from "./commit-queue.js";
import { errorFields, type Logger } from "./logger.js";
import type { Change } from "./types.js";

export type ChangeListener = (change: Change) => void;

export class ChangeFeed {
  private readonly listeners = new Set<ChangeListener>();

  constructor(private readonly logger: Logger) {}

  /** Adds a listener; returns a function that removes it. */
  add(listener: ChangeListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Reports a committed batch's changes to every listener. */
  publish(batch: Committed[]): void {
    if (this.listeners.size === 0) return;
    for (const c of batch) {
      if (c.record.t === "chunk" || c.record.t === "import" || c.record.t === "config") continue;
      const change = changeOf(c.record, c.removed);
      for (const listener of this.listeners) {
        try {
          listener(change);
        } catch (err) {
          this.logger.warn({ event: "change_listener_threw", location: change.location, ...errorFields(err) }, `a change listener threw: ${(err as Error).message}`);
        }
      }
    }
  }
}
