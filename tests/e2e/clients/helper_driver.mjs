// One application on the project's JS helper (hubs/static/conduit/conduit.mjs) over the official
// client, following one task; reports what its handlers saw, the helper's stats and its quality.
//
// node helper_driver.mjs '<json config>'
//   config: {url, token, taskId, events: [names], ackWindowMs, pingIntervalMs, protocol ("json" |
//            "messagepack"),
//            failOnce: {field: value} (the handler throws the first time a payload matches)}
// stdout: {"event":"connected"}, {"event":"processed", name, messageId, seq, retryCount, ...},
//         {"event":"quality", latencyMs, quality}, {"event":"report", stats, lastSeq, state}.
// stdin:  {"cmd":"report"} | {"cmd":"stop"}.
import readline from "node:readline";
import * as signalR from "@microsoft/signalr";

import { ConduitConnection } from "../../../hubs/static/conduit/conduit.mjs";

const cfg = JSON.parse(process.argv[2]);
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

let protocol;
if (cfg.protocol === "messagepack") {
  const { MessagePackHubProtocol } = await import("@microsoft/signalr-protocol-msgpack");
  protocol = new MessagePackHubProtocol();
}

const conduit = new ConduitConnection({
  signalR,
  protocol,
  url: cfg.url,
  accessTokenFactory: () => cfg.token,
  ack: { windowMs: cfg.ackWindowMs ?? 100 },
  ping: { intervalMs: cfg.pingIntervalMs ?? 10000 },
  logLevel: signalR.LogLevel.None,
});

let failed = false;
const matchesFailOnce = (payload) =>
  cfg.failOnce && Object.entries(cfg.failOnce).every(([field, value]) => payload[field] === value);

for (const name of cfg.events) {
  conduit.on(name, (payload) => {
    if (!failed && matchesFailOnce(payload)) {
      failed = true;
      emit({ event: "failed", name, messageId: payload.messageId });
      throw new Error("the application could not process it this time");
    }
    emit({ event: "processed", name, ...payload });
  });
}
conduit.addEventListener("quality", (quality) => emit({ event: "quality", ...quality }));

await conduit.followTask(cfg.taskId);
await conduit.start();
emit({ event: "connected", connectionId: conduit.connectionId });

const lines = readline.createInterface({ input: process.stdin });
lines.on("line", async (line) => {
  if (!line.trim()) return;
  const { cmd } = JSON.parse(line);
  if (cmd === "report") {
    const order = conduit.streams.get(cfg.taskId);
    emit({ event: "report", stats: conduit.stats, lastSeq: order?.lastSeq ?? null, state: conduit.state });
  } else if (cmd === "stop") {
    await conduit.stop();
    emit({ event: "stopped" });
    process.exit(0);
  }
});
lines.on("close", () => process.exit(0));
