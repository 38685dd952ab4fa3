// Many clients in one Node process, each following one task's acknowledged events with the
// project's JS helper (hubs/static/conduit/conduit.mjs) on the official SignalR client, as an
// application would. The helper does the delivery work under test:
//
// - dedupe by messageId (a retry of a processed message is acknowledged again, not processed);
// - processing in seq order: a message ahead of a gap waits until the gap is filled;
// - acknowledging in batches: the ids gathered for ackWindowMs go in one AcknowledgeMessages;
// - reconnecting forever with backoff; after every reconnect ResumeTask(taskId, lastSeq, epoch)
//   replays what this client has not processed yet.
//
// node acking_clients.mjs '<json config>'
//   config: {url, token, taskId, clients, events: [names],
//            ackWindowMs (default 100; 0 acknowledges each message on its own)}
// stdout: JSON lines: {"event":"connected","index"}, {"event":"report","clients":[...]}, errors.
// stdin:  {"cmd":"report"} | {"cmd":"stop"}.
import readline from "node:readline";
import * as signalR from "@microsoft/signalr";

import { ConduitConnection } from "../../../hubs/static/conduit/conduit.mjs";

const cfg = JSON.parse(process.argv[2]);
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

class AckingClient {
  constructor(index) {
    this.index = index;
    this.processed = []; // [seq, messageId] in processing order
    this.foreign = 0; // events of other tasks (redelivered to this user's new connection)
    this.errors = [];
    this.conduit = new ConduitConnection({
      signalR,
      url: cfg.url,
      accessTokenFactory: () => cfg.token,
      ack: { windowMs: cfg.ackWindowMs ?? 100 },
      reconnect: { initialDelayMs: 400, maxDelayMs: 1000, factor: 2 },
      ping: { intervalMs: 0 },
      logLevel: signalR.LogLevel.None,
    });
    this.conduit.connection.serverTimeoutInMilliseconds = 10000;
    this.conduit.connection.keepAliveIntervalInMilliseconds = 2000;
    for (const name of cfg.events) this.conduit.on(name, (payload) => this.receive(payload));
  }

  async start() {
    await this.conduit.followTask(cfg.taskId);
    await this.conduit.start();
    emit({ event: "connected", index: this.index });
  }

  receive(payload) {
    if (payload.taskId !== cfg.taskId) {
      this.foreign += 1; // the helper acknowledges it once this returns
      return;
    }
    if (!payload.requiresAck) this.errors.push(`message ${payload.messageId} does not ask for an ack`);
    this.processed.push([payload.seq, payload.messageId]);
  }

  report() {
    const order = this.conduit.streams.get(cfg.taskId);
    const stats = this.conduit.stats;
    const errors = [...this.errors];
    if (stats.unrecovered) errors.push(`${stats.unrecovered} resume(s) not recovered`);
    return {
      index: this.index,
      processed: this.processed,
      lastSeq: order?.lastSeq ?? 0,
      waiting: order?.waiting.size ?? 0,
      duplicates: stats.duplicates,
      retried: stats.retried,
      reconnects: stats.reconnects,
      unrecovered: stats.unrecovered,
      acksFailed: stats.acksFailed,
      foreign: this.foreign,
      errors: errors.slice(0, 5),
      state: this.conduit.connection.state,
    };
  }
}

const clients = Array.from({ length: cfg.clients }, (_, i) => new AckingClient(i));
await Promise.all(clients.map((client) => client.start()));

const lines = readline.createInterface({ input: process.stdin });
lines.on("line", async (line) => {
  if (!line.trim()) return;
  const { cmd } = JSON.parse(line);
  if (cmd === "report") {
    const full = JSON.parse(line).full === true;
    emit({
      event: "report",
      clients: clients.map((client) => {
        const report = client.report();
        if (!full) report.processed = report.processed.length;
        return report;
      }),
    });
  } else if (cmd === "stop") {
    await Promise.all(clients.map((client) => client.conduit.stop().catch(() => {})));
    emit({ event: "stopped" });
    process.exit(0);
  }
});
lines.on("close", () => process.exit(0));
