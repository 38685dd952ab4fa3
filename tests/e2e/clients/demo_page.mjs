// Drive the demo page in headless Chromium: log in, start a task, wait for the progress bar to
// reach 100, the status to read "completed" and the connection quality to be measured, save a
// screenshot.
//
// node demo_page.mjs '{"url", "username", "password", "screenshot", "timeoutMs", "protocol"}'
// Prints one JSON line: {"ok": true, "progress": 100, "status": "...", "events": n} or {"ok": false, "error"}.
import { launchChromium } from "./browser.mjs";

const cfg = JSON.parse(process.argv[2]);
const timeout = cfg.timeoutMs ?? 30000;
const browser = await launchChromium();
const consoleErrors = [];
try {
  const page = await browser.newPage();
  page.setDefaultTimeout(timeout);
  page.on("console", (msg) => { if (msg.type() === "error") consoleErrors.push(msg.text()); });
  page.on("response", (response) => {
    if (response.status() >= 400) consoleErrors.push(`${response.status()} ${response.url()}`);
  });
  // What each hub WebSocket carried: text frames (JSON) or binary ones (MessagePack).
  const sockets = [];
  page.on("websocket", (ws) => {
    const counts = { text: 0, binary: 0 };
    sockets.push(counts);
    ws.on("framereceived", ({ payload }) => {
      if (typeof payload === "string") counts.text += 1;
      else counts.binary += 1;
    });
  });
  let firstSocket = 0; // the sockets of the page under test (not of the page before it)
  await page.goto(`${cfg.url}/`);
  await page.fill("#id_username", cfg.username);
  await page.fill("#id_password", cfg.password);
  await Promise.all([page.waitForURL(`${cfg.url}/`), page.click("input[type=submit]")]);
  if (cfg.protocol) {
    await page.waitForSelector("#connection[data-state=connected]"); // the first page's socket exists
    firstSocket = sockets.length;
    await page.goto(`${cfg.url}/?protocol=${cfg.protocol}`);
  }
  await page.waitForSelector("#connection[data-state=connected]");
  await page.waitForSelector("#start:not([disabled])");
  await page.click("#start");
  await page.waitForFunction(() => document.getElementById("progress").value === 100);
  await page.waitForFunction(() => document.getElementById("status").textContent.startsWith("completed"));
  // The helper's pings have measured the connection (CONDUIT_DEMO_PING_INTERVAL_MS).
  await page.waitForFunction(() => ["good", "fair", "poor"].includes(document.getElementById("quality").dataset.quality));
  const result = await page.evaluate(() => ({
    quality: document.getElementById("quality").dataset.quality,
    protocol: document.getElementById("protocol").textContent,
    qualityText: document.getElementById("quality").textContent,
    progress: document.getElementById("progress").value,
    status: document.getElementById("status").textContent,
    events: [...document.querySelectorAll("#events li")].map((li) => li.textContent.split(" ")[1]),
  }));
  if (cfg.screenshot) await page.screenshot({ path: cfg.screenshot, fullPage: true });
  const frames = { text: 0, binary: 0 };
  for (const counts of sockets.slice(firstSocket)) {
    frames.text += counts.text;
    frames.binary += counts.binary;
  }
  console.log(JSON.stringify({ ok: true, ...result, frames, sockets: sockets.length - firstSocket, consoleErrors }));
} catch (error) {
  console.log(JSON.stringify({ ok: false, error: String(error), consoleErrors }));
  process.exitCode = 1;
} finally {
  await browser.close();
}
