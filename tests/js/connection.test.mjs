// ConduitConnection's own logic on an explicit clock, over a stand-in for the official client's
// HubConnection (the real client against a real server: tests/e2e/test_js_helper.py and
// test_delivery_faults.py). What is checked here is what those cannot provoke on purpose: a gap
// that stays open without a reconnect, a resume that cannot recover, the order of calls after a
// reconnect, a close the official client does not reconnect from.
import assert from "node:assert/strict";
import { test } from "node:test";

import { FakeClock, settle } from "./fake_clock.mjs";

import { ConduitConnection, retryAfterMs } from "../../hubs/static/conduit/conduit.mjs";

/** The parts of the official HubConnection the helper uses; records what it is asked. */
class FakeHubConnection {
  constructor() {
    this.state = "Disconnected";
    this.handlers = new Map();
    this.calls = []; // [kind, method, ...args]
    this.answers = new Map(); // method -> (args) => answer
    this.startFailures = 0;
    this.callbacks = { reconnecting: [], reconnected: [], close: [] };
  }
  on(name, fn) {
    this.handlers.set(name, fn);
  }
  onreconnecting(fn) {
    this.callbacks.reconnecting.push(fn);
  }
  onreconnected(fn) {
    this.callbacks.reconnected.push(fn);
  }
  onclose(fn) {
    this.callbacks.close.push(fn);
  }
  async start() {
    if (this.startFailures > 0) {
      this.startFailures -= 1;
      throw new Error(this.startError ?? "connection refused");
    }
    this.state = "Connected";
  }
  async stop() {
    this.state = "Disconnected";
  }
  async invoke(method, ...args) {
    this.calls.push(["invoke", method, ...args]);
    const answer = this.answers.get(method);
    return answer ? answer(...args) : null;
  }
  async send(method, ...args) {
    this.calls.push(["send", method, ...args]);
  }
  deliver(name, payload) {
    return this.handlers.get(name)(payload);
  }
  closeFromServer(error) {
    this.state = "Disconnected";
    for (const fn of this.callbacks.close) fn(error);
  }
  sent(method) {
    return this.calls.filter(([kind, m]) => kind === "send" && m === method).map(([, , ...args]) => args);
  }
  invoked(method) {
    return this.calls.filter(([kind, m]) => kind === "invoke" && m === method).map(([, , ...args]) => args);
  }
}

function fakeSignalR(hub) {
  class Builder {
    withUrl() {
      return this;
    }
    withAutomaticReconnect(policy) {
      hub.policy = policy;
      return this;
    }
    configureLogging() {
      return this;
    }
    withHubProtocol() {
      return this;
    }
    build() {
      return hub;
    }
  }
  return { HubConnectionBuilder: Builder, LogLevel: { Warning: 3, None: 6 } };
}

function setup(options = {}) {
  const hub = new FakeHubConnection();
  const clock = new FakeClock();
  const seen = [];
  const conduit = new ConduitConnection({
    signalR: fakeSignalR(hub),
    url: "/hubs/tasks",
    clock,
    random: () => 0.5,
    ping: { intervalMs: 0 },
    ...options,
  });
  conduit.on("TaskProgress", (payload) => {
    if (options.failFirst && !seen.some((p) => p.messageId === payload.messageId) && payload.messageId === options.failFirst) {
      seen.push({ ...payload, failed: true });
      throw new Error("not now");
    }
    seen.push(payload);
  });
  return { hub, clock, conduit, seen };
}

const event = (seq, extra = {}) => ({ taskId: "t1", seq, epoch: "e1", messageId: `m${seq}`, retryCount: 0, ...extra });

test("start retries with backoff until the server answers, then subscribes the followed tasks", async () => {
  const { hub, clock, conduit } = setup();
  hub.startFailures = 2;
  hub.answers.set("SubscribeToTask", () => ({ taskId: "t1", status: "running" }));
  await conduit.followTask("t1");
  const started = conduit.start();
  await settle();
  assert.equal(conduit.state, "connecting");
  await clock.advance(250); // attempt 0: half of 500 ms (random 0.5)
  await clock.advance(500); // attempt 1: half of 1000 ms
  await started;
  assert.equal(conduit.state, "connected");
  assert.deepEqual(hub.invoked("SubscribeToTask"), [["t1"]]);
  assert.equal(conduit.stats.reconnects, 0);
});

