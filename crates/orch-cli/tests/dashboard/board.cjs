// The board follows an item through every stage of its track with no reload
// (waiting for approval before deploy: the card stands out, and Approve on the
// item page lets it go on), a running job's log is followed live, the item page
// shows the finished timeline, and the health page shows the reaper block and
// the last hour's charts.
"use strict";
const t = require("./lib.cjs");

const STAGES = ["development", "testing", "deploy-staging", "deploy"];

t.scenario("board", async () => {
  const b = await t.open();
  const page = await b.context.newPage();
  await page.goto(t.BASE + "/");
  await page.locator("#conn", { hasText: "live" }).waitFor();
  // A marker a reload would wipe out.
  await page.evaluate(() => { window.__noReload = "still here"; });

  // Two items that stay in development make the board (and its screenshot) busier.
  const others = [
    await t.addItem("Checkout total ignores the discount code"),
    await t.addItem("Search returns archived products"),
  ];
  // The agent blocks an item whose prompt asks for a human: it stands out.
  const blocked = await t.addItem("VAT rounding differs between cart and invoice", null, "needs-a-human");
  const key = await t.addItem("Add a retry button to failed payments");
  for (const k of others) await t.card(page, "development", k).waitFor();
  await t.card(page, "development", blocked, "blocked").waitFor();
  await page.locator(`.card[data-key="${blocked}"] .gate, .card[data-key="${blocked}"] .meta`).first().waitFor();

  for (const [i, stage] of STAGES.entries()) {
    await t.card(page, stage, key, "running").waitFor();
    if (i === 0) {
      await followLog(b, key);
    } else {
      // Mid-pipeline, beside the items still in development: the README's picture.
      if (i === 1) await t.shot(page, "board.png");
      t.release(key, stage);
    }
    if (stage === "deploy-staging") await approve(b, page, key);
    if (i + 1 < STAGES.length) await t.card(page, STAGES[i + 1], key).waitFor();
  }
  // Done: the card leaves and the done count says 1.
  await page.locator(`.card[data-key="${key}"]`).waitFor({ state: "detached" });
  await page.locator('#done-count[data-count="1"]').waitFor();
  t.check((await page.evaluate(() => window.__noReload)) === "still here", "the board never reloaded");

  // The item page of the finished item: its timeline has every stage's advance,
  // a commit with its SHA and the merged pull request.
  const item = await b.context.newPage();
  await item.goto(`${t.BASE}/ui/items/${key}`);
  await item.locator('#item-status[data-status="done"]').waitFor();
  const kinds = await item.locator(".timeline li").evaluateAll((els) => els.map((e) => e.dataset.kind));
  for (const k of ["item.created", "job.started", "item.advanced", "vcs.committed", "pr.opened", "pr.merged", "item.done"]) {
    t.check(kinds.includes(k), `the timeline shows ${k}: ${kinds.join(", ")}`);
  }
  const sha = await item.locator('.timeline li[data-kind="vcs.committed"] code.sha').first().getAttribute("title");
  t.check(/^[0-9a-f]{40}$/.test(sha || ""), `a commit shows its SHA, got ${sha}`);
  t.check((await item.locator("table.jobs tbody tr").count()) === STAGES.length, "one job row per stage");
  await t.shot(item, "item.png");

  // Health: the reaper block, no job left running for this item, and charts
  // that count this item's moves (three advances and done).
  const health = await b.context.newPage();
  await health.goto(`${t.BASE}/ui/health`);
  const interval = await health.locator('#reaper [data-key="interval_s"] dd').textContent();
  t.check(interval.trim() === "0.2", `the reaper block shows interval_s 0.2, got ${interval}`);
  const lastPass = await health.locator('#reaper [data-key="last_pass_at"] dd').textContent();
  t.check(/^\d{4}-/.test(lastPass.trim()), `the reaper's last pass is a time, got ${lastPass}`);
  const moved = await health.locator("#chart-throughput .bar").evaluateAll((els) => els.map((e) => Number(e.dataset.value)));
  t.check(moved.length === 12, `twelve five-minute bars, got ${moved.length}`);
  t.check(moved.reduce((a, v) => a + v, 0) >= 4, `at least four moves counted, got ${moved}`);
  const stages = await health.locator("#chart-durations .bar text").allTextContents();
  for (const s of STAGES) t.check(stages.includes(s), `a duration bar for ${s}: ${stages}`);
  t.check((await health.locator("#nodes tbody tr").count()) >= 1, "the node is listed");
  await t.shot(health, "health.png");
  await t.finish(b);
});

/// Opens the running development job's log page and watches its lines arrive,
/// then releases the agent and sees the log end.
async function followLog(b, key) {
  const p = await b.context.newPage();
  await p.goto(`${t.BASE}/ui/items/${key}`);
  const href = await p.locator('table.jobs tbody tr[data-status="running"] a').first().getAttribute("href");
  await p.goto(t.BASE + href);
  const log = p.locator("#log[data-follow]");
  await log.waitFor();
  await p.locator("#log", { hasText: "started development" }).waitFor();
  await p.evaluate(() => { window.__noReload = "log"; });
  t.release(key, "development");
  await p.locator("#log", { hasText: "released" }).waitFor();
  // The stream's end refreshes the page in place: the job shows as done.
  await p.locator('#job-status[data-status="done"]').waitFor();
  const text = await p.locator("#log").textContent();
  t.check(!text.includes("\u001b"), "no escape characters in the log pane");
  t.check(text.includes("coloured line"), "the coloured line is shown as text");
  t.check(text.includes("<script>window.__xss=3</script>"), "a log line with markup is shown as text");
  t.check((await p.evaluate(() => window.__xss)) === undefined, "markup in a log line did not run");
  t.check((await p.evaluate(() => window.__noReload)) === "log", "the log page followed without a reload");
  await p.close();
}

/// The edge into deploy needs an approval: the card waits, amber, until the
/// item page's Approve button lets it go on.
async function approve(b, board, key) {
  const waiting = board.locator(`.column[data-stage="deploy-staging"] .card.st-waiting_approval[data-key="${key}"]`);
  await waiting.waitFor();
  const bg = await waiting.evaluate((el) => getComputedStyle(el).backgroundColor);
  t.check(bg === "rgb(254, 243, 199)", `a card waiting for approval stands out (background ${bg})`);
  const p = await b.context.newPage();
  await p.goto(`${t.BASE}/ui/items/${key}`);
  await p.locator('#item-status[data-status="waiting_approval"]').waitFor();
  await p.locator('button[data-action="approve"].primary').click();
  await p.locator("#action-result.good", { hasText: "approve: now" }).waitFor();
  await p.locator('.timeline li[data-kind="item.approved"]').waitFor();
  await p.close();
}
