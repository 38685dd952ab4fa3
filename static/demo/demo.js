// Demo page: start a simulated task through the REST API and follow it over the task hub,
// with the official @microsoft/signalr browser client (loaded as the global `signalR`) and the
// project's helper module on top of it.
import { ConduitConnection } from "../conduit/conduit.mjs";

const $ = (id) => document.getElementById(id);

function csrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

function logEvent(name, payload) {
  const item = document.createElement("li");
  item.textContent = `${new Date().toISOString().slice(11, 23)} ${name} ${JSON.stringify(payload)}`;
  $("events").prepend(item);
}

function showState(state, text) {
  const el = $("connection");
  el.dataset.state = state;
  el.textContent = text;
}

function showProgress(payload) {
  const percent = payload.progressPercentage ?? 0;
  $("progress").value = percent;
  $("percent").textContent = `${percent} %`;
  $("status").textContent = payload.message ? `${payload.status}: ${payload.message}` : payload.status;
}

// The project's helper on the official client: reconnects with backoff, processes each event
// once and in seq order, acknowledges what asks for it (in batches), resumes the task after a
// reconnect, and measures the connection's quality with Ping (hubs/static/conduit/conduit.mjs).
// "?protocol=messagepack" speaks the binary hub protocol (the browser bundle loaded beside the
// client); JSON otherwise.
const messagepack = new URLSearchParams(location.search).get("protocol") === "messagepack";
$("protocol").textContent = messagepack ? "messagepack" : "json";
const conduit = new ConduitConnection({
  signalR,
  url: "/hubs/tasks",
  protocol: messagepack ? new signalR.protocols.msgpack.MessagePackHubProtocol() : undefined,
  ping: { intervalMs: Number(document.body.dataset.pingIntervalMs || 10000) },
});

let currentTask = null;

for (const name of ["TaskStarted", "TaskProgress", "TaskCompleted", "TaskFailed", "TaskCancelled"]) {
  conduit.on(name, (payload) => {
    logEvent(name, payload);
    if (payload.taskId === currentTask) showProgress(payload);
  });
}

const stateText = { connecting: "connecting…", connected: "connected", reconnecting: "reconnecting…", disconnected: "disconnected" };
conduit.addEventListener("state", (state) => showState(state, stateText[state] ?? state));
conduit.addEventListener("quality", ({ latencyMs, quality }) => {
  const el = $("quality");
  el.dataset.quality = quality;
  el.textContent = latencyMs === null ? quality : `${quality} (${Math.round(latencyMs)} ms)`;
});

async function startTask() {
  $("start").disabled = true;
  try {
    const response = await fetch("/api/tasks/", {
      method: "POST",
      headers: { "X-CSRFToken": csrfToken(), "Content-Type": "application/json" },
      body: JSON.stringify({ taskType: "video-generation" }),
    });
    if (response.status !== 201) throw new Error(`POST /api/tasks/ answered ${response.status}`);
    const { taskId } = await response.json();
    currentTask = taskId;
    $("task").hidden = false;
    $("task-id").textContent = taskId;
    const state = await conduit.followTask(taskId);
    if (state) showProgress(state);
  } catch (error) {
    logEvent("error", String(error));
  } finally {
    $("start").disabled = false;
  }
}

$("start").addEventListener("click", startTask);

await conduit.start();
$("start").disabled = false;