test("retryAfterMs reads the server's wait from negotiate's 503 and from a Close", () => {
  // What the official client (10) throws for negotiate's 503: the body is in the message.
  const negotiate = new Error(
    'Failed to complete negotiation with the server: Error: {"error":"The server is busy: too many connection attempts.","retryAfter":7}: Status code \'503\'',
  );
  assert.equal(retryAfterMs(negotiate), 7000);
  const close = new Error("Server returned an error on close: The server is busy: too many connections. Retry after 5 s.");
  assert.equal(retryAfterMs(close), 5000);
  assert.equal(retryAfterMs(new Error("connection refused")), null);
  assert.equal(retryAfterMs(undefined), null);
});

test("a server that asks to retry later is tried again between its wait and twice it, not on the backoff", async () => {
  const { hub, clock, conduit } = setup();
  hub.startFailures = 1;
  hub.startError = 'Failed to complete negotiation with the server: Error: {"retryAfter":4}: Status code \'503\'';
  const started = conduit.start();
  await settle();
  await clock.advance(250); // the backoff's first delay would have been 250 ms
  assert.equal(conduit.state, "connecting");
  await clock.advance(5750); // 4 s + half of 4 s (random 0.5)
  await started;
  assert.equal(conduit.state, "connected");
  // The official client's own reconnect asks the helper the same way ...
  assert.equal(hub.policy.nextRetryDelayInMilliseconds({ previousRetryCount: 0, retryReason: new Error("Retry after 2 s.") }), 3000);
  assert.equal(hub.policy.nextRetryDelayInMilliseconds({ previousRetryCount: 0, retryReason: new Error("gone") }), 250);
  // ... and so does a close it does not reconnect from.
  hub.closeFromServer(new Error("Server returned an error on close: busy. Retry after 1 s."));
  assert.equal(conduit.state, "disconnected");
  await clock.advance(1499);
  assert.equal(conduit.state, "disconnected");
  await clock.advance(1);
  await settle();
  assert.equal(conduit.state, "connected");
});

test("processed once, in seq order; acknowledged in one batch after the window; a failure is nacked and its retry processed", async () => {
  const { hub, clock, conduit, seen } = setup({ failFirst: "m3" });
  await conduit.followTask("t1");
  await conduit.start();
  hub.deliver("TaskProgress", event(1, { requiresAck: true }));
  hub.deliver("TaskProgress", event(2, { requiresAck: true }));
  hub.deliver("TaskProgress", event(4, { requiresAck: true })); // ahead of a gap: waits
  assert.deepEqual(seen.map((p) => p.seq), [1, 2]);
  hub.deliver("TaskProgress", event(3, { requiresAck: true })); // fills it; its handler throws
  await settle();
  assert.deepEqual(seen.map((p) => [p.seq, !!p.failed]), [[1, false], [2, false], [3, true], [4, false]]);
  assert.deepEqual(hub.sent("NackMessage"), [["m3", "not now"]]);
  hub.deliver("TaskProgress", event(2, { requiresAck: true, retryCount: 1 })); // a retry of a processed one
  await settle();
  assert.deepEqual(hub.sent("AcknowledgeMessages"), []); // still inside the window
  await clock.advance(100);
  assert.deepEqual(hub.sent("AcknowledgeMessages"), [[["m1", "m2", "m4", "m2"]]]);
  hub.deliver("TaskProgress", event(3, { requiresAck: true, retryCount: 1 })); // the nacked one, again
  await settle();
  await clock.advance(100);
  assert.deepEqual(seen.filter((p) => !p.failed).map((p) => p.seq), [1, 2, 4, 3]);
  assert.deepEqual(hub.sent("AcknowledgeMessage"), [["m3"]]); // a batch of one goes as the single form
  assert.equal(conduit.stats.duplicates, 1);
  assert.equal(conduit.stats.retried, 2);
});

