// Events the page has no handler for, on the real official client (@microsoft/signalr) over an
// in-memory transport: the helper handles them quietly (no "No client method ... found"
// warning), dedupes them and acknowledges what asks for it; a handler registered later gets
// the events that come after it, once each.
import assert from "node:assert/strict";
import { test } from "node:test";

import * as signalR from "@microsoft/signalr";

import { settle } from "./fake_clock.mjs";

import { ConduitConnection } from "../../hubs/static/conduit/conduit.mjs";

const RS = "\x1e"; // the JSON hub protocol's record separator

/** An ITransport in memory: answers the handshake, records what the client sends, and lets a
 * test deliver server frames. */
class MemoryTransport {
  constructor() {
    this.sent = [];
    this.onreceive = null;
    this.onclose = null;
    this.handshaken = false;
  }
  async connect() {}
  async send(data) {
    if (!this.handshaken) {
      this.handshaken = true;
      queueMicrotask(() => this.onreceive(`{}${RS}`)); // the handshake response
      return;
    }
    this.sent.push(...data.split(RS).filter(Boolean).map((frame) => JSON.parse(frame)));
  }
  async stop() {
    this.onclose?.();
  }
  /** The server invokes `target(...args)` on the client. */
  async deliver(target, ...args) {
    this.onreceive(JSON.stringify({ type: 1, target, arguments: args }) + RS);
    for (let i = 0; i < 5; i += 1) await settle();
  }
  /** The ids the client acknowledged, in order (one per AcknowledgeMessage, or a batch). */
  acked() {
    return this.sent
      .filter((frame) => frame.type === 1 && frame.target.startsWith("AcknowledgeMessage"))
      .flatMap((frame) => frame.arguments.flat());
  }
}

/** Negotiate answered in memory (the transport is given, so no other request is made). */
class NegotiateClient extends signalR.HttpClient {
  async send() {
    const body = { connectionId: "c1", connectionToken: "t1", negotiateVersion: 1, availableTransports: [] };
    return new signalR.HttpResponse(200, "OK", JSON.stringify(body));
  }
}

/** A logger for the official client that keeps its warnings and errors. */
function recordingLogger() {
  const lines = [];
  return { lines, log: (level, message) => level >= signalR.LogLevel.Warning && lines.push(message) };
}

const notice = (id, extra = {}) => ({ messageId: id, requiresAck: true, retryCount: 0, text: "hi", ...extra });

test("the official client alone warns about an event without a handler and never acks it", async (t) => {
  const transport = new MemoryTransport();
  const logger = recordingLogger();
  const connection = new signalR.HubConnectionBuilder()
    .withUrl("http://hub.test/hubs/tasks", { transport, httpClient: new NegotiateClient() })
    .configureLogging(logger)
    .build();
  t.after(() => connection.stop()); // also when an assertion fails: no timer keeps the run alive
  await connection.start();
  await transport.deliver("Notice", notice("n1"));
  assert.deepEqual(logger.lines, ["No client method with the name 'notice' found."]);
  assert.deepEqual(transport.acked(), []);
});

test("the helper handles events without a handler quietly: deduped and acked", async (t) => {
  const transport = new MemoryTransport();
  const logger = recordingLogger();
  const conduit = new ConduitConnection({
    signalR,
    url: "http://hub.test/hubs/tasks",
    connectionOptions: { transport, httpClient: new NegotiateClient() },
    logLevel: logger,
    ack: { windowMs: 0 },
    ping: { intervalMs: 0 },
  });
  t.after(() => conduit.stop());
  const progress = [];
  conduit.on("TaskProgress", (payload) => progress.push(payload.messageId));
  await conduit.start();
  assert.equal(conduit.state, "connected");

  await transport.deliver("TaskProgress", notice("p1", { taskId: "t1", seq: 1, epoch: "e1" }));
  await transport.deliver("Notice", notice("n1")); // nobody listens to Notice
  await transport.deliver("Notice", notice("n1", { retryCount: 1 })); // its retry: acked again
  await transport.deliver("TaskCompleted", notice("c1", { taskId: "t1", seq: 2, epoch: "e1" })); // a stream's, unhandled
  await transport.deliver("Heartbeat", { at: 1 }); // fire-and-forget, unhandled: nothing to ack
  assert.deepEqual(logger.lines, []);
  assert.deepEqual(progress, ["p1"]);
  assert.deepEqual(transport.acked(), ["p1", "n1", "n1", "c1"]);
  assert.equal(conduit.stats.unhandled, 3);
  assert.equal(conduit.stats.duplicates, 1);
  assert.equal(conduit.streams.get("t1").lastSeq, 2); // still ordered: seq 2 was passed

  // A handler registered after its event first came gets the next ones, once each (the name
  // is matched without regard to case, as the official client does).
  const notices = [];
  conduit.on("notice", (payload) => notices.push(payload.messageId));
  assert.throws(() => conduit.on("NOTICE", () => {}), /already has a handler/);
  await transport.deliver("Notice", notice("n2"));
  await transport.deliver("Notice", notice("n1", { retryCount: 2 })); // processed before: not again
  assert.deepEqual(notices, ["n2"]);
  assert.deepEqual(transport.acked().slice(4), ["n2", "n1"]);
  assert.deepEqual(logger.lines, []);
});

test("with MessagePack too, an event without a handler is handled quietly", async (t) => {
  const { MessagePackHubProtocol } = await import("@microsoft/signalr-protocol-msgpack");
  const protocol = new MessagePackHubProtocol();
  const frames = [];
  const transport = {
    onreceive: null,
    onclose: null,
    handshaken: false,
    async connect() {},
    async send(data) {
      if (!this.handshaken) {
        this.handshaken = true;
        queueMicrotask(() => this.onreceive(`{}${RS}`));
        return;
      }
      frames.push(...protocol.parseMessages(data, signalR.NullLogger.instance));
    },
    async stop() {
      this.onclose?.();
    },
  };
  const logger = recordingLogger();
  const conduit = new ConduitConnection({
    signalR,
    url: "http://hub.test/hubs/tasks",
    protocol,
    connectionOptions: { transport, httpClient: new NegotiateClient() },
    logLevel: logger,
    ack: { windowMs: 0 },
    ping: { intervalMs: 0 },
  });
  t.after(() => conduit.stop());
  await conduit.start();
  transport.onreceive(protocol.writeMessage({ type: 1, target: "Notice", arguments: [notice("m1")], headers: {} }));
  for (let i = 0; i < 5; i += 1) await settle();
  assert.deepEqual(logger.lines, []);
  assert.deepEqual(
    frames.filter((f) => f.type === 1).map((f) => [f.target, ...f.arguments]),
    [["AcknowledgeMessage", "m1"]],
  );
});
