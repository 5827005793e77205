// The board recovers by itself when the server restarts: the test harness stops
// `orch serve` once the board is live, starts it again on the same address and
// files an item; its card appears with no reload.
"use strict";
const t = require("./lib.cjs");

t.scenario("restart", async () => {
  const b = await t.open();
  const page = await b.context.newPage();
  await page.goto(t.BASE + "/");
  await page.locator("#conn", { hasText: "live" }).waitFor();
  await page.evaluate(() => { window.__noReload = 1; });
  t.fs.writeFileSync(t.path.join(t.DIR, "board-open"), "");
  // The harness stops the server now: the page notices.
  await page.locator("#conn.down").waitFor();
  // ... restarts it and files an item, whose key it writes down.
  const file = t.path.join(t.DIR, "added-key");
  const deadline = Date.now() + t.TIMEOUT;
  while (!t.fs.existsSync(file)) {
    t.check(Date.now() < deadline, "the harness filed an item after the restart");
    await page.waitForTimeout(100);
  }
  const key = t.fs.readFileSync(file, "utf8").trim();
  await page.locator(`.card[data-key="${key}"]`).waitFor();
  await page.locator("#conn", { hasText: "live" }).waitFor();
  t.check((await page.evaluate(() => window.__noReload)) === 1, "the board recovered without a reload");
  await t.finish(b);
});
