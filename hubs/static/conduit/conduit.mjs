// Conduit RT client helper: the official @microsoft/signalr client plus what Conduit RT's
// delivery semantics ask of a client (docs/client.md).
//
// - reconnects forever, with exponential backoff and full jitter, including when the first
//   start fails and when the official client's own reconnect gives up; a server that turns it
//   away (admission control: negotiate's 503 with retryAfter, or a Close saying "Retry after
//   N s") is tried again after N to 2N seconds, so a crowd turned away together spreads out;
// - processes each message once: duplicates (by messageId) are not handed to the handler again;
// - processes a stream's messages in seq order, holding back what arrives ahead of a gap, and
//   resumes a stream (ResumeTask) after a reconnect or when a gap stays open;
// - acknowledges what asks for it (requiresAck) once its handler has finished, in batches:
//   the ids gathered for ack.windowMs go in one AcknowledgeMessages frame, since receiving a
//   frame costs the server about twice what sending a message does; a handler that throws
//   nacks the message (NackMessage) with the error's text;
// - handles events the page has no handler for quietly: they are deduped, ordered and acked
//   like the others (instead of the official client's "No client method ... found" warning,
//   and a message resent until it is dead-lettered);
// - measures the round trip of Ping every ping.intervalMs, reports it to the server (which
//   records it in the connection monitor) and classifies the connection's quality.
//
// It imports nothing: pass the official client's module (`signalR` in a browser page that
// loaded signalr.min.js, `import * as signalR from "@microsoft/signalr"` in Node). Time comes
// from `clock` and randomness from `random`, so tests can drive both.

export const DEFAULTS = Object.freeze({
  reconnect: Object.freeze({ initialDelayMs: 500, maxDelayMs: 30000, factor: 2 }),
  ack: Object.freeze({ windowMs: 100, maxBatch: 1000 }),
  ping: Object.freeze({ intervalMs: 10000, goodMs: 150, fairMs: 500 }),
  dedupeSize: 10000,
  gapTimeoutMs: 3000,
});

// Where a held payload keeps the name of the event it came as.
const EVENT = Symbol("event");

const systemClock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (handle) => clearTimeout(handle),
};

/** Delay before reconnect attempt `attempt` (0-based): full jitter, uniformly drawn from 0 to
 * min(maxDelayMs, initialDelayMs * factor^attempt). */
export function backoffDelay(attempt, options = DEFAULTS.reconnect, random = Math.random) {
  const { initialDelayMs, maxDelayMs, factor } = { ...DEFAULTS.reconnect, ...options };
  const ceiling = Math.min(maxDelayMs, initialDelayMs * factor ** Math.min(attempt, 64));
  return Math.floor(random() * ceiling);
}

/** The seconds a server asked to wait before trying again, in milliseconds, from an error of the
 * official client (negotiate's 503 body `{"retryAfter": N}` is in its message, as is a Close's
 * "Retry after N s."); null when it asked for nothing. */
export function retryAfterMs(error) {
  const text = String(error?.message ?? error ?? "");
  const found = /retry\W{0,3}after\W{0,3}(\d{1,4})/i.exec(text);
  return found ? Number(found[1]) * 1000 : null;
}

/** "good", "fair" or "poor" for a ping round trip in milliseconds (null: no answer). */
export function classifyLatency(latencyMs, options = DEFAULTS.ping) {
  const { goodMs, fairMs } = { ...DEFAULTS.ping, ...options };
  if (latencyMs === null || latencyMs === undefined) return "poor";
  if (latencyMs < goodMs) return "good";
  if (latencyMs < fairMs) return "fair";
  return "poor";
}

/** Message ids seen lately: a set that forgets its oldest ids beyond `size`. */
export class RecentIds {
  constructor(size = DEFAULTS.dedupeSize) {
    this.size = size;
    this.ids = new Set();
  }

  has(id) {
    return this.ids.has(id);
  }

  add(id) {
    if (this.ids.has(id)) return;
    this.ids.add(id);
    if (this.ids.size > this.size) this.ids.delete(this.ids.values().next().value);
  }

  delete(id) {
    this.ids.delete(id);
  }
}

/** Acks gathered for `windowMs` (or until `maxBatch` ids), then handed to `flush(ids)` at once. */
export class AckBatcher {
  constructor({ windowMs = DEFAULTS.ack.windowMs, maxBatch = DEFAULTS.ack.maxBatch, flush, clock = systemClock }) {
    this.windowMs = windowMs;
    this.maxBatch = maxBatch;
    this.flushIds = flush;
    this.clock = clock;
    this.ids = [];
    this.timer = null;
  }

