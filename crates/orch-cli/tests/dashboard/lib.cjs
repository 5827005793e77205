// Shared by the dashboard's browser scenarios: launch the system Chromium through
// playwright-core (both installed by scripts/ensure-browser), record every request
// that leaves the server's origin (intercepted and aborted), and fail loudly.
"use strict";
const fs = require("fs");
const path = require("path");

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`the scenario needs the environment variable ${name}`);
  return v;
};

const pwDir = env("ORCH_TEST_PLAYWRIGHT_DIR");
const { chromium } = require(path.join(pwDir, "node_modules", "playwright-core"));

const BASE = env("ORCH_TEST_BASE");
const DIR = env("ORCH_TEST_DIR");
const SHOTS = env("ORCH_TEST_SHOTS");
const TIMEOUT = 60_000;

function check(cond, what) {
  if (!cond) throw new Error(`assertion failed: ${what}`);
}

/// A browser with one context; `foreign` lists requests outside BASE's origin.
async function open() {
  const browser = await chromium.launch({
    executablePath: env("ORCH_TEST_CHROMIUM"),
    headless: true,
    args: ["--no-sandbox", "--disable-dev-shm-usage"],
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 }, colorScheme: "light" });
  context.setDefaultTimeout(TIMEOUT);
  const origin = new URL(BASE).origin;
  const foreign = [];
  const errors = [];
  // Interception: anything not for the server's own origin is recorded and aborted.
  await context.route((url) => url.origin !== origin, (route) => {
    foreign.push(route.request().url());
    return route.abort();
  });
  context.on("page", (p) => watch(p, errors));
  return { browser, context, foreign, errors };
}

function watch(page, errors) {
  page.on("pageerror", (e) => errors.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    // Resource errors while the server restarts are expected; script errors are not.
    if (m.type() === "error" && !/Failed to load resource|net::ERR_|EventSource/.test(m.text())) {
      errors.push(`console: ${m.text()}`);
    }
  });
}

/// Closes the browser after checking nothing left the origin and no script failed.
async function finish(b) {
  check(b.foreign.length === 0, `no request outside ${BASE}; saw ${JSON.stringify(b.foreign)}`);
  check(b.errors.length === 0, `no script errors; saw ${JSON.stringify(b.errors)}`);
  await b.browser.close();
}

async function api(method, route, body, token) {
  const headers = { "content-type": "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  const r = await fetch(BASE + route, { method, headers, body: body ? JSON.stringify(body) : undefined });
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch (_) { /* not JSON */ }
  return { status: r.status, json, text };
}

async function addItem(title, token, body) {
  const r = await api("POST", "/items", { repo: "shop", kind: "bug", title, body: body || "" }, token);
  check(r.status === 201, `POST /items answers 201, got ${r.status} ${r.text}`);
  return r.json.key;
}

/// Lets the scripted agent of `key` in `stage` finish (it waits for this file).
function release(key, stage) {
  fs.mkdirSync(path.join(DIR, "go"), { recursive: true });
  fs.writeFileSync(path.join(DIR, "go", `${key}-${stage}`), "");
}

async function shot(page, name) {
  fs.mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SHOTS, name), fullPage: false });
}

/// A card of `key` in the column of `stage` (optionally with `status`).
function card(page, stage, key, status) {
  const st = status ? `[data-status="${status}"]` : "";
  return page.locator(`.column[data-stage="${stage}"] .card[data-key="${key}"]${st}`);
}

/// Runs `body`, printing the failure and exiting 1 on any error or after `limit` ms.
function scenario(name, body, limit = 170_000) {
  const timer = setTimeout(() => {
    console.error(`${name}: timed out after ${limit} ms`);
    process.exit(1);
  }, limit);
  body()
    .then(() => {
      clearTimeout(timer);
      console.log(`${name}: ok`);
      process.exit(0);
    })
    .catch((e) => {
      console.error(`${name}: ${e && e.stack ? e.stack : e}`);
      process.exit(1);
    });
}

module.exports = { BASE, DIR, SHOTS, TIMEOUT, check, open, finish, api, addItem, release, shot, card, scenario, fs, path };
