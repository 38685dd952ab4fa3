// Demo page: start a simulated task through the REST API and follow it over the task hub,
// with the official @microsoft/signalr browser client (loaded as the global `signalR`) and the
// project's helper module on top of it.
import { ConduitConnection } from "../conduit/conduit.mjs";

const $ = (id) => document.getElementById(id);
const TASK_EVENTS = ["TaskStarted", "TaskProgress", "TaskCompleted", "TaskFailed", "TaskCancelled"];
const STATUS_LABELS = { pending: "Pending", running: "Running", completed: "Completed", failed: "Failed", cancelled: "Cancelled" };
const MAX_EVENTS = 200; // the log keeps the newest ones
const MAX_TASKS = 10; // as many as the page's view lists

function csrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  node.append(...children);
  return node;
}

const shortId = (id) => String(id).slice(0, 8);

// ------------------------------------------------------------------------------- event log

/** The payload as indented JSON, its keys, strings and numbers marked for colour. */
function prettyJson(value) {
  const pre = element("pre", { class: "json" });
  const text = typeof value === "string" ? value : JSON.stringify(value, null, 2);
  const token = /("(?:\\.|[^"\\])*")(\s*:)?|\b(true|false|null)\b|(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)/g;
  let last = 0;
  for (const match of text.matchAll(token)) {
    pre.append(text.slice(last, match.index));
    const [whole, string, colon, literal, number] = match;
    if (string && colon) pre.append(element("span", { class: "key" }, string), colon);
    else if (string) pre.append(element("span", { class: "string" }, string));
    else if (literal) pre.append(element("span", { class: "literal" }, literal));
    else if (number) pre.append(element("span", { class: "number" }, number));
    else pre.append(whole);
    last = match.index + whole.length;
  }
  pre.append(text.slice(last));
  return pre;
}

/** One line that says what the event is: its task, progress, status and message. */
function summary(payload) {
  if (!payload || typeof payload !== "object") return String(payload ?? "");
  const parts = [];
  if (payload.taskId) parts.push(`task ${shortId(payload.taskId)}`);
  if (typeof payload.progressPercentage === "number") parts.push(`${payload.progressPercentage} %`);
  if (payload.status) parts.push(payload.status);
  if (payload.message) parts.push(payload.message);
  if (payload.retryCount > 0) parts.push(`retry ${payload.retryCount}`);
  return parts.join(" · ");
}

// Each entry: its time and event name, a one-line summary, and the payload (the newest entry
// open; an entry closes again when a newer one comes, unless it was opened by hand).
// Its text starts "<time> <event> ", which the page test reads.
function logEvent(name, payload) {
  const log = $("events");
  const previous = log.firstElementChild?.querySelector("details");
  if (previous?.dataset.auto === "open") previous.open = false;
  const details = element(
    "details",
    { open: "", "data-auto": "open" },
    element(
      "summary",
      {},
      element("time", {}, new Date().toISOString().slice(11, 23)),
      " ",
      element("span", { class: `event-name event-${name}` }, name),
      " ",
      element("span", { class: "event-summary" }, summary(payload)),
    ),
    prettyJson(payload),
  );
  // Opened or closed by hand: the reader's choice stays (the click is the summary's, mouse or keyboard).
  details.firstElementChild.addEventListener("click", () => delete details.dataset.auto, { once: true });
  log.prepend(element("li", {}, details));
  while (log.children.length > MAX_EVENTS) log.lastElementChild.remove();
  $("no-events").hidden = true;
}

// -------------------------------------------------------------------------- current task

function showState(state, text) {
  const el = $("connection");
  el.dataset.state = state;
  el.textContent = text;
}

function showProgress(payload) {
  const percent = payload.progressPercentage ?? 0;
  $("progress").value = percent;
  $("percent").textContent = `${percent} %`;
  $("task").dataset.status = payload.status ?? "";
  $("status").dataset.status = payload.status ?? "";
  $("status").textContent = payload.message ? `${payload.status}: ${payload.message}` : payload.status;
}

// ------------------------------------------------------------------------- recent tasks