  add(id) {
    this.ids.push(id);
    if (this.windowMs <= 0 || this.ids.length >= this.maxBatch) this.flush();
    else if (this.timer === null) this.timer = this.clock.setTimeout(() => this.flush(), this.windowMs);
  }

  flush() {
    if (this.timer !== null) this.clock.clearTimeout(this.timer);
    this.timer = null;
    const ids = this.ids;
    this.ids = [];
    if (ids.length > 0) this.flushIds(ids);
  }
}

/** One stream's position: hands messages on in seq order, holding back those ahead of a gap. */
export class StreamOrder {
  constructor() {
    this.epoch = null;
    this.lastSeq = null; // null: nothing seen yet, the first message sets the position
    this.waiting = new Map(); // seq -> payload, ahead of a gap
  }

  /** The payloads now ready, in order. `payload.seq` and `payload.epoch` place it. */
  accept(payload) {
    if (typeof payload.seq !== "number") return [payload]; // not a stream message
    if (this.epoch !== null && payload.epoch && payload.epoch !== this.epoch) {
      // The stream's history was reset (Redis lost it, or it expired): count afresh.
      this.waiting.clear();
      this.lastSeq = null;
    }
    if (payload.epoch) this.epoch = payload.epoch;
    if (this.lastSeq === null) this.lastSeq = payload.seq - 1;
    if (payload.seq <= this.lastSeq) return [payload]; // a copy of a passed slot: the caller dedupes
    if (!this.waiting.has(payload.seq)) this.waiting.set(payload.seq, payload);
    return this.drain();
  }

  /** After a resume that could not recover the gap (`{recovered: false, seq, epoch}`): skip to
   * the server's position, handing on in order what is held up to it. */
  skipTo(seq, epoch) {
    if (epoch && epoch !== this.epoch) {
      this.epoch = epoch;
      const held = [...this.waiting.values()].filter((p) => p.epoch === epoch);
      this.waiting = new Map(held.map((p) => [p.seq, p]));
    }
    const ready = [...this.waiting.keys()]
      .filter((s) => s <= seq)
      .sort((a, b) => a - b)
      .map((s) => {
        const payload = this.waiting.get(s);
        this.waiting.delete(s);
        return payload;
      });
    this.lastSeq = Math.max(this.lastSeq ?? 0, seq);
    return [...ready, ...this.drain()];
  }

  get hasGap() {
    return this.waiting.size > 0;
  }

  drain() {
    const ready = [];
    while (this.waiting.has(this.lastSeq + 1)) {
      this.lastSeq += 1;
      ready.push(this.waiting.get(this.lastSeq));
      this.waiting.delete(this.lastSeq);
    }
    return ready;
  }
}