test("a gap that stays open is resumed; a resume that cannot recover skips to the server's position", async () => {
  const { hub, clock, conduit, seen } = setup({ gapTimeoutMs: 1000 });
  await conduit.followTask("t1");
  await conduit.start();
  hub.answers.set("ResumeTask", () => ({ recovered: false, seq: 7, epoch: "e1" }));
  hub.deliver("TaskProgress", event(1));
  hub.deliver("TaskProgress", event(5));
  hub.deliver("TaskProgress", event(7, { messageId: "snapshot" })); // what the resume sends: current state
  hub.deliver("TaskProgress", event(9));
  assert.deepEqual(seen.map((p) => p.seq), [1]);
  await clock.advance(999);
  assert.deepEqual(hub.invoked("ResumeTask"), []);
  await clock.advance(1);
  assert.deepEqual(hub.invoked("ResumeTask"), [["t1", 1, "e1"]]);
  assert.deepEqual(seen.map((p) => p.seq), [1, 5, 7]); // up to the position, in order
  assert.equal(conduit.stats.unrecovered, 1);
  hub.deliver("TaskProgress", event(8));
  assert.deepEqual(seen.map((p) => p.seq), [1, 5, 7, 8, 9]);
  await clock.advance(5000);
  assert.equal(hub.invoked("ResumeTask").length, 1); // no gap left, no more resumes
});

test("after a reconnect each followed task resumes from its last seq", async () => {
  const { hub, conduit } = setup();
  hub.answers.set("ResumeTask", () => ({ recovered: true, seq: 3, epoch: "e1" }));
  await conduit.followTask("t1");
  await conduit.followTask("t2"); // nothing received yet: subscribed again instead
  await conduit.start();
  hub.deliver("TaskProgress", event(3));
  for (const fn of hub.callbacks.reconnecting) fn();
  assert.equal(conduit.state, "reconnecting");
  for (const fn of hub.callbacks.reconnected) await fn();
  assert.deepEqual(hub.invoked("ResumeTask"), [["t1", 3, "e1"]]);
  assert.deepEqual(hub.invoked("SubscribeToTask"), [["t1"], ["t2"], ["t2"]]);
  assert.equal(conduit.stats.reconnects, 1);
  // The official client's reconnect policy: backoff while running, none once stopped.
  assert.equal(hub.policy.nextRetryDelayInMilliseconds({ previousRetryCount: 2 }), 1000);
  await conduit.stop();
  assert.equal(hub.policy.nextRetryDelayInMilliseconds({ previousRetryCount: 2 }), null);
});

test("a close the official client does not reconnect from is followed by a new start, with backoff", async () => {
  const { hub, clock, conduit } = setup();
  await conduit.start();
  hub.closeFromServer();
  assert.equal(conduit.state, "disconnected");
  await clock.advance(250);
  assert.equal(conduit.state, "connected");
  assert.equal(conduit.stats.reconnects, 1);
  await conduit.stop();
  hub.closeFromServer(); // closed after stop(): stays closed
  await clock.advance(60000);
  assert.equal(conduit.state, "disconnected");
});

test("pings measure the round trip, report the previous one, and classify it", async () => {
  const { hub, clock, conduit } = setup({ ping: { intervalMs: 1000, goodMs: 150, fairMs: 500 } });
  const qualities = [];
  conduit.addEventListener("quality", (q) => qualities.push(q));
  let delay = 40;
  hub.answers.set("Ping", () => {
    clock.time += delay; // the server answers `delay` ms later
    return { pong: "ok" };
  });
  await conduit.start();
  await clock.advance(0);
  delay = 300;
  await clock.advance(1000);
  hub.answers.set("Ping", () => {
    throw new Error("timed out");
  });
  await clock.advance(1300);
  assert.deepEqual(
    qualities.map((q) => [q.latencyMs, q.quality]),
    [
      [40, "good"],
      [300, "fair"],
      [null, "poor"],
    ],
  );
  assert.deepEqual(hub.invoked("Ping"), [[null], [40], [300]]);
  await conduit.stop();
  assert.deepEqual(qualities.at(-1), { latencyMs: null, quality: "offline" });
});