function taskRow(taskId) {
  return document.querySelector(`#recent-tasks li[data-task-id="${CSS.escape(taskId)}"]`);
}

const created = new Intl.DateTimeFormat("en-US", {
  month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", hourCycle: "h23", timeZone: "UTC",
});

/** A row for a task just created (the server renders the others). */
function addTaskRow(taskId, taskType) {
  const now = new Date();
  const row = element(
    "li",
    { class: "task-row", "data-task-id": taskId, "data-status": "pending" },
    element(
      "div", { class: "task-head" },
      element("span", { class: "badge", "data-role": "status" }, STATUS_LABELS.pending),
      " ",
      element("span", { class: "task-type" }, taskType),
      " ",
      element("button", { type: "button", class: "link-button follow", "data-follow": taskId }, "Follow"),
    ),
    element(
      "div", { class: "task-progress" },
      element("progress", { max: "100", value: "0", "data-role": "progress" }),
      " ",
      element("span", { "data-role": "percent" }, "0 %"),
    ),
    element(
      "div", { class: "task-meta" },
      element("code", { title: taskId }, shortId(taskId)),
      " · ",
      element("time", { datetime: now.toISOString(), title: `${now.toISOString().slice(0, 19).replace("T", " ")} UTC` },
              `${created.format(now).replace(" at ", ", ")} UTC`),
      element("span", { class: "task-message", "data-role": "message" }),
    ),
  );
  const list = $("recent-tasks");
  list.prepend(row);
  while (list.children.length > MAX_TASKS) list.lastElementChild.remove();
  $("no-tasks").hidden = true;
}

function updateTaskRow(payload) {
  const row = payload?.taskId && taskRow(payload.taskId);
  if (!row) return;
  if (payload.status) {
    row.dataset.status = payload.status;
    row.querySelector("[data-role=status]").textContent = STATUS_LABELS[payload.status] ?? payload.status;
  }
  if (typeof payload.progressPercentage === "number") {
    row.querySelector("[data-role=progress]").value = payload.progressPercentage;
    row.querySelector("[data-role=percent]").textContent = `${payload.progressPercentage} %`;
  }
  if (payload.message) row.querySelector("[data-role=message]").textContent = ` · ${payload.message}`;
}

function markFollowed(taskId) {
  for (const row of document.querySelectorAll("#recent-tasks li")) row.classList.toggle("followed", row.dataset.taskId === taskId);
}

// ------------------------------------------------------------------------------ the hub

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

for (const name of TASK_EVENTS) {
  conduit.on(name, (payload) => {
    logEvent(name, payload);
    updateTaskRow(payload);
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

/** Show `taskId` in the task panel and follow it (SubscribeToTask answers its current state;
 * following a task twice only subscribes again). */
async function follow(taskId) {
  currentTask = taskId;
  $("task").hidden = false;
  $("task-id").textContent = taskId;
  markFollowed(taskId);
  const state = await conduit.followTask(taskId);
  if (state && taskId === currentTask) {
    showProgress(state);
    updateTaskRow(state);
  }
}

async function startTask() {
  $("start").disabled = true;
  try {
    const response = await fetch("/api/tasks/", {
      method: "POST",
      headers: { "X-CSRFToken": csrfToken(), "Content-Type": "application/json" },
      body: JSON.stringify({ taskType: "video-generation" }),
    });
    if (response.status !== 201) throw new Error(`POST /api/tasks/ answered ${response.status}`);
    const { taskId, taskType } = await response.json();
    addTaskRow(taskId, taskType ?? "video-generation");
    $("progress").value = 0;
    $("percent").textContent = "0 %";
    $("status").textContent = "pending";
    await follow(taskId);
  } catch (error) {
    logEvent("error", String(error));
  } finally {
    $("start").disabled = false;
  }
}

$("start").addEventListener("click", startTask);
$("recent-tasks").addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-follow]");
  if (!button || conduit.state !== "connected") return;
  try {
    await follow(button.dataset.follow);
  } catch (error) {
    logEvent("error", String(error));
  }
});

await conduit.start();
$("start").disabled = false;
