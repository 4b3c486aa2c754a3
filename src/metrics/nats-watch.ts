/**
 * Whether a NATS connection is up now, for /readyz: nats.js reports disconnects and reconnects
 * on its status iterator; a closed connection is down for good.
 */
import { Events, type NatsConnection } from "nats";

export interface NatsWatch {
  connected(): boolean;
  stop(): void;
}

export function watchNats(nc: NatsConnection): NatsWatch {
  let up = !nc.isClosed();
  const status = nc.status() as AsyncIterable<{ type: string }> & { stop(): void };
  void (async () => {
    for await (const s of status) {
      if (s.type === Events.Disconnect) up = false;
      else if (s.type === Events.Reconnect) up = true;
    }
  })().catch(() => undefined);
  return {
    connected: () => up && !nc.isClosed(),
    stop: () => status.stop(),
  };
}
