// Many official SignalR clients in one Node process, each processing a task's acknowledged events
// exactly once and in seq order, as an application on the JS client would:
//
// - dedupe by messageId, and acknowledge every copy (a retry of a processed message too), in
//   batches: the ids gathered for ackWindowMs go in one AcknowledgeMessages (at most 1,000 ids,
//   the server's limit), one frame instead of one per message;
// - process in seq order: a message ahead of a gap waits until the gap is filled;
// - reconnect forever with a short backoff; after every reconnect, ResumeTask(taskId, lastSeq,
//   epoch) replays what this client has not processed yet.
//
// node acking_clients.mjs '<json config>'
//   config: {url, token, taskId, clients, events: [names], protocol: "json"|"messagepack",
//            ackWindowMs (default 100; 0 acknowledges each message on its own)}
// stdout: JSON lines: {"event":"connected","index"}, {"event":"report","clients":[...]}, errors.
// stdin:  {"cmd":"report"} | {"cmd":"stop"}.
import readline from "node:readline";
import * as signalR from "@microsoft/signalr";

const cfg = JSON.parse(process.argv[2]);
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const ACK_WINDOW_MS = cfg.ackWindowMs ?? 100;
const ACK_BATCH_MAX = 1000;

class AckingClient {
  constructor(index) {
    this.index = index;
    this.processed = []; // [seq, messageId] in processing order
    this.seen = new Set(); // messageIds processed
    this.waiting = new Map(); // seq -> payload, ahead of a gap
    this.lastSeq = 0;
    this.epoch = null;
    this.duplicates = 0;
    this.retried = 0; // copies that arrived with retryCount > 0
    this.reconnects = 0;
    this.unrecovered = 0;
    this.acksFailed = 0;
    this.unacked = []; // ids processed, waiting for the next AcknowledgeMessages
    this.ackTimer = null;
    this.foreign = 0; // events of other tasks (another scenario's), acknowledged and ignored
    this.errors = [];
    this.stopping = false;
    let builder = new signalR.HubConnectionBuilder()
      .withUrl(cfg.url, { accessTokenFactory: () => cfg.token })
      .withAutomaticReconnect({ nextRetryDelayInMilliseconds: () => 200 + Math.random() * 400 })
      .configureLogging(signalR.LogLevel.None);
    this.connection = builder.build();
    this.connection.serverTimeoutInMilliseconds = 10000;
    this.connection.keepAliveIntervalInMilliseconds = 2000;
    for (const name of cfg.events) this.connection.on(name, (payload) => this.receive(payload));
    this.connection.onreconnected(() => {
      this.reconnects += 1;
      this.resume();
    });
    this.connection.onclose(() => {
      if (!this.stopping) this.start(); // automatic reconnect never gives up, but be sure
    });
  }

  async start() {
    for (;;) {
      if (this.stopping) return;
      try {
        await this.connection.start();
        break;
      } catch (error) {
        await sleep(300 + Math.random() * 400);
      }
    }
    if (this.lastSeq === 0 && this.epoch === null) {
      await this.call("SubscribeToTask", cfg.taskId);
      emit({ event: "connected", index: this.index });
    } else {
      this.reconnects += 1;
      await this.resume();
    }
  }

  async call(method, ...args) {
    try {
      return await this.connection.invoke(method, ...args);
    } catch (error) {
      // Cut mid-call: the next reconnect resumes anyway.
      return null;
    }
  }

  async resume() {
    const answer = await this.call("ResumeTask", cfg.taskId, this.lastSeq, this.epoch);
    if (answer && answer.recovered === false) {
      this.unrecovered += 1;
      this.errors.push(`resume not recovered at seq ${this.lastSeq}`);
    }
  }

  ack(messageId) {
    if (!messageId) return;
    if (ACK_WINDOW_MS <= 0) {
      this.connection.send("AcknowledgeMessage", messageId).catch(() => {
        this.acksFailed += 1; // the server sends it again; it is acknowledged then
      });
      return;
    }
    this.unacked.push(messageId);
    if (this.unacked.length >= ACK_BATCH_MAX) this.flushAcks();
    else if (this.ackTimer === null) this.ackTimer = setTimeout(() => this.flushAcks(), ACK_WINDOW_MS);
  }

  flushAcks() {
    clearTimeout(this.ackTimer);
    this.ackTimer = null;
    const ids = this.unacked;
    this.unacked = [];
    if (ids.length === 0) return;
    this.connection.send("AcknowledgeMessages", ids).catch(() => {
      this.acksFailed += ids.length; // the server sends them again; they are acknowledged then
    });
  }

  receive(payload) {
    if (payload.taskId !== cfg.taskId) {
      // Redelivered to this user's connection from one of its older connections: not ours.
      this.foreign += 1;
      this.ack(payload.messageId);
      return;
    }
    if (payload.retryCount > 0) this.retried += 1;
    if (this.epoch === null) this.epoch = payload.epoch;
    if (payload.epoch !== this.epoch) {
      this.errors.push(`epoch changed from ${this.epoch} to ${payload.epoch}`);
      return;
    }
    const known = this.seen.has(payload.messageId);
    if (known) {
      this.duplicates += 1; // a retry, or a copy also replayed by a resume: acknowledge it again
      if (payload.requiresAck) this.ack(payload.messageId);
    }
    // Every seq slot is filled, even by a copy of a message already processed (a message
    // published twice has two seqs): otherwise the slot would hold back everything after it.
    if (payload.seq > this.lastSeq && !this.waiting.has(payload.seq)) {
      this.waiting.set(payload.seq, payload);
    } else if (!known) {
      this.duplicates += 1; // another copy of a seq already here
    }
    while (this.waiting.has(this.lastSeq + 1)) {
      const next = this.waiting.get(this.lastSeq + 1);
      this.waiting.delete(this.lastSeq + 1);
      this.lastSeq += 1;
      if (this.seen.has(next.messageId)) continue;
      this.seen.add(next.messageId);
      this.processed.push([next.seq, next.messageId]);
      if (next.requiresAck) this.ack(next.messageId);
      else this.errors.push(`message ${next.messageId} does not ask for an ack`);
    }
  }

  report() {
    return {
      index: this.index,
      processed: this.processed,
      lastSeq: this.lastSeq,
      waiting: this.waiting.size,
      duplicates: this.duplicates,
      retried: this.retried,
      reconnects: this.reconnects,
      unrecovered: this.unrecovered,
      acksFailed: this.acksFailed,
      acksWaiting: this.unacked.length,
      foreign: this.foreign,
      errors: this.errors.slice(0, 5),
      state: this.connection.state,
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
    for (const client of clients) {
      client.stopping = true;
      client.flushAcks();
    }
    await Promise.all(clients.map((client) => client.connection.stop().catch(() => {})));
    emit({ event: "stopped" });
    process.exit(0);
  }
});
lines.on("close", () => process.exit(0));