/** A hub connection with Conduit RT's client side of delivery (see the top of this file). */
export class ConduitConnection {
  /**
   * @param {object} options
   * @param {object} options.signalR the official client's module
   * @param {string} options.url the hub's URL, e.g. "/hubs/tasks"
   * @param {Function} [options.accessTokenFactory] returns a token (or a promise of one)
   * @param {object} [options.protocol] a hub protocol, e.g. new MessagePackHubProtocol()
   * @param {Function} [options.streamOf] a payload's stream key (default: its taskId)
   * @param {object} [options.reconnect] {initialDelayMs, maxDelayMs, factor}
   * @param {object} [options.ack] {windowMs, maxBatch}: windowMs 0 acknowledges each at once
   * @param {object} [options.ping] {intervalMs, goodMs, fairMs}: intervalMs 0 turns pings off
   * @param {number} [options.dedupeSize] how many message ids are remembered
   * @param {number} [options.gapTimeoutMs] how long a gap may stay open before a resume
   * @param {object} [options.clock] {now, setTimeout, clearTimeout}
   * @param {Function} [options.random] () => [0, 1)
   * @param {object} [options.connectionOptions] more options for withUrl (headers, transport…)
   * @param {number|object} [options.logLevel] a signalR.LogLevel, or a logger ({log(level, message)}) (default Warning)
   */
  constructor(options) {
    const { signalR, url } = options;
    if (!signalR || !url) throw new TypeError("ConduitConnection needs the signalR module and a url.");
    this.clock = options.clock ?? systemClock;
    this.random = options.random ?? Math.random;
    this.reconnectOptions = { ...DEFAULTS.reconnect, ...options.reconnect };
    this.pingOptions = { ...DEFAULTS.ping, ...options.ping };
    this.gapTimeoutMs = options.gapTimeoutMs ?? DEFAULTS.gapTimeoutMs;
    this.streamOf = options.streamOf ?? ((payload) => payload.taskId ?? null);
    this.seen = new RecentIds(options.dedupeSize ?? DEFAULTS.dedupeSize);
    this.streams = new Map(); // key -> StreamOrder
    this.followed = new Map(); // key -> {subscribe, resume}
    this.gapTimers = new Map(); // key -> timer
    this.handlers = new Map(); // lower-cased event name -> handler
    this.listening = new Set(); // lower-cased event names the official client hands to the helper
    this.listeners = { state: [], quality: [], error: [] };
    this.stats = { processed: 0, unhandled: 0, duplicates: 0, retried: 0, reconnects: 0, unrecovered: 0, acked: 0, nacked: 0, acksFailed: 0 };
    this.stopped = true;
    this.everConnected = false;
    this.onFirstConnect = null;
    this.attempt = 0;
    this.startTimer = null;
    this.pingTimer = null;
    this.latencyMs = null;
    this.quality = "offline";
    this.state = "disconnected";
    this.acks = new AckBatcher({ ...DEFAULTS.ack, ...options.ack, clock: this.clock, flush: (ids) => this.sendAcks(ids) });

    const connectionOptions = { ...options.connectionOptions };
    if (options.accessTokenFactory) connectionOptions.accessTokenFactory = options.accessTokenFactory;
    let builder = new signalR.HubConnectionBuilder()
      .withUrl(url, connectionOptions)
      .withAutomaticReconnect({ nextRetryDelayInMilliseconds: (ctx) => this.retryDelay(ctx) })
      .configureLogging(options.logLevel ?? signalR.LogLevel.Warning);
    const protocol = options.protocol ?? (signalR.JsonHubProtocol ? new signalR.JsonHubProtocol() : null);
    if (protocol) builder = builder.withHubProtocol(this.listeningProtocol(protocol, signalR.MessageType?.Invocation ?? 1));
    this.connection = builder.build();
    this.connection.onreconnecting(() => this.setState("reconnecting"));
    this.connection.onreconnected(() => this.connected());
    this.connection.onclose((error) => this.closed(error));
  }

  // ---------------------------------------------------------------- public API

  /** Handle server event `name` (case-insensitive, as in SignalR): `handler(payload)` runs once
   * per messageId, in seq order per stream; when it returns (or its promise resolves) an
   * acknowledged message is acked, when it throws it is nacked. An event that comes before its
   * handler is registered (or that has none) is processed without one: deduped and acked. */
  on(name, handler) {
    const key = name.toLowerCase();
    if (this.handlers.has(key)) throw new Error(`${name} already has a handler.`);
    this.handlers.set(key, handler);
    this.listen(name);
    return this;
  }

  /** Follow a stream: `subscribe()` runs on the first connect (or at once if connected), and
   * `resume(lastSeq, epoch)` after each reconnect and when a gap stays open; resume answers
   * `{recovered, seq, epoch}` as ResumeTask does. */
  async follow(key, { subscribe, resume }) {
    this.followed.set(key, { subscribe, resume });
    if (this.state === "connected") return subscribe();
    return undefined;
  }

  /** Follow a task of the task hubs: SubscribeToTask now, ResumeTask after reconnects. Answers
   * SubscribeToTask's answer (the task's current state) when connected. */
  followTask(taskId) {
    return this.follow(taskId, {
      subscribe: () => this.connection.invoke("SubscribeToTask", taskId),
      resume: (lastSeq, epoch) => this.connection.invoke("ResumeTask", taskId, lastSeq, epoch),
    });
  }

  /** Stop following `key` (and, for a task, leave its group). */
  async unfollow(key, leave = () => this.connection.invoke("UnsubscribeFromTask", key)) {
    this.followed.delete(key);
    this.streams.delete(key);
    this.clearGapTimer(key);
    if (this.state === "connected") await leave();
  }

  invoke(method, ...args) {
    return this.connection.invoke(method, ...args);
  }

