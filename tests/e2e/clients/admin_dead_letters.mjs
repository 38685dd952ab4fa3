// Drive the Django admin's dead letters in headless Chromium: log in as staff, find a dead
// letter by its messageId, save a screenshot, requeue it with the admin action, save another.
//
// node admin_dead_letters.mjs '{"url", "username", "password", "messageId", "screenshots", "timeoutMs"}'
// Prints one JSON line: {"ok": true, "listed": {...row cells}, "notice": "..."} or {"ok": false, "error"}.
import { launchChromium } from "./browser.mjs";

const cfg = JSON.parse(process.argv[2]);
const timeout = cfg.timeoutMs ?? 30000;
const browser = await launchChromium();
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.setDefaultTimeout(timeout);
  const list = `${cfg.url}/admin/hubs/deadletter/`;
  await page.goto(`${cfg.url}/admin/login/?next=/admin/hubs/deadletter/`);
  await page.fill("#id_username", cfg.username);
  await page.fill("#id_password", cfg.password);
  await Promise.all([page.waitForURL(list), page.click("input[type=submit]")]);
  const row = page.locator("#result_list tbody tr", { hasText: cfg.messageId });
  await row.waitFor();
  const listed = await row.evaluate((tr) =>
    Object.fromEntries([...tr.querySelectorAll("td, th")].map((cell) => [cell.className, cell.textContent.trim()])),
  );
  await page.screenshot({ path: `${cfg.screenshots}/admin-dead-letters.png`, fullPage: true });
  await row.locator("input.action-select").check();
  await page.selectOption("select[name=action]", "requeue_dead_letters");
  await Promise.all([page.waitForURL(list), page.click("button[name=index]")]);
  const notice = (await page.locator("ul.messagelist li").first().textContent()).trim();
  const remaining = await page.locator("#result_list tbody tr", { hasText: cfg.messageId }).count();
  await page.screenshot({ path: `${cfg.screenshots}/admin-dead-letters-requeued.png`, fullPage: true });
  console.log(JSON.stringify({ ok: true, listed, notice, remaining }));
} catch (error) {
  console.log(JSON.stringify({ ok: false, error: String(error) }));
} finally {
  await browser.close();
}
