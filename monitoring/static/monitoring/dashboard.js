// The admin dashboard's live figures (monitoring/templates/admin/monitoring/dashboard.html): polls the staff-only
// figures endpoint every few seconds, updates the page, and draws the last hour as inline SVG.
const SVG = "http://www.w3.org/2000/svg";
const root = document.querySelector(".monitoring-dashboard");

const pick = (figures, path) => path.split(".").reduce((value, key) => value?.[key], figures);

function element(tag, attributes = {}, text = null, namespace = null) {
  const node = namespace ? document.createElementNS(namespace, tag) : document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (Array.isArray(text)) node.append(...text); // nodes and strings
  else if (text !== null) node.textContent = String(text);
  return node;
}

function rows(name, items, cells, empty) {
  const body = root.querySelector(`[data-rows="${name}"]`);
  const width = body.closest("table").querySelectorAll("thead th").length;
  body.replaceChildren(
    ...(items.length
      ? items.map((item) => {
          const tr = element("tr");
          for (const [tag, text, attributes] of cells(item)) tr.append(element(tag, attributes, text));
          return tr;
        })
      : [(() => { const tr = element("tr"); tr.append(element("td", { colspan: width }, empty)); return tr; })()]),
  );
}

const clock = (iso) => iso.slice(11, 16); // HH:MM of the server's ISO time (UTC, as the admin shows times)
const formats = { clock: (iso) => iso.slice(11, 19) };

function drawChart(svg, minutes) {
  const [width, height, left, right, top, bottom] = [720, 200, 44, 8, 10, 22];
  const most = Math.max(1, ...minutes.map((m) => m.delivered + m.failed));
  const magnitude = 10 ** Math.floor(Math.log10(most)); // an even top, so the middle line is whole
  const scale = [2, 4, 6, 8, 10].map((step) => step * magnitude).find((top) => top >= most);
  const y = (value) => top + (height - top - bottom) * (1 - value / scale);
  const slot = (width - left - right) / Math.max(1, minutes.length);
  const parts = [];
  for (const fraction of [0, 0.5, 1]) {
    const at = y(scale * fraction);
    parts.push(element("line", { x1: left, x2: width - right, y1: at, y2: at, class: "grid" }, null, SVG));
    parts.push(element("text", { x: left - 6, y: at + 4, "text-anchor": "end" }, Math.round(scale * fraction), SVG));
  }
  minutes.forEach((minute, index) => {
    const x = left + index * slot + slot * 0.1;
    const group = element("g", {}, null, SVG);
    group.append(element("title", {}, `${clock(minute.start)}: ${minute.delivered} delivered, ${minute.failed} failed`, SVG));
    const total = minute.delivered + minute.failed;
    group.append(element("rect", { x, width: slot * 0.8, y: y(minute.delivered), height: y(0) - y(minute.delivered), class: "delivered" }, null, SVG));
    group.append(element("rect", { x, width: slot * 0.8, y: y(total), height: y(minute.delivered) - y(total), class: "failed" }, null, SVG));
    parts.push(group);
  });
  if (minutes.length) {
    parts.push(element("text", { x: left, y: height - 6 }, clock(minutes[0].start), SVG));
    parts.push(element("text", { x: width - right, y: height - 6, "text-anchor": "end" }, "now", SVG));
  }
  svg.replaceChildren(...parts);
  const sum = (key) => minutes.reduce((total, minute) => total + minute[key], 0);
  svg.setAttribute("aria-label", `Last hour: ${sum("delivered")} messages delivered, ${sum("failed")} failed`);
}

function render(figures) {
  for (const node of root.querySelectorAll("[data-figure]")) {
    const value = pick(figures, node.dataset.figure);
    const format = formats[node.dataset.format];
    node.textContent = value === undefined || value === null ? "-" : format ? format(String(value)) : value;
  }
  // The minutes the per-minute counts are of: the one running and the last complete one.
  const minute = { current: figures.minutes.at(-1), previous: figures.minutes.at(-2) };
  for (const node of root.querySelectorAll("[data-minute]")) {
    const start = minute[node.dataset.minute]?.start;
    node.textContent = start ? clock(start) : "-";
  }
  rows("hubs", figures.hubs, (h) => [["th", h.hub, { scope: "row" }], ["td", h.connections], ["td", h.groups], ["td", h.stale]],
       "No hub has had a connection yet.");
  rows("servers", figures.servers, (s) => [
    ["th", [element("code", {}, s.serverId), ...(s.thisProcess ? [" ", element("span", { class: "monitoring-quiet" }, "(this one)")] : [])],
     { scope: "row" }],
    ["td", s.connections],
    ["td", s.breakerState, { class: `breaker-${s.breakerState}` }], ["td", [element("time", { datetime: s.startedAt }, s.startedAt.slice(0, 10)), " ",
            element("time", { datetime: s.startedAt }, s.startedAt.slice(11, 19))]],
    ["td", `${s.lastSeenSeconds} s ago`],
  ], "No serving process reported (they report while they hold connections).");
  const { open, half_open: halfOpen } = figures.breakers;
  root.querySelector("#figure-failed").classList.toggle("monitoring-failed", figures.failedLastMinute > 0);
  root.querySelector("#figure-failed-now").classList.toggle("monitoring-failed", figures.failedThisMinute > 0);
  root.querySelector("[data-breakers]").classList.toggle("monitoring-alert", open + halfOpen > 0);
  drawChart(root.querySelector("[data-chart]"), figures.minutes);
  root.dataset.updates = String(Number(root.dataset.updates ?? 0) + 1);
}

function showError(message) {
  const note = root.querySelector("[data-error]");
  note.textContent = message ?? "";
  note.hidden = !message;
  root.querySelector("[data-stale]").hidden = !message;
}

async function poll() {
  try {
    const response = await fetch(root.dataset.figuresUrl, { headers: { Accept: "application/json" }, cache: "no-store" });
    if (!(response.headers.get("Content-Type") ?? "").includes("application/json")) {
      throw new Error(response.redirected ? "Your session ended: reload the page to log in again."
                                          : `The figures could not be read (HTTP ${response.status}).`);
    }
    const figures = await response.json();
    if (!response.ok) throw new Error(figures.error ?? `HTTP ${response.status}`);
    render(figures);
    showError(null);
  } catch (error) {
    showError(error.message);
  } finally {
    setTimeout(poll, Number(root.dataset.interval) || 5000);
  }
}

if (root) {
  const initial = document.getElementById("monitoring-figures");
  const figures = initial ? JSON.parse(initial.textContent) : null;
  if (figures) render(figures);
  setTimeout(poll, Number(root.dataset.interval) || 5000);
}