  send(method, ...args) {
    return this.connection.send(method, ...args);
  }

  /** Listen: "state" (connecting, connected, reconnecting, disconnected), "quality"
   * ({latencyMs, quality}), "error" (errors the helper caught: a handler's, a resume's). */
  addEventListener(kind, listener) {
    this.listeners[kind].push(listener);
  }

  /** Connect, retrying with backoff until it works or `stop()` is called; resolves then. */
  start() {
    this.stopped = false;
    this.attempt = 0;
    return new Promise((resolve) => {
      this.onFirstConnect = resolve;
      this.tryStart();
    });
  }

  async stop() {
    this.stopped = true;
    if (this.onFirstConnect) this.onFirstConnect(); // a start() still trying gives up
    this.onFirstConnect = null;
    this.clock.clearTimeout(this.startTimer);
    this.clock.clearTimeout(this.pingTimer);
    for (const key of [...this.gapTimers.keys()]) this.clearGapTimer(key);
    this.acks.flush();
    await this.connection.stop();
    this.setQuality(null, "offline");
    this.setState("disconnected");
  }

  get connectionId() {
    return this.connection.connectionId;
  }

  // ---------------------------------------------------------------- connection life

  retryDelay(ctx) {
    return this.stopped ? null : this.nextDelay(ctx.previousRetryCount, ctx.retryReason);
  }

  /** Before attempt `attempt`: what the server asked for (`reason` carries it), between that and
   * twice that; else the backoff. */
  nextDelay(attempt, reason) {
    const asked = retryAfterMs(reason);
    if (asked !== null) return asked + Math.floor(this.random() * asked);
    return backoffDelay(attempt, this.reconnectOptions, this.random);
  }

  async tryStart() {
    if (this.stopped) return;
    this.setState("connecting");
    try {
      await this.connection.start();
    } catch (error) {
      this.emit("error", error);
      const delay = this.nextDelay(this.attempt, error);
      this.attempt += 1;
      this.startTimer = this.clock.setTimeout(() => this.tryStart(), delay);
      return;
    }
    await this.connected();
  }

  async connected() {
    const first = this.onFirstConnect;
    this.onFirstConnect = null;
    const again = this.everConnected;
    if (again) this.stats.reconnects += 1; // the official client's reconnect, or ours after a close
    this.everConnected = true;
    this.attempt = 0;
    this.setState("connected");
    this.schedulePing(0);
    for (const [key, follow] of this.followed) {
      if (again && this.streams.get(key)?.lastSeq != null) await this.resume(key);
      else await this.call(() => follow.subscribe());
    }
    if (first) first();
  }

  closed(error) {
    this.clock.clearTimeout(this.pingTimer);
    this.setQuality(null, "offline");
    this.setState("disconnected");
    if (this.stopped) return;
    // The official client's reconnect gave up (or the server closed without allowing it):
    // start again, with backoff, for as long as nobody called stop().
    const delay = this.nextDelay(this.attempt, error);
    this.attempt += 1;
    this.startTimer = this.clock.setTimeout(() => this.tryStart(), delay);
  }

  // ---------------------------------------------------------------- messages

  /** Have the official client hand event `name` to the helper (once per name, any case). */
  listen(name) {
    const key = name.toLowerCase();
    if (this.listening.has(key)) return;
    this.listening.add(key);
    this.connection.on(name, (payload) => this.receive(key, payload));
  }

  /** `protocol` that, as it parses a frame, makes the helper listen to every event the frame
   * invokes, before the official client looks for the event's handlers: an event nobody
   * registered is then processed quietly (see `on`) instead of the official client logging
   * "No client method with the name '...' found." and never acknowledging it. */
  listeningProtocol(protocol, invocationType) {
    return {
      get name() {
        return protocol.name;
      },
      get version() {
        return protocol.version;
      },
      get transferFormat() {
        return protocol.transferFormat;
      },
      writeMessage: (message) => protocol.writeMessage(message),
      parseMessages: (input, logger) => {
        const messages = protocol.parseMessages(input, logger);
        for (const message of messages) {
          if (message.type === invocationType && typeof message.target === "string") this.listen(message.target);
        }
        return messages;
      },
    };
  }

