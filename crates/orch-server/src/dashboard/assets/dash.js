// orch dashboard: keeps the server-rendered pages live. It follows GET /events
// over SSE and re-fetches the page it shows when an event arrives (the server
// renders; this script only swaps the <main> element), follows running jobs'
// logs, and runs the item page's action buttons against the JSON API.
// Everything from the server is inserted either as HTML the server escaped or
// with textContent; nothing is evaluated. No dependencies, no build step.
"use strict";

(function () {
  var TOKEN_KEY = "orch-token";
  var events = null;          // the EventSource following /events, if any
  var eventsQuery = null;     // the query it follows
  var backoff = 1000;
  var refreshing = false;
  var refreshPending = false;
  var refreshTimer = null;
  var followers = new Map();  // <pre> element -> its EventSource

  function main() { return document.getElementById("live"); }

  function setConn(text, down) {
    var c = document.getElementById("conn");
    if (!c) return;
    c.textContent = text;
    c.classList.toggle("down", !!down);
  }

  // ---- live refresh -------------------------------------------------------

  // Refreshes are coalesced and at least MIN_GAP_MS apart, so a burst of events
  // costs the server one render, not one per event.
  var MIN_GAP_MS = 400;
  var lastRefresh = 0;
  function scheduleRefresh(delay) {
    if (refreshTimer) return;
    var wait = Math.max(delay, lastRefresh + MIN_GAP_MS - Date.now());
    refreshTimer = setTimeout(function () { refreshTimer = null; refresh(); }, wait);
  }

  function typing() {
    var a = document.activeElement;
    return a && (a.tagName === "INPUT" || a.tagName === "SELECT" || a.tagName === "TEXTAREA") && main().contains(a);
  }

  function refresh() {
    if (refreshing || typing()) { refreshPending = true; return; }
    refreshing = true;
    lastRefresh = Date.now();
    fetch(location.href, { cache: "no-store", headers: { "Accept": "text/html" } })
      .then(function (r) {
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.text();
      })
      .then(function (text) {
        var doc = new DOMParser().parseFromString(text, "text/html");
        var fresh = doc.getElementById("live");
        if (!fresh) throw new Error("no #live in the page");
        swap(fresh);
      })
      .catch(function () { setConn("reconnecting…", true); refreshPending = true; })
      .finally(function () {
        refreshing = false;
        if (refreshPending) { refreshPending = false; scheduleRefresh(500); }
      });
  }

  function swap(fresh) {
    var m = main();
    var open = [];
    m.querySelectorAll("details[open][id]").forEach(function (d) { open.push(d.id); });
    var result = document.getElementById("action-result");
    var kept = result ? { text: result.textContent, cls: result.className } : null;
    var focusId = document.activeElement && m.contains(document.activeElement) ? document.activeElement.id : null;
    m.replaceChildren.apply(m, Array.prototype.slice.call(fresh.childNodes).map(function (n) {
      return document.importNode(n, true);
    }));
    if (fresh.hasAttribute("data-live")) m.setAttribute("data-live", fresh.getAttribute("data-live"));
    else m.removeAttribute("data-live");
    if (fresh.hasAttribute("data-now")) {
      m.setAttribute("data-now", fresh.getAttribute("data-now"));
      loadedAt = Date.now();
    }
    open.forEach(function (id) { var d = document.getElementById(id); if (d) d.open = true; });
    var r2 = document.getElementById("action-result");
    if (kept && r2) { r2.textContent = kept.text; r2.className = kept.cls; }
    if (focusId) { var f = document.getElementById(focusId); if (f) f.focus(); }
    document.documentElement.setAttribute("data-refreshed", String(Date.now()));
    init();
  }

  function follow() {
    var m = main();
    var q = m && m.hasAttribute("data-live") ? m.getAttribute("data-live") : null;
    if (q === eventsQuery && events) return;
    if (events) { events.close(); events = null; }
    eventsQuery = q;
    if (q === null) return;
    var es = new EventSource("/events" + (q ? "?" + q : ""));
    events = es;
    es.onopen = function () {
      backoff = 1000;
      setConn("live", false);
      // Whatever happened before this connection (page render, a restart) is
      // caught up by one refresh; later changes arrive as events.
      scheduleRefresh(0);
    };
    es.onmessage = function () { scheduleRefresh(150); };
    es.onerror = function () {
      setConn("reconnecting…", true);
      if (es.readyState === EventSource.CLOSED && events === es) {
        // The browser gave up (e.g. an error status while the server restarts):
        // start again ourselves, with backoff.
        events = null;
        setTimeout(function () { if (!events) { eventsQuery = null; follow(); } }, backoff);
        backoff = Math.min(backoff * 2, 10000);
      }
    };
  }

  // ---- clocks -------------------------------------------------------------

  function fmt(ms) {
    var s = Math.max(0, Math.floor(ms / 1000));
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m " + (s % 60) + "s";
    if (s < 86400) return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
    return Math.floor(s / 86400) + "d " + Math.floor((s % 86400) / 3600) + "h";
  }

  var loadedAt = Date.now();
  function tick() {
    var m = main();
    if (!m) return;
    var serverNow = Number(m.getAttribute("data-now"));
    // Server time now = its time at render + what passed here since.
    var now = serverNow ? serverNow + (Date.now() - loadedAt) : Date.now();
    m.querySelectorAll(".since[data-since]").forEach(function (el) {
      el.textContent = fmt(now - Number(el.getAttribute("data-since")));
    });
  }

  // ---- job logs -----------------------------------------------------------

  var ANSI = /\u001b(?:\[[0-?]*[ -\/]*[@-~]|\][^\u0007\u001b]*(?:\u0007|\u001b\\)?|.)|[\u0000-\u0008\u000b-\u001f\u007f]/g;

  function followLog(pre) {
    if (followers.has(pre)) return;
    var state = document.getElementById("follow-state");
    var es = new EventSource(pre.getAttribute("data-follow"));
    followers.set(pre, es);
    es.onopen = function () { if (state) state.textContent = "following"; };
    es.onmessage = function (e) {
      var atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      pre.appendChild(document.createTextNode(e.data.replace(ANSI, "") + "\n"));
      if (atEnd) pre.scrollTop = pre.scrollHeight;
    };
    es.addEventListener("end", function (e) {
      es.close();
      followers.delete(pre);
      var status = "";
      try { status = JSON.parse(e.data).status || ""; } catch (_) { /* keep it empty */ }
      if (state) state.textContent = "ended" + (status ? ": " + status : "");
      pre.setAttribute("data-ended", status || "ended");
      scheduleRefresh(300);
    });
    es.onerror = function (e) {
      if (e && typeof e.data === "string") {
        // The server's own `event: error` (the log became a link or a non-file):
        // the follow is over; say why rather than reconnecting.
        es.close();
        followers.delete(pre);
        var why = e.data;
        try { why = JSON.parse(e.data).error || why; } catch (_) { /* keep the raw text */ }
        if (state) state.textContent = "stopped: " + why;
        pre.setAttribute("data-ended", "error");
        return;
      }
      if (state && !pre.hasAttribute("data-ended")) state.textContent = "reconnecting…";
      if (es.readyState === EventSource.CLOSED) {
        followers.delete(pre);
        scheduleRefresh(2000);
      }
    };
  }

  // ---- actions ------------------------------------------------------------

  function say(text, good) {
    var r = document.getElementById("action-result");
    if (!r) return;
    r.textContent = text;
    r.className = "action-result " + (good ? "good" : "bad");
  }

  function act(button) {
    var box = button.closest(".actions");
    var key = box.getAttribute("data-key");
    var action = button.getAttribute("data-action");
    var headers = { "Content-Type": "application/json" };
    var token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers["Authorization"] = "Bearer " + token;
    var buttons = box.querySelectorAll("button.action");
    buttons.forEach(function (b) { b.disabled = true; });
    say(action + "…", true);
    fetch("/items/" + encodeURIComponent(key) + "/" + action, { method: "POST", headers: headers, body: "{}" })
      .then(function (r) {
        return r.json().catch(function () { return {}; }).then(function (body) { return { r: r, body: body }; });
      })
      .then(function (x) {
        if (x.r.ok) {
          var b = x.body || {};
          say(action + ": now " + String(b.status || "?").replace("_", " ") + " in " + b.stage + " (track " + b.track + ")", true);
          scheduleRefresh(0);
        } else if (x.r.status === 401) {
          say("Refused: this server needs a token. Enter it under \"API token\" and try again.", false);
          var t = document.getElementById("token-box");
          if (t) { t.open = true; var i = document.getElementById("token"); if (i) i.focus(); }
        } else {
          say("Refused (" + x.r.status + "): " + (x.body.error || x.r.statusText), false);
        }
      })
      .catch(function () { say("Cannot reach the server; try again when it is back.", false); })
      .finally(function () { buttons.forEach(function (b) { b.disabled = false; }); });
  }

  document.addEventListener("click", function (e) {
    var b = e.target.closest && e.target.closest("button.action[data-action]");
    if (b) { act(b); return; }
    if (e.target.id === "token-forget") {
      sessionStorage.removeItem(TOKEN_KEY);
      say("Token forgotten for this tab.", true);
    }
  });

  // A refresh put off while the operator typed runs when they leave the field.
  document.addEventListener("focusout", function () {
    if (refreshPending && !refreshing) { refreshPending = false; scheduleRefresh(300); }
  });

  document.addEventListener("submit", function (e) {
    if (e.target.id !== "token-form") return;
    e.preventDefault();
    var input = document.getElementById("token");
    if (input && input.value) {
      sessionStorage.setItem(TOKEN_KEY, input.value);
      input.value = "";
      say("Token kept for this tab.", true);
    }
    if (input) input.blur();
    if (refreshPending) { refreshPending = false; scheduleRefresh(0); }
  });

  function init() {
    followers.forEach(function (es, pre) {
      if (!document.contains(pre)) { es.close(); followers.delete(pre); }
    });
    follow();
    document.querySelectorAll("pre[data-follow]").forEach(followLog);
    tick();
  }

  document.addEventListener("DOMContentLoaded", function () {
    init();
    setInterval(tick, 5000);
  });
})();
