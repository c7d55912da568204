// The openings audit page: every door opening in the operator's sites, searched and downloaded
// as CSV (sign-in, requests and the download: operator-page.js).
"use strict";

(function () {
  const { $, el, request, save } = window.LockerOperatorPage;
  const PAGE_SIZE = 100;
  const words = JSON.parse(document.getElementById("opening-words").textContent);
  const state = { sites: [], cursor: null, shown: 0 };

  function fmtTime(iso) {
    if (!iso) return "—";
    const at = new Date(iso);
    return at.toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" });
  }

  function notice(text, kind) {
    window.LockerOperatorPage.notice("audit-notice", text, kind);
  }

  function ready(sites) {
    state.sites = sites;
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
      // An operator's opening says what it was for (ADR 0120).
      el("td", { class: "why" }, o.purpose ? `${o.reason} (${words.purposes[o.purpose] || o.purpose})` : o.reason),
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
    try {
      await save("/operator/openings.csv?" + query(), "door-openings.csv");
    } catch (err) {
      notice(err.message, "bad");
    }
  }

  // ---- wiring -----------------------------------------------------------------------------
  $("audit-site").addEventListener("change", fillKiosks);
  $("audit-form").addEventListener("submit", (event) => {
    event.preventDefault();
    search(false);
  });
  $("audit-more").addEventListener("click", () => search(true));
  $("audit-csv").addEventListener("click", download);
  window.LockerOperatorPage.signIn(ready);
})();
