// Drive the monitoring admin in headless Chromium: log in as staff, open the dashboard from the admin
// index and wait for a live refresh, find the connected clients in the connections list, disconnect
// one with the admin action, requeue a dead letter, and come back to the dashboard; a screenshot of
// each step.
//
// node admin_dashboard.mjs '{"url", "username", "password", "connectionIds": [...], "disconnectId",
//                            "messageId", "expectConnections", "screenshots", "timeoutMs"}'
// Prints one JSON line: {"ok": true, "dashboard", "figures", "listed", "notice", ...} or {"ok": false, "error"}.
import { launchChromium } from "./browser.mjs";

const cfg = JSON.parse(process.argv[2]);
const timeout = cfg.timeoutMs ?? 30000;
const shot = (page, name) => page.screenshot({ path: `${cfg.screenshots}/${name}.png`, fullPage: true });

// The dashboard's figures as the page shows them (text of each [data-figure]).
const shownFigures = (page) =>
  page.evaluate(() => Object.fromEntries([...document.querySelectorAll("#content-main [data-figure]")]
    .map((node) => [node.dataset.figure, node.textContent.trim()])));

// Wait until the page refreshed itself `count` more times and shows `connections` connections.
async function waitForLiveFigures(page, connections, count) {
  const before = Number(await page.getAttribute(".monitoring-dashboard", "data-updates") ?? 0);
  await page.waitForFunction(
    ([want, after]) => {
      const root = document.querySelector(".monitoring-dashboard");
      return Number(root.dataset.updates ?? 0) >= after &&
        document.getElementById("figure-connections").textContent.trim() === String(want);
    },
    [connections, before + count],
    { timeout, polling: 200 },
  );
}

const browser = await launchChromium();
try {
  const page = await browser.newPage({ viewport: { width: 1920, height: 1080 } });
  page.setDefaultTimeout(timeout);
  const consoleErrors = [];
  page.on("console", (message) => { if (message.type() === "error") consoleErrors.push(message.text()); });
  page.on("pageerror", (error) => consoleErrors.push(String(error)));

  // Log in; the admin index links to the dashboard.
  await page.goto(`${cfg.url}/admin/login/?next=/admin/`);
  await page.fill("#id_username", cfg.username);
  await page.fill("#id_password", cfg.password);
  await Promise.all([page.waitForURL(`${cfg.url}/admin/`), page.click("input[type=submit]")]);
  await Promise.all([
    page.waitForURL(`${cfg.url}/admin/monitoring/dashboard/`),
    page.click("#content-main a[href='/admin/monitoring/dashboard/']"),
  ]);

  // The dashboard: the clients are counted, and the script refreshes the page by itself.
  await waitForLiveFigures(page, cfg.expectConnections, 1);
  const dashboard = await shownFigures(page);
  const chartBars = await page.locator("#monitoring-chart rect.delivered").count();
  const figures = await page.evaluate(async () => {
    const url = document.querySelector(".monitoring-dashboard").dataset.figuresUrl;
    return (await fetch(url, { headers: { Accept: "application/json" } })).json();
  });
  await shot(page, "admin-dashboard");

  // The connections list shows every client; search for the one to disconnect, select it, run the action.
  const list = `${cfg.url}/admin/monitoring/connection/`;
  await page.goto(list);
  await page.locator(`tr[data-connection-id="${cfg.disconnectId}"]`).waitFor();
  const listed = await page.locator("#result_list tbody tr").evaluateAll(
    (rows) => rows.map((row) => row.dataset.connectionId));
  const row = await page.locator(`tr[data-connection-id="${cfg.disconnectId}"]`).evaluate((tr) =>
    Object.fromEntries([...tr.querySelectorAll("td, th")].map((cell) => [cell.className, cell.textContent.trim()])));
  await shot(page, "admin-connections");

  // Group subscriptions: the task's group, with its members.
  await page.goto(`${cfg.url}/admin/monitoring/groupsubscription/`);
  const groups = await page.locator("#result_list tbody tr").evaluateAll((rows) => rows.map((tr) => ({
    group: tr.dataset.group, connections: tr.querySelector(".field-connections").textContent.trim(),
  })));
  await shot(page, "admin-group-subscriptions");
  await page.goto(list);
  await page.fill("#searchbar", cfg.disconnectId);
  await Promise.all([page.waitForURL(/\?q=/), page.press("#searchbar", "Enter")]);
  const searched = await page.locator("#result_list tbody tr").count();
  await page.locator(`tr[data-connection-id="${cfg.disconnectId}"] input.action-select`).check();
  const counter = (await page.locator("[data-selection-counter]").textContent()).trim();
  await page.selectOption("select[name=action]", "disconnect_connections");
  await Promise.all([page.waitForURL(/\?q=/), page.click("button[name=index]")]);
  const notice = (await page.locator("ul.messagelist li").first().textContent()).trim();
  await shot(page, "admin-connections-disconnected");

  // The connection's own teardown removes it from the monitor: the full list loses it.
  const deadline = Date.now() + timeout;
  let remaining;
  for (;;) {
    await page.goto(list);
    remaining = await page.locator("#result_list tbody tr").evaluateAll((rows) => rows.map((r) => r.dataset.connectionId));
    if (!remaining.includes(cfg.disconnectId)) break;
    if (Date.now() > deadline) throw new Error(`${cfg.disconnectId} still listed after ${timeout} ms`);
    await page.waitForTimeout(250);
  }

  // Requeue the dead letter from the hubs app's list.
  const deadLetters = `${cfg.url}/admin/hubs/deadletter/`;
  await page.goto(deadLetters);
  const letter = page.locator("#result_list tbody tr", { hasText: cfg.messageId });
  await letter.locator("input.action-select").check();
  await shot(page, "admin-dashboard-dead-letter");
  await page.selectOption("select[name=action]", "requeue_dead_letters");
  await Promise.all([page.waitForURL(deadLetters), page.click("button[name=index]")]);
  const requeued = (await page.locator("ul.messagelist li").first().textContent()).trim();
  await shot(page, "admin-dashboard-dead-letter-requeued");

  // Back on the dashboard: one connection fewer, no dead letter, the requeued message waits for its ack.
  await page.goto(`${cfg.url}/admin/monitoring/dashboard/`);
  await waitForLiveFigures(page, cfg.expectConnections - 1, 1);
  const after = await shownFigures(page);
  await shot(page, "admin-dashboard-after");
  console.log(JSON.stringify({
    ok: true, dashboard, chartBars, figures, listed, row, groups, searched, counter, notice, remaining, requeued, after,
    consoleErrors,
  }));
} catch (error) {
  console.log(JSON.stringify({ ok: false, error: String(error) }));
} finally {
  await browser.close();
}
