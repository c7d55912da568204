// Fleet view: every kiosk in scope, troubled first, one page of rows at a time (ADR 0051).
//
// The service sorts, filters and pages (`GET /api/v1/operator/fleet`), so the browser holds at
// most one page however large the fleet. A kiosk going on- or offline arrives on the one live
// stream and changes its row at once; since that can move it in the order, and alerts change
// the order too, the page is then re-read (debounced). Faults and temperatures are not pushed
// per kiosk, so the page is also re-read every `data-refresh-s` seconds. The stream carries
// only `kiosk` and `alert` changes (`?kinds=`): a large fleet's telemetry stays away.
"use strict";

(function () {
  const TOKEN_KEY = "locker.operatorToken"; // shared with the dashboard: one sign-in per tab
  const PAGE_SIZE = Number(document.body.dataset.pageSize || 50);
  const REFRESH_MS = Number(document.body.dataset.refreshS || 30) * 1000;
  const TYPING_MS = 200; // a search waits for a pause in typing, not for every key
  const REREAD_MS = 1000; // a burst of status changes and alerts becomes one re-read

  const $ = (id) => document.getElementById(id);
  const state = { offset: 0, total: 0, stream: null, reread: null, typing: null, seq: 0 };

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message || code);
      this.status = status;
      this.code = code;
    }
  }

  async function api(path) {
    const response = await fetch("/api/v1" + path, {
      headers: { Authorization: "Bearer " + sessionStorage.getItem(TOKEN_KEY) },
    });
    let payload = null;
    try {
      payload = await response.json();
    } catch (err) {
      payload = null;
    }
    if (!response.ok) {
      if (response.status === 401) signOut("Your token was not accepted.");
      throw new ApiError(response.status, payload && payload.error, payload && payload.message);
    }
    return payload;
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k.startsWith("data-")) node.setAttribute(k, v);
      else node[k] = v;
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function since(iso) {
    if (!iso) return "";
    const seconds = Math.max(0, (Date.now() - new Date(iso).getTime()) / 1000);
    if (seconds < 90) return "just now";
    if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
    if (seconds < 172800) return `${Math.round(seconds / 3600)} h`;
    return `${Math.round(seconds / 86400)} d`;
  }

  // ---- sign in --------------------------------------------------------------------------
  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    if (state.stream) state.stream.stop();
    state.stream = null;
    $("app").hidden = true;
    $("login").hidden = false;
    $("login-error").hidden = !message;
    $("login-error").textContent = message || "";
    $("login-token").focus();
  }

  async function signIn() {
    await load(); // checks the token and paints the first page before the stream is up
    $("login").hidden = true;
    $("app").hidden = false;
    connectStream();
  }

  function signInFailed(err) {
    signOut(err.status === 401 ? "Your token was not accepted." : `Sign-in failed: ${err.message}`);
  }

  // ---- the page of rows -----------------------------------------------------------------
  function query() {
    const params = new URLSearchParams({ limit: PAGE_SIZE, offset: state.offset });
    const q = $("fleet-q").value.trim();
    if (q) params.set("q", q);
    if ($("fleet-trouble").checked) params.set("trouble", "true");
    return params;
  }

  async function load() {
    const params = query();
    const seq = ++state.seq;
    $("fleet-rows").setAttribute("aria-busy", "true");
    let page;
    try {
      page = await api("/operator/fleet?" + params);
    } catch (err) {
      if (seq === state.seq) $("fleet-counts").textContent = "Fleet unavailable: " + err.message;
      throw err;
    }
    if (seq !== state.seq) return; // a newer search answered first or is on its way
    render(page, params);
  }

  function render(page, params) {
    const counts = page.counts;
    state.total = counts.kiosks;
    $("fleet-counts").textContent =
      `${counts.kiosks} kiosks · ${counts.offline} offline · ${counts.faulted} with faults · ` +
      `${counts.food_at_risk} with food at risk · ${counts.alerting} with open alerts`;
    showRows(page.kiosks.map(row));
    if (!page.kiosks.length) {
      $("fleet-rows").append(el("tr", {}, el("td", { colSpan: 7 }, "No kiosk matches.")));
    }
    const first = counts.kiosks ? page.offset + 1 : 0;
    const last = page.offset + page.kiosks.length;
    $("fleet-range").textContent = `${first}–${last} of ${counts.kiosks}`;
    $("fleet-prev").disabled = page.offset === 0;
    $("fleet-next").disabled = last >= counts.kiosks;
    // What is on screen, for whoever waits on it (a test, a benchmark): the query it answers.
    params.delete("limit");
    $("fleet-rows").dataset.query = params.toString();
    $("fleet-rows").removeAttribute("aria-busy");
  }

  function badge(count, kind, word) {
    return count ? el("span", { class: `badge ${kind}` }, `${count} ${word}`) : "—";
  }

  function statusCell(k) {
    return el(
      "td",
      { "data-field": "status" },
      el("span", { class: "badge " + (k.online ? "online" : "offline") }, k.online ? "online" : "offline"),
      k.status_since ? el("span", { class: "small" }, " " + since(k.status_since)) : null
    );
  }

  function row(k) {
    const alerts = k.open_alerts;
    const link = el(
      "a",
      { href: `/dashboard?site=${k.site_id}&kiosk=${k.id}` },
      k.name
    );
    const alertCell = el("td", {});
    const parts = [
      [alerts.critical, "bad", "critical"],
      [alerts.warning, "warn", "warning"],
      [alerts.info, "info", "info"],
    ].filter(([n]) => n > 0);
    if (parts.length) {
      for (const [n, kind, word] of parts) alertCell.append(badge(n, kind, word), " ");
    } else alertCell.append("—");
    return el(
      "tr",
      { class: k.trouble ? "trouble" : "", "data-kiosk": k.code, "data-kiosk-id": k.id },
      el("td", {}, link, el("br"), el("span", { class: "small" }, k.code)),
      el("td", {}, k.site_name),
      statusCell(k),
      el("td", { "data-field": "faults" }, badge(k.compartments_faulted, "bad", "in fault")),
      el("td", { "data-field": "at-risk" }, badge(k.food_at_risk, "warn", "at risk")),
      alertCell,
      el("td", {}, `${k.compartments_free} / ${k.compartments_total}`)
    );
  }

  // A re-read rewrites only the cells that changed when the same kiosks come back in the same
  // order: a click pressed on a kiosk's link before a re-read and released after it still opens
  // the kiosk (a link replaced in between takes no click).
  function showRows(fresh) {
    const body = $("fleet-rows");
    const shown = [...body.children];
    const key = (tr) => tr.dataset.kiosk || "";
    if (shown.length !== fresh.length || shown.some((tr, i) => key(tr) !== key(fresh[i]))) {
      body.replaceChildren(...fresh);
      return;
    }
    shown.forEach((tr, i) => {
      const next = fresh[i];
      LockerSSE.takeAttributes(tr, next);
      const cells = [...next.children];
      cells.forEach((td, j) => {
        const old = tr.children[j];
        if (!old) tr.append(td);
        else if (old.outerHTML !== td.outerHTML) old.replaceWith(td);
      });
      while (tr.children.length > cells.length) tr.lastElementChild.remove();
    });
  }

  function rereadSoon(delayMs) {
    clearTimeout(state.reread);
    state.reread = setTimeout(() => load().catch((err) => console.warn("re-read failed", err)), delayMs);
  }

  // ---- live stream ----------------------------------------------------------------------
  function setConn(live, text) {
    $("conn").className = "conn " + (live ? "conn-live" : "conn-down");
    $("conn").textContent = text;
  }

  function handle(event, data) {
    switch (event) {
      case "hello":
        setConn(true, "live");
        rereadSoon(0); // changes between the first read and the stream's start
        break;
      case "resync":
        rereadSoon(0);
        break;
      case "kiosk": {
        const tr = $("fleet-rows").querySelector(`tr[data-kiosk="${CSS.escape(String(data.kiosk))}"]`);
        if (tr) {
          const online = data.state === "online";
          tr.querySelector('[data-field="status"]').replaceWith(
            statusCell({ online, status_since: new Date().toISOString() })
          );
        }
        rereadSoon(REREAD_MS);
        break;
      }
      case "alert":
        rereadSoon(REREAD_MS);
        break;
      default:
        break; // nothing else is asked for: the periodic re-read covers compartments
    }
  }

  function connectStream() {
    if (state.stream) state.stream.stop();
    state.stream = LockerSSE.follow("/api/v1/operator/stream?kinds=kiosk,alert", () => sessionStorage.getItem(TOKEN_KEY), {
      onEvent: handle,
      onDown: () => setConn(false, "reconnecting…"),
      onRefused: () => signOut("Your token was not accepted."),
    });
  }

  // ---- wiring ---------------------------------------------------------------------------
  function searchAgain() {
    state.offset = 0;
    load().catch((err) => console.warn("search failed", err));
  }

  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("login-token").value.trim());
    $("login-token").value = "";
    signIn().catch(signInFailed);
  });
  $("sign-out").addEventListener("click", () => signOut(""));
  $("fleet-form").addEventListener("submit", (event) => {
    event.preventDefault();
    clearTimeout(state.typing);
    searchAgain();
  });
  $("fleet-q").addEventListener("input", () => {
    clearTimeout(state.typing);
    state.typing = setTimeout(searchAgain, TYPING_MS);
  });
  $("fleet-trouble").addEventListener("change", searchAgain);
  $("fleet-prev").addEventListener("click", () => {
    state.offset = Math.max(0, state.offset - PAGE_SIZE);
    load().catch((err) => console.warn("page failed", err));
  });
  $("fleet-next").addEventListener("click", () => {
    if (state.offset + PAGE_SIZE >= state.total) return;
    state.offset += PAGE_SIZE;
    load().catch((err) => console.warn("page failed", err));
  });
  setInterval(() => {
    if (!$("app").hidden && !document.hidden) load().catch(() => {});
  }, REFRESH_MS);

  const fromHash = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (fromHash) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(fromHash[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
  if (sessionStorage.getItem(TOKEN_KEY)) signIn().catch(signInFailed);
  else signOut("");
})();
