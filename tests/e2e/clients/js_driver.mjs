// A remote-controlled official SignalR client for the end-to-end tests.
//
// node js_driver.mjs '<json config>'
//   config: {url, token, client: "10"|"8"|"6", protocol: "json"|"messagepack", events: [names],
//            reconnect: [delays ms] | null, serverTimeoutMs, keepAliveMs}
// stdout: one JSON object per line, {"event": ...}: connected, message, result, error, reconnecting,
//         reconnected, closed, stopped, start-failed.
// stdin:  one JSON command per line: {"cmd": "invoke"|"send", "id", "method", "args"} or {"cmd": "stop"}.
import readline from "node:readline";

const cfg = JSON.parse(process.argv[2]);
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

async function load(version) {
  const name = { "10": "@microsoft/signalr", "8": "signalr8", "6": "signalr6" }[version ?? "10"];
  const mod = await import(name);
  return mod.HubConnectionBuilder ? mod : mod.default;
}

const signalR = await load(cfg.client);
let builder = new signalR.HubConnectionBuilder()
  .withUrl(cfg.url, { accessTokenFactory: () => cfg.token })
  .configureLogging(signalR.LogLevel.Error);
if (cfg.protocol === "messagepack") {
  const { MessagePackHubProtocol } = await import("@microsoft/signalr-protocol-msgpack");
  builder = builder.withHubProtocol(new MessagePackHubProtocol());
}
if (Array.isArray(cfg.reconnect)) builder = builder.withAutomaticReconnect(cfg.reconnect);
const connection = builder.build();
if (cfg.serverTimeoutMs) connection.serverTimeoutInMilliseconds = cfg.serverTimeoutMs;
if (cfg.keepAliveMs) connection.keepAliveIntervalInMilliseconds = cfg.keepAliveMs;

for (const name of cfg.events ?? []) {
  connection.on(name, (payload) => emit({ event: "message", target: name, payload }));
}
connection.onreconnecting((error) => emit({ event: "reconnecting", error: error ? String(error) : null }));
connection.onreconnected((connectionId) => emit({ event: "reconnected", connectionId }));
connection.onclose((error) => emit({ event: "closed", error: error ? error.message ?? String(error) : null }));

async function handle(command) {
  const { cmd, id, method, args = [] } = command;
  if (cmd === "stop") {
    await connection.stop();
    emit({ event: "stopped" });
    process.exit(0);
  }
  try {
    if (cmd === "send") {
      await connection.send(method, ...args);
      emit({ event: "sent", id });
    } else if (cmd === "invoke") {
      const result = await connection.invoke(method, ...args);
      emit({ event: "result", id, result: result ?? null });
    } else if (cmd === "state") {
      emit({ event: "state", id, state: connection.state, connectionId: connection.connectionId });
    }
  } catch (error) {
    emit({ event: "error", id, message: error.message ?? String(error) });
  }
}

try {
  await connection.start();
  emit({ event: "connected", connectionId: connection.connectionId });
} catch (error) {
  emit({ event: "start-failed", message: error.message ?? String(error) });
  process.exit(1);
}

const lines = readline.createInterface({ input: process.stdin });
lines.on("line", (line) => {
  if (line.trim()) handle(JSON.parse(line));
});
lines.on("close", async () => {
  await connection.stop();
  process.exit(0);
});
