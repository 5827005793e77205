// The item page of a blocked item: the action buttons call the JSON API with the
// operator's token (refused without it, with the API's reason), retry moves the
// item on, and a hostile title is shown as text and never runs.
"use strict";
const t = require("./lib.cjs");

const TOKEN = process.env.ORCH_TEST_TOKEN;
const HOSTILE = `<img src=x onerror="window.__xss=1"><script>window.__xss=2</script> & "quotes"`;

t.scenario("item", async () => {
  const b = await t.open();
  const page = await b.context.newPage();
  const xss = await t.addItem(HOSTILE, TOKEN);
  // The agent blocks an item whose title says it needs a human.
  const key = await t.addItem("Refund rounding needs-a-human decision", TOKEN);

  await page.goto(t.BASE + "/");
  await page.locator(`.card[data-key="${xss}"]`).waitFor();
  const shown = await page.locator(`.card[data-key="${xss}"] .title`).textContent();
  t.check(shown === HOSTILE, `the hostile title is shown as text: ${shown}`);
  t.check((await page.evaluate(() => window.__xss)) === undefined, "the hostile title did not run on the board");
  await t.card(page, "development", key, "blocked").waitFor();
  t.check(await page.locator(`.card[data-key="${key}"].st-blocked`).isVisible(), "a blocked card stands out");

  await page.locator(`.card[data-key="${key}"] a.key`).click();
  await page.waitForURL(`**/ui/items/${key}`);
  await page.locator('#item-status[data-status="blocked"]').waitFor();
  await page.locator('.timeline li[data-kind="item.blocked"]').waitFor();
  await page.evaluate(() => { window.__noReload = 1; });

  // Without the token the retry is refused and the token box opens.
  await page.locator('button[data-action="retry"]').click();
  await page.locator("#action-result", { hasText: "needs a token" }).waitFor();
  t.check(await page.locator("#token-box").evaluate((d) => d.open), "the token box opens");
  t.check((await page.locator('#item-status').getAttribute("data-status")) === "blocked", "nothing moved without the token");

  // With it, the retry goes through; the item moves on without a reload.
  t.fs.writeFileSync(t.path.join(t.DIR, "unblock", key), "");
  await page.locator("#token").fill(TOKEN);
  await page.locator("#token-form button[type=submit]").click();
  await page.locator("#action-result", { hasText: "Token kept" }).waitFor();
  await page.locator('button[data-action="approve"]').click();
  await page.locator("#action-result", { hasText: "Refused (409)" }).waitFor();
  // From the keyboard: focus the button and press Enter.
  await page.locator('button[data-action="retry"]').focus();
  await page.keyboard.press("Enter");
  await page.locator("#action-result.good", { hasText: "retry: now" }).waitFor();
  await page.locator('#item-status[data-status="running"]').waitFor();
  await page.locator('.timeline li[data-kind="item.retried"]').waitFor();
  t.check((await page.evaluate(() => window.__noReload)) === 1, "the item page never reloaded");

  // The hostile item's own page shows its title as text too.
  const hp = await b.context.newPage();
  await hp.goto(`${t.BASE}/ui/items/${xss}`);
  t.check((await hp.locator(".item-title").textContent()) === HOSTILE, "the item page shows the title as text");
  t.check((await hp.title()).includes("<script>"), "the document title shows it as text too");
  t.check((await hp.evaluate(() => window.__xss)) === undefined, "the hostile title did not run on its page");
  const csp = (await hp.request.get(`${t.BASE}/ui/items/${xss}`)).headers()["content-security-policy"] || "";
  t.check(csp.includes("script-src 'self'") && !csp.includes("unsafe-inline"), `a strict CSP: ${csp}`);

  // Dark and light follow the system's preference.
  await hp.emulateMedia({ colorScheme: "dark" });
  const dark = await hp.evaluate(() => getComputedStyle(document.body).backgroundColor);
  await hp.emulateMedia({ colorScheme: "light" });
  const light = await hp.evaluate(() => getComputedStyle(document.body).backgroundColor);
  t.check(dark === "rgb(15, 18, 22)" && light === "rgb(246, 247, 249)", `dark ${dark} and light ${light} backgrounds`);
  const missing = await hp.goto(`${t.BASE}/ui/nope`);
  t.check(missing.status() === 404 && (await hp.locator("p.error").textContent()).includes("no page /ui/nope"), "an unknown page is a 404 page");

  // An agent that swaps its log for a link to a secret while it is followed:
  // the follow stops and says why, and the secret never reaches the page.
  const swap = await t.addItem("Log swapper", TOKEN, "swap-my-log");
  const lp = await b.context.newPage();
  await lp.goto(`${t.BASE}/ui/items/${swap}`);
  const jobLink = lp.locator('table.jobs tbody tr[data-status="running"] a');
  await jobLink.waitFor();
  await lp.goto(t.BASE + (await jobLink.first().getAttribute("href")));
  await lp.locator("#log[data-follow]", { hasText: "before the swap" }).waitFor();
  t.release(swap, "swap");
  await lp.locator("#follow-state", { hasText: "stopped:" }).waitFor();
  t.check(!(await lp.locator("#live").textContent()).includes("TOP-SECRET"), "the linked secret is not shown");
  t.release(swap, "development");

  // At phone width the board is one column and still lists the items.
  const phone = await b.context.newPage();
  await phone.setViewportSize({ width: 390, height: 844 });
  await phone.goto(t.BASE + "/");
  const width = await phone.evaluate(() => document.documentElement.scrollWidth);
  t.check(width <= 390, `no horizontal scrolling at phone width (${width}px)`);
  await t.finish(b);
});
