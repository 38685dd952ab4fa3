// Demo page: start a simulated task through the REST API and follow it over the task hub,
// with the official @microsoft/signalr browser client (loaded as the global `signalR`).
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

const connection = new signalR.HubConnectionBuilder()
  .withUrl("/hubs/tasks")
  .withAutomaticReconnect()
  .configureLogging(signalR.LogLevel.Warning)
  .build();

let currentTask = null;

// Acknowledged events (requiresAck: the terminal ones by default) are resent (retryCount + 1)
// until this connection calls AcknowledgeMessage. Copies of an event already shown are
// acknowledged again and not shown twice (docs/delivery.md).
const seen = new Set();

for (const name of ["TaskStarted", "TaskProgress", "TaskCompleted", "TaskFailed", "TaskCancelled"]) {
  connection.on(name, (payload) => {
    const fresh = !seen.has(payload.messageId);
    seen.add(payload.messageId);
    if (fresh) {
      logEvent(name, payload);
      if (payload.taskId === currentTask) showProgress(payload);
    }
    if (payload.requiresAck) {
      connection.send("AcknowledgeMessage", payload.messageId).catch(() => {});
    }
  });
}

connection.onreconnecting(() => showState("connecting", "reconnecting…"));
connection.onreconnected(async () => {
  showState("connected", "connected");
  if (currentTask) await connection.invoke("SubscribeToTask", currentTask);
});
connection.onclose(() => showState("disconnected", "disconnected"));

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
    const state = await connection.invoke("SubscribeToTask", taskId);
    showProgress(state);
  } catch (error) {
    logEvent("error", String(error));
  } finally {
    $("start").disabled = false;
  }
}

$("start").addEventListener("click", startTask);

try {
  await connection.start();
  showState("connected", "connected");
  $("start").disabled = false;
} catch (error) {
  showState("error", `could not connect: ${error}`);
}
