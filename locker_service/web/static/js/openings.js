// The openings audit page: every door opening in the operator's sites, searched and downloaded.
//
// Reads the operator API with the token the dashboard keeps for this tab (sessionStorage) or one
// typed here. The CSV is fetched with the token in the Authorization header and handed to the
// browser as a file, because a plain link could not carry the header (and a token in a URL
// would end up in access logs).
"use strict";

(function () {
  const TOKEN_KEY = "locker.operatorToken"; // the dashboard's key: one sign-in for both pages
  const PAGE_SIZE = 100;
  const words = JSON.parse(document.getElementById("opening-words").textContent);
  const $ = (id) => document.getElementById(id);
  const state = { sites: [], cursor: null, shown: 0 };

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message || code);
      this.status = status;
      this.code = code;
    }
  }

  async function request(path) {
    const response = await fetch("/api/v1" + path, {
      headers: { Authorization: "Bearer " + sessionStorage.getItem(TOKEN_KEY) },
    });
    if (response.ok) return response;
    let payload = null;
    try {
      payload = await response.json();
    } catch (err) {
      payload = null;
    }
    if (response.status === 401) signOut("Your token was not accepted.");
    throw new ApiError(response.status, payload && payload.error, payload && payload.message);
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
    for (const child of children) node.append(child === null || child === undefined ? "" : child);
    return node;
  }

  function fmtTime(iso) {
    if (!iso) return "—";
    const at = new Date(iso);
    return at.toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" });
  }

  function notice(text, kind) {
    const p = $("audit-notice");
    p.hidden = !text;
    p.textContent = text || "";
    p.className = "notice " + (kind || "");
  }

  // ---- sign-in ----------------------------------------------------------------------------
  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    $("app").hidden = true;
    $("login").hidden = false;
    $("login-error").hidden = !message;
    $("login-error").textContent = message || "";
  }

  async function start() {
    const match = /(?:^#|&)token=([^&]+)/.exec(location.hash);
    if (match) {
      sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
      history.replaceState(null, "", location.pathname + location.search);
    }
    if (!sessionStorage.getItem(TOKEN_KEY)) {
      signOut("");
      return;
    }
    try {
      state.sites = await (await request("/operator/sites")).json();
    } catch (err) {
      if (err.status !== 401) signOut(`Sign-in failed: ${err.message}`);
      return;
    }
    $("login").hidden = true;
    $("app").hidden = false;
    fillSites();
    search();
  }

  function fillSites() {
    const select = $("audit-site");
    for (const site of state.sites) select.append(el("option", { value: site.id }, site.name));
    fillKiosks();
  }

  function fillKiosks() {
    const select = $("audit-kiosk");
    select.replaceChildren(el("option", { value: "" }, "every kiosk"));
    const siteId = $("audit-site").value;
    for (const site of state.sites) {
      if (siteId && String(site.id) !== siteId) continue;
      for (const k of site.kiosks) {
        const label = state.sites.length > 1 ? `${site.name} · ${k.name}` : k.name;
        select.append(el("option", { value: k.id }, label));
      }
    }
  }

  // ---- search -----------------------------------------------------------------------------
  function query() {
    const params = new URLSearchParams();
    for (const field of $("audit-form").elements) {
      if (!field.name || !field.value.trim()) continue;
      let value = field.value.trim();
      // datetime-local is the operator's local time; the API takes an instant.
      if (field.type === "datetime-local") value = new Date(value).toISOString();
      params.set(field.name, value);
    }
    return params;
  }

  function row(o) {
    const where = `${o.site_code} · ${o.kiosk_code} · #${o.compartment}`;
    const who = o.actor_name ? `${o.actor_name} (${o.actor})` : o.actor;
    return el(
      "tr",
      { class: "kind-" + o.kind, "data-id": o.id },
      el("td", {}, fmtTime(o.at)),
      el("td", {}, o.door_opened_at ? fmtTime(o.door_opened_at) : "not seen"),
      el("td", {}, where),
      el("td", {}, words.kinds[o.kind] || o.kind),
      el("td", {}, who),
      el("td", {}, words.hows[o.how] || o.how),
      el("td", { class: "why" }, o.reason),
      el("td", {}, o.order_ref || ""),
    );
  }

  async function search(more) {
    const params = query();
    params.set("limit", String(PAGE_SIZE));
    if (more && state.cursor) params.set("cursor", state.cursor);
    let page;
    try {
      page = await (await request("/operator/openings?" + params)).json();
    } catch (err) {
      notice(err.message, "bad");
      return;
    }
    notice("");
    const body = $("audit-rows");
    if (!more) {
      body.replaceChildren();
      state.shown = 0;
    }
    for (const o of page.items) body.append(row(o));
    state.shown += page.items.length;
    state.cursor = page.next_cursor;
    $("audit-count").textContent = String(state.shown) + (state.cursor ? "+" : "");
    $("audit-more").hidden = !state.cursor;
    if (!more && !page.items.length) body.append(el("tr", {}, el("td", { colspan: 8 }, "No openings match.")));
  }

  async function download() {
    let response;
    try {
      response = await request("/operator/openings.csv?" + query());
    } catch (err) {
      notice(err.message, "bad");
      return;
    }
    const url = URL.createObjectURL(await response.blob());
    const link = el("a", { href: url, download: "door-openings.csv" });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 0);
  }

  // ---- wiring -----------------------------------------------------------------------------
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("login-token").value.trim());
    start();
  });
  $("audit-site").addEventListener("change", fillKiosks);
  $("audit-form").addEventListener("submit", (event) => {
    event.preventDefault();
    search(false);
  });
  $("audit-more").addEventListener("click", () => search(true));
  $("audit-csv").addEventListener("click", download);
  start();
})();