  receive(name, payload) {
    if (!payload || typeof payload !== "object") return this.dispatch(name, payload);
    if (payload.retryCount > 0) this.stats.retried += 1;
    const key = this.streamOf(payload);
    if (key === null || key === undefined || typeof payload.seq !== "number") return this.process(name, payload);
    let order = this.streams.get(key);
    if (!order) this.streams.set(key, (order = new StreamOrder()));
    for (const ready of order.accept({ ...payload, [EVENT]: name })) this.process(ready[EVENT] ?? name, ready);
    if (order.hasGap) this.watchGap(key);
    else this.clearGapTimer(key);
    return undefined;
  }

  process(name, payload) {
    const id = payload.messageId;
    if (id && this.seen.has(id)) {
      this.stats.duplicates += 1;
      if (payload.requiresAck) this.acks.add(id); // a retry of what was processed: ack it again
      return;
    }
    if (id) this.seen.add(id);
    const clean = { ...payload };
    delete clean[EVENT];
    this.dispatch(name, clean);
  }

  async dispatch(name, payload) {
    const handler = this.handlers.get(name);
    try {
      if (handler) await handler(payload);
      else this.stats.unhandled += 1;
      this.stats.processed += 1;
      if (payload?.requiresAck && payload.messageId) {
        this.stats.acked += 1;
        this.acks.add(payload.messageId);
      }
    } catch (error) {
      this.emit("error", error);
      if (payload?.messageId) this.seen.delete(payload.messageId); // its retry is processed again
      if (payload?.requiresAck && payload.messageId) {
        this.stats.nacked += 1;
        this.connection.send("NackMessage", payload.messageId, String(error?.message ?? error).slice(0, 500)).catch(() => {});
      }
    }
  }

  sendAcks(ids) {
    if (this.connection.state !== "Connected") {
      this.stats.acksFailed += ids.length; // the server sends them again; they are acked then
      return;
    }
    const frame = ids.length === 1 ? this.connection.send("AcknowledgeMessage", ids[0]) : this.connection.send("AcknowledgeMessages", ids);
    frame.catch(() => {
      this.stats.acksFailed += ids.length;
    });
  }

  // ---------------------------------------------------------------- resume and gaps

  async resume(key) {
    const follow = this.followed.get(key);
    const order = this.streams.get(key);
    if (!follow || !order) return;
    const answer = await this.call(() => follow.resume(order.lastSeq ?? 0, order.epoch));
    if (answer && answer.recovered === false) {
      this.stats.unrecovered += 1;
      for (const ready of order.skipTo(answer.seq ?? 0, answer.epoch ?? null)) this.process(ready[EVENT], ready);
    }
    if (!order.hasGap) this.clearGapTimer(key);
  }

  watchGap(key) {
    if (this.gapTimers.has(key)) return;
    this.gapTimers.set(
      key,
      this.clock.setTimeout(async () => {
        this.gapTimers.delete(key);
        if (this.state === "connected") await this.resume(key);
        if (this.streams.get(key)?.hasGap) this.watchGap(key);
      }, this.gapTimeoutMs),
    );
  }

  clearGapTimer(key) {
    const timer = this.gapTimers.get(key);
    if (timer !== undefined) this.clock.clearTimeout(timer);
    this.gapTimers.delete(key);
  }

  // ---------------------------------------------------------------- ping quality

  schedulePing(delayMs) {
    this.clock.clearTimeout(this.pingTimer);
    if (!(this.pingOptions.intervalMs > 0)) return;
    this.pingTimer = this.clock.setTimeout(() => this.ping(), delayMs);
  }

  async ping() {
    if (this.state !== "connected") return;
    const started = this.clock.now();
    try {
      await this.connection.invoke("Ping", this.latencyMs);
      this.setQuality(this.clock.now() - started);
    } catch {
      this.setQuality(null);
    }
    if (this.state === "connected") this.schedulePing(this.pingOptions.intervalMs);
  }

  setQuality(latencyMs, quality = classifyLatency(latencyMs, this.pingOptions)) {
    this.latencyMs = latencyMs;
    this.quality = quality;
    this.emit("quality", { latencyMs, quality });
  }

  // ---------------------------------------------------------------- helpers

  async call(fn) {
    try {
      return await fn();
    } catch (error) {
      this.emit("error", error); // cut mid-call: the next reconnect resumes anyway
      return null;
    }
  }

  setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.emit("state", state);
  }

  emit(kind, value) {
    for (const listener of this.listeners[kind]) {
      try {
        listener(value);
      } catch {
        // a listener's own error is the listener's business
      }
    }
  }
}

