// Load: many official SignalR clients (@microsoft/signalr) in one Node process. Each connection
// opens the way a real client does (negotiate, then WebSockets), subscribes to one task of its
// user, pings once at a random moment of its life, and stops after a random lifetime.
//
// node load_clients.mjs '<json config>'
//   config: {
//     url,                      hub URL, e.g. http://127.0.0.1:8000/hubs/tasks
//     users: [{token, taskIds: [..]}],  connection i belongs to users[i % users.length] and
//                               subscribes to one of that user's tasks (round robin)
//     connections: 1000,        how many connections in all
//     concurrency: 25,          most start() calls in flight at once (the ramp)
//     lifeMinMs: 1000, lifeMaxMs: 5000,  each connection's lifetime, uniform, from a seeded PRNG
//     lifeFrom: "peak"|"connected",  "peak" (default): lifetimes count from the moment every
//                               connection is up and subscribed, so all of them are open at once;
//                               "connected": from the connection's own start()
//     seed: 1,                  PRNG seed (lifetimes and ping moments repeat with the same seed)
//     holdAtPeak: false,        true: at the peak, wait for {"cmd":"go"} on stdin before the
//                               lifetimes start (so a test can read the peak while nothing moves)
//     skipNegotiation: false,   true: straight to the WebSocket, no negotiate request (to compare
//                               what negotiate costs the server; real clients negotiate)
//     startTimeoutMs: 30000, callTimeoutMs: 15000, stopTimeoutMs: 10000, deadlineMs: 90000
//   }
// stdout: JSON lines: {"event":"peak", open, atMs} once every connection is up and subscribed
// (before any stops), then {"event":"load", ...} at the end: counts, connect/subscribe time
// percentiles (ms), the peak number open at once, ramp and wall time, the first errors.
// Every await is bounded; the whole run is bounded by deadlineMs (it then reports and exits 2).
import * as signalR from "@microsoft/signalr";

const cfg = JSON.parse(process.argv[2]);
const N = cfg.connections ?? 1000;
const CONCURRENCY = cfg.concurrency ?? 25;
const LIFE_MIN = cfg.lifeMinMs ?? 1000;
const LIFE_MAX = cfg.lifeMaxMs ?? 5000;
const LIFE_FROM = cfg.lifeFrom ?? "peak";
const START_TIMEOUT = cfg.startTimeoutMs ?? 30000;
const CALL_TIMEOUT = cfg.callTimeoutMs ?? 15000;
const STOP_TIMEOUT = cfg.stopTimeoutMs ?? 10000;
const DEADLINE = cfg.deadlineMs ?? 90000;

const emit = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const now = () => performance.now();
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// mulberry32: a small seeded PRNG, so a run can be repeated.
function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const random = prng(cfg.seed ?? 1);
// Drawn up front, in index order, so they do not depend on the order connections come up in.
const plans = Array.from({ length: N }, () => ({
  life: LIFE_MIN + random() * (LIFE_MAX - LIFE_MIN),
  pingAt: random(), // the fraction of the lifetime at which the connection pings
}));

