// A connect storm: many applications on the project's JS helper (hubs/static/conduit/conduit.mjs)
// over the official client, all started at the same moment, as a restarted server's clients
// come back. Each records when it sent a negotiate (through the official client's own HTTP
// client, subclassed), each error it was told, and the wait the server asked for (the helper's
// retryAfterMs); a refused client must not negotiate again before that wait is over.
//
// node storm_clients.mjs '<json config>'
//   config: {url, tokens: [..] (client i uses tokens[i % tokens.length]), connections,
//            deadlineMs (everything must be connected by then)}
// stdout: {"event":"storm", connected, wallMs, refusals, refusedClients, early, otherErrors,
//          firstOtherErrors, maxAttempts} once all are connected (or at the deadline);
//         {"event":"stopped"} after {"cmd":"stop"} on stdin.
import readline from "node:readline";
import * as signalR from "@microsoft/signalr";

import { ConduitConnection, retryAfterMs } from "../../../hubs/static/conduit/conduit.mjs";

const cfg = JSON.parse(process.argv[2]);
const N = cfg.connections ?? 2000;
const DEADLINE = cfg.deadlineMs ?? 120000;
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const now = () => performance.now();

/** The official client's HTTP client, noting the moment of each negotiate it sends. */
class NotingHttpClient extends signalR.DefaultHttpClient {
  constructor(attempts) {
    super(signalR.NullLogger.instance);
    this.attempts = attempts;
  }
  send(request) {
    if (request.url.includes("/negotiate")) this.attempts.push(now());
    return super.send(request);
  }
}

const started = now();
const clients = [];
for (let i = 0; i < N; i += 1) {
  const record = { attempts: [], refusals: [], others: [], connectedAt: null };
  const conduit = new ConduitConnection({
    signalR,
    url: cfg.url,
    accessTokenFactory: () => cfg.tokens[i % cfg.tokens.length],
    connectionOptions: { httpClient: new NotingHttpClient(record.attempts) },
    ping: { intervalMs: 0 },
    logLevel: signalR.LogLevel.None,
  });
  conduit.addEventListener("state", (state) => {
    if (state === "connected" && record.connectedAt === null) record.connectedAt = now();
  });
  conduit.addEventListener("error", (error) => {
    const wait = retryAfterMs(error);
    if (wait !== null) record.refusals.push({ at: now(), wait });
    else record.others.push(String(error?.message ?? error));
  });
  clients.push({ conduit, record });
}
const starts = clients.map(({ conduit }) => conduit.start());

function report() {
  let early = 0;
  for (const { record } of clients) {
    for (const refusal of record.refusals) {
      const next = record.attempts.find((t) => t > refusal.at);
      if (next !== undefined && next < refusal.at + refusal.wait - 5) early += 1; // 5 ms: timer slack
    }
  }
  const others = clients.flatMap(({ record }) => record.others);
  emit({
    event: "storm",
    connected: clients.filter(({ record }) => record.connectedAt !== null).length,
    wallMs: Math.round(Math.max(...clients.map(({ record }) => record.connectedAt ?? now())) - started),
    refusals: clients.reduce((sum, { record }) => sum + record.refusals.length, 0),
    refusedClients: clients.filter(({ record }) => record.refusals.length > 0).length,
    early,
    otherErrors: others.length,
    firstOtherErrors: others.slice(0, 5),
    maxAttempts: Math.max(...clients.map(({ record }) => record.attempts.length)),
  });
}

const deadline = new Promise((resolve) => setTimeout(resolve, DEADLINE, "deadline"));
await Promise.race([Promise.all(starts), deadline]);
report();

const lines = readline.createInterface({ input: process.stdin });
for await (const line of lines) {
  if (JSON.parse(line).cmd === "stop") {
    await Promise.race([Promise.all(clients.map(({ conduit }) => conduit.stop())), new Promise((r) => setTimeout(r, 20000))]);
    emit({ event: "stopped" });
    process.exit(0);
  }
}