function bounded(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

const t0 = now();
const stats = {
  connections: N,
  connected: 0,
  failedStart: 0,
  failedSubscribe: 0,
  failedPing: 0,
  failedStop: 0,
  unexpectedClose: 0,
  stopped: 0,
  open: 0,
  peakOpen: 0,
};
const connectMs = [];
const subscribeMs = [];
const livedMs = [];
const errors = [];
const noteError = (what, error) => {
  if (errors.length < 20) errors.push(`${what}: ${error?.message ?? String(error)}`);
};

// Ramp: start() calls settled (connected or failed). Peak: every connection connected and
// subscribed (or failed): the moment lifetimes start counting with lifeFrom "peak".
let startsSettled = 0;
let rampMs = null;
let ready = 0;
let peakMs = null;
let peakReached;
const peak = new Promise((resolve) => {
  peakReached = resolve;
});
function startSettled() {
  startsSettled += 1;
  if (startsSettled === N) rampMs = now() - t0;
}
function becameReady() {
  ready += 1;
  if (ready === N) {
    peakMs = now() - t0;
    emit({ event: "peak", open: stats.open, atMs: Math.round(peakMs) });
    if (cfg.holdAtPeak) goSignal.then(() => peakReached());
    else peakReached();
  }
}

// {"cmd":"go"} on stdin releases a hold at the peak (holdAtPeak).
const goSignal = new Promise((resolve) => {
  if (!cfg.holdAtPeak) return;
  process.stdin.setEncoding("utf8");
  let buffered = "";
  process.stdin.on("data", (chunk) => {
    buffered += chunk;
    if (buffered.includes('"go"')) resolve();
  });
});

// Bounded concurrency for start(): at most CONCURRENCY negotiates + handshakes in flight.
let inFlight = 0;
const waiters = [];
async function acquire() {
  if (inFlight < CONCURRENCY) {
    inFlight += 1;
    return;
  }
  await new Promise((resolve) => waiters.push(resolve));
}
function release() {
  const next = waiters.shift();
  if (next) next();
  else inFlight -= 1;
}

async function runOne(index) {
  const user = cfg.users[index % cfg.users.length];
  const taskId = user.taskIds[Math.floor(index / cfg.users.length) % user.taskIds.length];
  const { life, pingAt } = plans[index];
  const options = { accessTokenFactory: () => user.token };
  if (cfg.skipNegotiation) Object.assign(options, { skipNegotiation: true, transport: signalR.HttpTransportType.WebSockets });
  const connection = new signalR.HubConnectionBuilder()
    .withUrl(cfg.url, options)
    .configureLogging(signalR.LogLevel.None)
    .build();
  let stopping = false;
  let opened = false;
  const closed = () => {
    if (opened) {
      opened = false;
      stats.open -= 1;
    }
  };
  connection.onclose((error) => {
    closed();
    if (!stopping) {
      stats.unexpectedClose += 1;
      noteError(`connection ${index} closed`, error ?? "without an error");
    }
  });

  await acquire();
  const started = now();
  let startError = null;
  try {
    await bounded(connection.start(), START_TIMEOUT, "start()");
  } catch (error) {
    startError = error ?? new Error("start() failed");
  } finally {
    release();
  }
  startSettled();
  if (startError) {
    stats.failedStart += 1;
    noteError(`connection ${index} start`, startError);
    becameReady();
    stopping = true;
    await bounded(connection.stop(), STOP_TIMEOUT, "stop()").catch(() => {});
    return;
  }
  const connectedAt = now();
  connectMs.push(connectedAt - started);
  stats.connected += 1;
  opened = true;
  stats.open += 1;
  stats.peakOpen = Math.max(stats.peakOpen, stats.open);

  try {
    const before = now();
    const answer = await bounded(connection.invoke("SubscribeToTask", taskId), CALL_TIMEOUT, "SubscribeToTask");
    if (!answer || answer.taskId !== taskId) throw new Error(`unexpected answer ${JSON.stringify(answer)}`);
    subscribeMs.push(now() - before);
  } catch (error) {
    stats.failedSubscribe += 1;
    noteError(`connection ${index} subscribe`, error);
  }
  becameReady();

  if (LIFE_FROM === "peak") await peak;
  const lifeStart = LIFE_FROM === "peak" ? now() : connectedAt;
  const pingDelay = lifeStart + pingAt * life - now();
  if (pingDelay > 0) await sleep(pingDelay);
  try {
    const pong = await bounded(connection.invoke("Ping"), CALL_TIMEOUT, "Ping");
    if (!pong || pong.pong !== "ok") throw new Error(`unexpected answer ${JSON.stringify(pong)}`);
  } catch (error) {
    stats.failedPing += 1;
    noteError(`connection ${index} ping`, error);
  }
  const rest = lifeStart + life - now();
  if (rest > 0) await sleep(rest);

  stopping = true;
  livedMs.push(now() - connectedAt);
  try {
    await bounded(connection.stop(), STOP_TIMEOUT, "stop()");
    stats.stopped += 1;
  } catch (error) {
    stats.failedStop += 1;
    noteError(`connection ${index} stop`, error);
  }
  closed(); // stop() resolved: closed, whether or not onclose ran first
}

function summary(values) {
  if (!values.length) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const at = (q) => sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)];
  const round = (v) => Math.round(v * 10) / 10;
  return { min: round(sorted[0]), median: round(at(0.5)), p95: round(at(0.95)), max: round(sorted.at(-1)) };
}

function report(status) {
  const { open, ...counts } = stats;
  const seconds = (ms) => (ms === null ? null : Math.round(ms) / 1000);
  return {
    event: "load",
    status,
    ...counts,
    stillOpen: open,
    concurrency: CONCURRENCY,
    lifeFrom: LIFE_FROM,
    skipNegotiation: Boolean(cfg.skipNegotiation),
    connectMs: summary(connectMs),
    subscribeMs: summary(subscribeMs),
    livedMs: summary(livedMs),
    rampSeconds: seconds(rampMs),
    peakSeconds: seconds(peakMs),
    connectsPerSecond: rampMs ? Math.round((stats.connected / rampMs) * 10000) / 10 : null,
    wallSeconds: seconds(now() - t0),
    errors,
  };
}

const deadline = setTimeout(() => {
  emit(report("deadline"));
  process.exit(2);
}, DEADLINE);

await Promise.allSettled(Array.from({ length: N }, (_, i) => runOne(i)));
clearTimeout(deadline);
emit(report("done"));
process.exit(0);
