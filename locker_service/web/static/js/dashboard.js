// Operator dashboard: sites, kiosks, the compartment grid, alerts, actions, live over SSE.
//
// Full state is read once (and again after a reconnect or a `resync`); after that every change
// arrives on the one stream `/api/v1/operator/stream`. The stream is read with fetch() rather
// than EventSource because EventSource cannot send the Authorization header, and a token in the
// URL would end up in access logs.
"use strict";

(function () {
  const TOKEN_KEY = "locker.operatorToken";
  // The food-safety floor drawn on the chart: the service's LOCKER_HOLD_FLOOR_C, given by the page.
  const FLOOR_C = Number(document.body.dataset.floorC || 60);
  // The floor of the site shown: its food-safety profile's (lockerctl set-food-profile).
  const floorC = () => {
    const site = currentSite();
    return site && site.food_safety ? site.food_safety.floor_c : FLOOR_C;
  };
  // LOCKER_TIME_SCALE, given by the page: alert durations are told in story time.
  const TIME_SCALE = Number(document.body.dataset.timeScale || 1);
  // Order states with food behind the door (locker_service.kiosks.exceptions).
  const FOOD_INSIDE = ["deposited", "disinfecting", "ready"];
  const CHART_POINTS_MAX = 20000; // keeps a day of 1 Hz readings without slowing the chart

  const $ = (id) => document.getElementById(id);
  const state = {
    sites: [],
    siteId: null,
    kioskId: null,
    kiosk: null, // the kiosk as last read, with its compartments
    cells: new Map(), // number -> compartment
    cycleTotals: new Map(), // number -> longest remaining seen in the current cycle (s)
    selected: null, // compartment number with the detail open
    chart: null,
    chartData: null,
    stream: null, // the live stream, while signed in
    refetchTimer: null,
  };

  // ---- API ------------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, code, message) {
      super(message || code);
      this.status = status;
      this.code = code;
    }
  }

  async function api(method, path, body) {
    const response = await fetch("/api/v1" + path, {
      method,
      headers: {
        Authorization: "Bearer " + sessionStorage.getItem(TOKEN_KEY),
        "Content-Type": "application/json",
      },
      body: body === undefined ? undefined : JSON.stringify(body),
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

  const list = (payload, key) =>
    Array.isArray(payload) ? payload : (payload && (payload[key] || payload.items)) || [];

  // ---- formatting -----------------------------------------------------------------------
  function fmtTemp(c) {
    return c === null || c === undefined ? "—" : Number(c).toFixed(1) + " °C";
  }

  function fmtDuration(seconds) {
    if (seconds === null || seconds === undefined || !isFinite(seconds)) return "—";
    seconds = Math.max(0, Math.round(seconds));
    const h = Math.floor(seconds / 3600);
    const m = Math.floor((seconds % 3600) / 60);
    const s = seconds % 60;
    const mm = String(m).padStart(2, "0");
    const ss = String(s).padStart(2, "0");
    return h ? `${h}:${mm}:${ss}` : `${m}:${ss}`;
  }

  function fmtTime(iso) {
    if (!iso) return "—";
    const d = new Date(iso);
    return isNaN(d) ? iso : d.toLocaleString();
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
    // The token is checked with the operator's own row (the sites' list of an operator with a
    // whole fleet is thousands of kiosks, read once); the stream's `hello` then triggers the
    // full read, so no change made between the read and the stream's start is missed.
    const me = await api("GET", "/operator/me");
    $("freeze-all").hidden = !me || me.role !== "admin";
    // Lifting a courier's lockout acts on the site (ADR 0121): not for viewers, nor for an
    // operator for merchants; the service refuses them anyway.
    state.mayLift = !!me && me.role !== "viewer" && !me.merchant_ids;
    $("login").hidden = true;
    $("app").hidden = false;
    connectStream();
  }

  function signInFailed(err) {
    signOut(err.status === 401 ? "Your token was not accepted." : `Sign-in failed: ${err.message}`);
  }

  // ---- sites and kiosks -----------------------------------------------------------------
  async function loadSites() {
    state.sites = list(await api("GET", "/operator/sites"), "sites");
    const siteSelect = $("site-select");
    siteSelect.replaceChildren(
      ...state.sites.map((s) => el("option", { value: s.id }, s.name || s.code))
    );
    const wanted = state.sites.find((s) => s.id === state.siteId) || state.sites[0];
    if (!wanted) {
      $("kiosk-title").textContent = "No site in your scope";
      return;
    }
    siteSelect.value = wanted.id;
    await selectSite(wanted.id);
  }

  function currentSite() {
    return state.sites.find((s) => s.id === state.siteId) || null;
  }

  async function selectSite(siteId) {
    state.siteId = Number(siteId);
    const site = currentSite();
    const kiosks = (site && site.kiosks) || [];
    $("kiosk-select").replaceChildren(
      ...kiosks.map((k) => el("option", { value: k.id }, k.name || k.code))
    );
    renderKill();
    const kiosk = kiosks.find((k) => k.id === state.kioskId) || kiosks[0];
    if (kiosk) {
      $("kiosk-select").value = kiosk.id;
      await selectKiosk(kiosk.id);
    } else {
      state.kiosk = null;
      $("grid").replaceChildren(el("p", {}, "This site has no kiosk yet."));
    }
    await Promise.all([loadAlerts(), loadOrders()]);
  }

  async function selectKiosk(kioskId) {
    if (state.kioskId !== Number(kioskId)) closeDetail();
    state.kioskId = Number(kioskId);
    await loadKiosk();
  }

  async function loadKiosk() {
    if (!state.kioskId) return;
    const kiosk = await api("GET", "/operator/kiosks/" + state.kioskId);
    state.kiosk = kiosk;
    const before = new Map(state.cells);
    state.cells.clear();
    for (const c of list(kiosk.compartments, "compartments")) {
      // The database holds the last snapshot's temperature; a live reading newer than that
      // (telemetry is live at once, a snapshot is stored first) stays on screen.
      c.temp_at = Date.parse(c.snapshot_at || "") || 0;
      const shown = before.get(c.number);
      if (shown && shown.temp_at > c.temp_at) {
        Object.assign(c, { temp_c: shown.temp_c, setpoint_c: shown.setpoint_c,
          heater_on: shown.heater_on, temp_at: shown.temp_at });
      }
      state.cells.set(c.number, c);
    }
    $("kiosk-title").textContent = `${kiosk.name || kiosk.code} (${kiosk.code})`;
    renderOnline(kiosk.online, kiosk.fw);
    renderGrid();
    if (state.selected !== null) renderDetailFacts();
  }

  function renderOnline(online, fw) {
    const badge = $("kiosk-online");
    badge.textContent = online ? "online" : "offline";
    badge.className = "badge " + (online ? "online" : "offline");
    $("kiosk-fw").textContent = fw ? "firmware " + fw : "";
  }

  // ---- compartment grid -----------------------------------------------------------------
  function cycleProgress(c) {
    const remaining = c.disinfect_remaining_s || 0;
    if (!remaining) {
      state.cycleTotals.delete(c.number);
      return null;
    }
    const total = Math.max(state.cycleTotals.get(c.number) || 0, remaining);
    state.cycleTotals.set(c.number, total);
    return { remaining, fraction: 1 - remaining / total };
  }

  function waitedSeconds(c) {
    const order = c.order;
    if (!order) return null;
    const since = order.ready_at || order.deposited_at || order.assigned_at;
    if (since) return (Date.now() - new Date(since).getTime()) / 1000;
    return c.waited_s ?? order.waited_s ?? null;
  }

  function renderCell(c) {
    // Red below the hold floor whenever hot food is held, also when a heater fault has
    // dropped the setpoint: the food's temperature matters, not what the heater is asked for.
    const holdsFood = c.heated && c.order && FOOD_INSIDE.includes(c.order.state);
    const lowTemp = (c.setpoint_c || holdsFood) && c.temp_c !== null && c.temp_c !== undefined && c.temp_c < floorC();
    const progress = cycleProgress(c);
    const order = c.order;
    const button = el(
      "button",
      {
        type: "button",
        class: `cell state-${c.state}` + (state.selected === c.number ? " selected" : ""),
        "data-number": c.number,
        ariaLabel: `Compartment ${c.number}, ${String(c.state).replace(/_/g, " ")}`,
      },
      el("span", { class: "num" }, `#${c.number} `, el("span", { class: "badge" }, String(c.state).replace(/_/g, " "))),
      el("span", { class: "temp" + (lowTemp ? " low" : ""), "data-field": "temp" }, fmtTemp(c.temp_c)),
      el("span", { class: "line" }, "setpoint ", el("b", {}, c.setpoint_c ? fmtTemp(c.setpoint_c) : "off"),
        c.heater_on ? " · heating" : ""),
      el("span", { class: "line" }, "door ", el("b", { "data-field": "door" }, c.door_open ? "OPEN" : "closed"),
        " · lock ", el("b", {}, c.lock_released ? "released" : "locked")),
      progress
        ? el("span", { class: "line" }, (c.uv_on ? "UV-C " : "cycle ") + "left ",
            el("b", { "data-field": "cycle-left" }, fmtDuration(progress.remaining)))
        : null,
      progress ? el("span", { class: "progress" }, progressBar(progress.fraction)) : null,
      order
        ? el("span", { class: "line" }, "order ", el("b", {}, order.external_ref || String(order.id).slice(0, 8)),
            " · waited ", el("b", { "data-field": "waited" }, fmtDuration(waitedSeconds(c))))
        : null,
      order && order.food_deadline
        ? el("span", { class: "line" }, "food safe for ",
            el("b", { "data-field": "food-left" },
              fmtDuration(Math.max(0, (new Date(order.food_deadline).getTime() - Date.now()) / 1000))))
        : null,
      c.fault ? el("span", { class: "line" }, "fault ", el("b", {}, c.fault)) : null,
      c.out_of_service_reason ? el("span", { class: "line" }, "out of service: ", c.out_of_service_reason) : null
    );
    button.addEventListener("click", () => openDetail(c.number));
    return button;
  }

  // A live update rewrites a cell in place, never replaces it: a click pressed on the old
  // element and released on its replacement is no click at all, and readings arrive every few
  // seconds. (`.cell *` takes no pointer events, so the press and the release land on the cell.)
  function refreshCell(old, c) {
    const fresh = renderCell(c);
    LockerSSE.takeAttributes(old, fresh);
    old.replaceChildren(...fresh.childNodes);
  }

  function progressBar(fraction) {
    const bar = el("span", {});
    bar.style.width = Math.round(Math.min(1, Math.max(0, fraction)) * 100) + "%";
    return bar;
  }

  function renderGrid() {
    const numbers = [...state.cells.keys()].sort((a, b) => a - b);
    const shown = [...$("grid").querySelectorAll(".cell")];
    if (shown.map((cell) => Number(cell.dataset.number)).join() === numbers.join()) {
      shown.forEach((cell, i) => refreshCell(cell, state.cells.get(numbers[i])));
      return;
    }
    $("grid").replaceChildren(...numbers.map((n) => renderCell(state.cells.get(n))));
  }

  function updateCell(n) {
    const c = state.cells.get(n);
    const old = $("grid").querySelector(`[data-number="${n}"]`);
    if (!c || !old) return;
    refreshCell(old, c);
    if (state.selected === n) renderDetailFacts();
  }

  // ---- detail, chart and actions --------------------------------------------------------
  function openDetail(n) {
    state.selected = n;
    $("detail").hidden = false;
    for (const cell of $("grid").querySelectorAll(".cell")) {
      cell.classList.toggle("selected", Number(cell.dataset.number) === n);
    }
    $("action-result").hidden = true;
    renderDetailFacts();
    loadChart();
  }

  function closeDetail() {
    state.selected = null;
    $("detail").hidden = true;
    if (state.chart) state.chart.destroy();
    state.chart = null;
  }

  function renderDetailFacts() {
    const c = state.cells.get(state.selected);
    if (!c) return;
    $("detail-title").textContent = `Compartment ${c.number} (${c.size || "?"}${c.heated ? ", heated" : ""})`;
    const order = c.order;
    $("detail-facts").textContent = [
      `state ${c.state}`,
      `temperature ${fmtTemp(c.temp_c)}, setpoint ${c.setpoint_c ? fmtTemp(c.setpoint_c) : "off"}`,
      `UV ${c.uv_on ? "on" : "off"}`,
      // The lamp's hours since it was fitted, from the board's cycle records (ADR 0073).
      `UV lamp ${((c.lamp_on_s || 0) / 3600).toFixed(1)} h` +
        (c.lamp_fitted_at ? ` since ${new Date(c.lamp_fitted_at).toLocaleDateString()}` : ""),
      order ? `order ${order.external_ref || order.id} (${order.state}) for ${order.purchaser_name || "?"}` : "empty",
    ].join(" · ");
    // Offered where a plain opening is refused for the running cycle, or a fault holds food.
    $("abort-and-open").hidden = !(c.state === "disinfecting" || (c.fault && order));
  }

  async function loadChart() {
    const c = state.cells.get(state.selected);
    if (!c) return;
    const hours = $("chart-hours").value;
    let payload;
    try {
      payload = await api("GET", `/operator/compartments/${c.id}/temperatures?hours=${hours}`);
    } catch (err) {
      $("chart").textContent = "No temperature history: " + err.message;
      return;
    }
    const readings = list(payload, "points");
    const floor = floorC();
    const xs = [], temps = [], setpoints = [], floors = [];
    for (const r of readings) {
      xs.push(new Date(r.ts).getTime() / 1000);
      temps.push(r.temp_c ?? null);
      setpoints.push(r.setpoint_c ?? null);
      floors.push(floor);
    }
    state.chartData = [xs, temps, setpoints, floors];
    state.chartFloor = floor;
    drawChart();
  }

  function drawChart() {
    const box = $("chart");
    if (state.chart) state.chart.destroy();
    box.replaceChildren();
    const width = Math.max(300, box.clientWidth || 600);
    state.chart = new uPlot(
      {
        width,
        height: 240,
        scales: { x: { time: true }, y: { auto: true } },
        series: [
          {},
          { label: "temperature °C", stroke: "#b3261e", width: 2, spanGaps: false },
          { label: "setpoint °C", stroke: "#0b5cad", width: 1.5, dash: [6, 4] },
          { label: "floor °C", stroke: "#17663a", width: 1.5, dash: [2, 4] },
        ],
        axes: [{}, { label: "°C" }],
      },
      state.chartData,
      box
    );
  }

  function appendReadings(kioskCode, readings, ts) {
    if (!state.chart || !state.kiosk || kioskCode !== state.kiosk.code) return;
    const c = state.cells.get(state.selected);
    for (const r of readings) {
      if (!c || r.n !== c.number) continue;
      const [xs, temps, setpoints, floors] = state.chartData;
      xs.push(new Date(ts).getTime() / 1000);
      temps.push(r.temp_c ?? null);
      setpoints.push(r.setpoint_c ?? null);
      floors.push(state.chartFloor);
      if (xs.length > CHART_POINTS_MAX) for (const s of state.chartData) s.shift();
      state.chart.setData(state.chartData);
    }
  }

  async function act(action) {
    const c = state.cells.get(state.selected);
    const reason = $("action-reason").value.trim();
    const result = $("action-result");
    if (!c) return;
    if (!reason) {
      showResult(false, "A reason is required.");
      return;
    }
    // An opening says what it is for (ADR 0120): it decides how the order ends.
    const purpose = $("action-purpose").value;
    const opening = action === "open" || action === "abort-and-open";
    if (opening && !purpose) {
      showResult(false, "Say what the opening is for.");
      return;
    }
    if (action === "open" && !confirm(`Open compartment ${c.number} now?`)) return;
    if (action === "abort-and-open" && !confirm(`Abort the cycle of compartment ${c.number} and open it now?`)) return;
    if (action === "lamp-replaced" && !confirm(`Record a new UV-C lamp in compartment ${c.number}? Its hours start again.`)) return;
    result.hidden = true;
    try {
      const body = action === "back-in-service" ? {} : { reason };
      // "Abort the cycle and open" is the open action with override_cycle (audited as such).
      if (action === "abort-and-open") body.override_cycle = true;
      if (opening) body.purpose = purpose;
      const path = action === "abort-and-open" ? "open" : action;
      await api("POST", `/operator/compartments/${c.id}/${path}`, body);
      const done = {
        open: "opened",
        "abort-and-open": "opened, its cycle aborted",
        "out-of-service": "taken out of service",
        "back-in-service": "back in service",
        "lamp-replaced": "has a new UV-C lamp: its hours start again",
      };
      const purposes = {
        handover: ": hand the food to the purchaser",
        discard: ": take the food out to discard it",
        inspect: ": the food stays in",
      };
      showResult(true, `Compartment ${c.number} ${done[action]}${opening ? purposes[purpose] : ""}.`);
      $("action-reason").value = "";
      $("action-purpose").value = "";
      await loadKiosk();
    } catch (err) {
      showResult(false, `Refused: ${err.message}`);
    }
  }

  function showResult(ok, text) {
    const result = $("action-result");
    result.className = "notice " + (ok ? "ok" : "bad");
    result.textContent = text;
    result.hidden = false;
  }

  // ---- alerts, orders, kill switch ------------------------------------------------------
  // Alerts are shown by their title (from the service's catalogue, in the browser's language)
  // with how often and how long, in story time: a real interval times LOCKER_TIME_SCALE.
  const ALERT_LANGUAGE = (navigator.language || "en").toLowerCase().startsWith("zh") ? "zh-Hans" : "en";
  const ALERT_WORDS = {
    en: { times: (n) => `${n} times`, open: (d) => `for ${d}`, ack: "Acknowledge", acked: "acknowledged",
      resend: "Resend", contact: "Corrected contact (optional)", resent: "Message queued again",
      lift: "Lift the lockout", liftReason: "How you know it is him (required)", lifted: "Lockout lifted" },
    "zh-Hans": { times: (n) => `${n} 次`, open: (d) => `已持续 ${d}`, ack: "确认", acked: "已确认",
      resend: "重新发送", contact: "更正后的联系方式（可选）", resent: "消息已重新排队",
      lift: "解除锁定", liftReason: "如何确认是本人（必填）", lifted: "已解除锁定" },
  }[ALERT_LANGUAGE];
  const UNITS = ALERT_LANGUAGE === "en" ? ["d", "h", "min"] : ["天", "小时", "分钟"];

  function storyDuration(realSeconds) {
    const minutes = Math.floor(Math.max(0, realSeconds * TIME_SCALE) / 60);
    if (minutes < 1) return `< 1 ${UNITS[2]}`;
    const d = Math.floor(minutes / 1440), h = Math.floor((minutes % 1440) / 60), m = minutes % 60;
    const parts = [];
    if (d) parts.push(`${d} ${UNITS[0]}`);
    if (h) parts.push(`${h} ${UNITS[1]}`);
    if (m || !(d || h)) parts.push(`${m} ${UNITS[2]}`);
    return parts.join(" ");
  }

  function alertTitle(a) {
    return (a.title && (a.title[ALERT_LANGUAGE] || a.title.en)) || a.kind;
  }

  // An alert's one-field form: the field's limits and words, the button's, and what it posts.
  function alertForm(limits, label, action, done, send) {
    const input = el("input", { type: "text", placeholder: label, ...limits });
    input.setAttribute("aria-label", label);
    const button = el("button", { type: "submit" }, action);
    const form = el("form", { class: "alert-resend" }, input, button);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      button.disabled = true;
      try {
        await send(input.value.trim());
        logEvent(done);
      } catch (err) {
        logEvent(`${action}: ${err.message}`);
      } finally {
        await loadAlerts();
      }
    });
    return form;
  }

  function resendForm(a) {
    return alertForm({ maxLength: 1000 }, ALERT_WORDS.contact, ALERT_WORDS.resend,
      `${ALERT_WORDS.resent}: ${alertTitle(a)}`,
      (contact) => api("POST", `/operator/notifications/${a.notification_id}/resend`,
        contact ? { contact } : {}));
  }

  // A courier locked out after wrong PINs: the operator who knows it is him lifts it, saying how.
  function liftForm(a) {
    return alertForm({ minLength: 3, maxLength: 500, required: true }, ALERT_WORDS.liftReason,
      ALERT_WORDS.lift, `${ALERT_WORDS.lifted}: ${a.message}`,
      (reason) => api("POST", `/operator/alerts/${a.id}/lift-lockout`, { reason }));
  }

  async function loadAlerts() {
    const alerts = list(await api("GET", "/operator/alerts"), "alerts")
      .filter((a) => a.state !== "resolved" && (!state.siteId || !a.site_id || a.site_id === state.siteId));
    const open = alerts.filter((a) => a.state === "open");
    $("alert-count").textContent = String(open.length);
    const now = Date.now();
    $("alerts").replaceChildren(
      ...alerts.map((a) => {
        const ack = el("button", { type: "button", class: "alert-ack" }, ALERT_WORDS.ack);
        ack.hidden = a.state !== "open";
        ack.addEventListener("click", async () => {
          ack.disabled = true;
          try {
            await api("POST", `/operator/alerts/${a.id}/ack`);
          } finally {
            await loadAlerts();
          }
        });
        const facts = [];
        if (a.count > 1) facts.push(ALERT_WORDS.times(a.count));
        facts.push(ALERT_WORDS.open(storyDuration((now - Date.parse(a.raised_at)) / 1000)));
        if (a.state !== "open") facts.push(ALERT_WORDS.acked);
        const advice = a.advice && (a.advice[ALERT_LANGUAGE] || a.advice.en);
        return el(
          "li",
          { class: `sev-${a.severity} ${a.state === "open" ? "" : "acked"}`, "data-alert": a.id,
            "data-kind": a.kind },
          el("div", { class: "alert-text" },
            el("b", { class: "alert-title", title: a.kind }, alertTitle(a)),
            el("span", { class: "small alert-facts" }, " · " + facts.join(" · ")),
            el("div", { class: "alert-message" }, a.message),
            advice ? el("div", { class: "small" }, advice) : null,
            el("div", { class: "small" }, fmtTime(a.raised_at)),
            a.notification_id ? resendForm(a) : null,
            a.kind === "courier_locked_out" && state.mayLift ? liftForm(a) : null),
          ack
        );
      })
    );
  }

  async function loadOrders() {
    const q = $("orders-q").value.trim();
    const st = $("orders-state").value;
    const params = new URLSearchParams();
    if (q) params.set("q", q);
    if (st) params.set("state", st);
    let orders;
    try {
      orders = list(await api("GET", "/operator/orders?" + params), "orders");
    } catch (err) {
      $("orders").replaceChildren(el("tr", {}, el("td", { colSpan: 5 }, "Orders unavailable: " + err.message)));
      return;
    }
    $("orders").replaceChildren(
      ...orders.filter((o) => !state.siteId || o.site_id === state.siteId).slice(0, 50).map((o) =>
        el("tr", {}, el("td", {}, o.external_ref), el("td", {}, o.purchaser_name || ""),
          el("td", {}, o.state), el("td", {}, compartmentLabel(o.compartment_id)),
          el("td", {}, fmtTime(o.created_at)))
      )
    );
  }

  function compartmentLabel(id) {
    if (id === null || id === undefined) return "";
    for (const c of state.cells.values()) if (c.id === id) return `#${c.number}`;
    return `id ${id}`;
  }

  function renderKill() {
    const site = currentSite();
    if (!site) return;
    const engaged = !!site.kill_switch_engaged;
    $("kill").classList.toggle("engaged", engaged);
    $("kill-state").textContent = engaged
      ? `ENGAGED: code and remote openings are frozen at ${site.name}. Reason: ${site.kill_switch_reason || "—"}`
      : `Openings at ${site.name} work normally.`;
    $("kill-button").textContent = engaged ? "Release the kill switch" : "Freeze all openings";
    const rules = site.food_safety;
    $("food-profile").textContent = rules
      ? `Food safety: ${rules.name}, at or above ${rules.floor_c} °C (held at ${rules.setpoint_c} °C), ` +
        `${rules.cooking_limit_s / 3600} h from cooking, ${rules.ready_limit_s / 3600} h from ready`
      : "";
    $("kill-button").className = engaged ? "primary" : "danger";
  }

  async function toggleKill() {
    const site = currentSite();
    const reason = $("kill-reason").value.trim();
    if (!site || !reason) return;
    const engaged = !site.kill_switch_engaged;
    if (engaged && !confirm(`Freeze every code and remote opening at ${site.name}?`)) return;
    try {
      const answer = await api("POST", `/operator/sites/${site.id}/kill-switch`, { engaged, reason });
      site.kill_switch_engaged = answer ? answer.kill_switch_engaged : engaged;
      site.kill_switch_reason = answer ? answer.kill_switch_reason : reason;
      $("kill-reason").value = "";
      renderKill();
    } catch (err) {
      $("kill-state").textContent = "Refused: " + err.message;
    }
  }

  async function freezeAll(engaged) {
    const reason = $("freeze-all-reason").value.trim();
    if (!reason) return;
    if (engaged && !confirm("Freeze every code, remote and drop-off opening at EVERY site?")) return;
    try {
      const sites = list(await api("POST", "/operator/kill-switch", { engaged, reason }), "sites");
      $("freeze-all-reason").value = "";
      $("freeze-all-state").textContent = engaged
        ? `ENGAGED at every site (${sites.length}). Reason: ${reason}`
        : `Released at every site (${sites.length}).`;
      await loadSites();
    } catch (err) {
      $("freeze-all-state").textContent = "Refused: " + err.message;
    }
  }

  // ---- live stream ----------------------------------------------------------------------
  function setConn(live, text) {
    $("conn").className = "conn " + (live ? "conn-live" : "conn-down");
    $("conn").textContent = text;
  }

  function scheduleRefetch(what) {
    clearTimeout(state.refetchTimer);
    state.refetchTimer = setTimeout(async () => {
      try {
        if (what === "all") await loadSites();
        else await Promise.all([loadKiosk(), loadAlerts(), loadOrders()]);
      } catch (err) {
        console.warn("refetch failed", err);
      }
    }, 250); // a burst of changes (a door, an item, a cycle) becomes one re-read
  }

  function logEvent(text) {
    const item = el("li", {}, `${new Date().toLocaleTimeString()} ${text}`);
    $("events").prepend(item);
    while ($("events").children.length > 100) $("events").lastChild.remove();
  }

  const onKiosk = (code, id) =>
    !!state.kiosk && (code === state.kiosk.code || (id !== undefined && id === state.kiosk.id));

  function handle(event, data) {
    switch (event) {
      case "hello":
        setConn(true, "live");
        scheduleRefetch("all");
        break;
      case "resync":
        scheduleRefetch("all");
        break;
      case "compartment": {
        // Two shapes: the kiosk's snapshot ({kiosk, n, door_open, temp_c, ...}) and the
        // service's lifecycle change ({id, kiosk_id, number, state, ...}).
        if (!onKiosk(data.kiosk, data.kiosk_id)) break;
        const n = data.n ?? data.number;
        const c = state.cells.get(n);
        if (!c) break;
        const stateChanged = "state" in data && data.state !== c.state;
        // A snapshot handled after a newer reading was shown (the reading goes live at once,
        // the snapshot once stored) must not put the older temperature back.
        const at = Date.parse(data.ts || "") || 0;
        const older = at && at < (c.temp_at || 0);
        for (const key of ["door_open", "lock_released", "occupied", "heater_on", "uv_on",
          "disinfect_remaining_s", "temp_c", "setpoint_c", "fault", "state"]) {
          if (older && (key === "temp_c" || key === "setpoint_c" || key === "heater_on")) continue;
          if (key in data) c[key] = data[key];
        }
        if (at && !older && "temp_c" in data) c.temp_at = at;
        updateCell(n);
        if (stateChanged) scheduleRefetch("kiosk"); // the order inside may have changed too
        break;
      }
      case "telemetry": {
        if (onKiosk(data.kiosk)) {
          const at = Date.parse(data.ts || "") || 0;
          for (const r of data.readings || []) {
            const c = state.cells.get(r.n);
            if (!c || (at && at < (c.temp_at || 0))) continue;  // older than what is shown
            c.temp_at = at;
            c.temp_c = r.temp_c;
            c.setpoint_c = r.setpoint_c;
            c.heater_on = r.heater;
            updateCell(r.n);
          }
        }
        appendReadings(data.kiosk, data.readings || [], data.ts);
        break;
      }
      case "event":
        logEvent(`${data.kiosk} #${data.compartment ?? "-"} ${String(data.type).replace(/_/g, " ")}`);
        if (onKiosk(data.kiosk)) scheduleRefetch("kiosk");
        break;
      case "kiosk":
        logEvent(`${data.kiosk} ${data.state}`);
        if (onKiosk(data.kiosk)) renderOnline(data.state === "online", data.fw);
        break;
      case "order":
        logEvent(`order ${data.external_ref || data.id || ""} ${data.state || ""}`);
        scheduleRefetch("kiosk");
        break;
      case "alert":
        logEvent(`alert ${data.title ? data.title[ALERT_LANGUAGE] || data.title.en : data.kind || ""} ${data.message || ""}`);
        loadAlerts();
        break;
      case "site": {
        const site = state.sites.find((x) => x.id === data.id);
        if (site) {
          site.kill_switch_engaged = data.kill_switch_engaged;
          site.kill_switch_reason = data.reason;
          renderKill();
        }
        logEvent(`site ${site ? site.name : data.id} kill switch ${data.kill_switch_engaged ? "ENGAGED" : "released"}`);
        break;
      }
      case "pickup":
        logEvent(`${data.kiosk} scan ${data.ok ? `opened #${data.compartment}` : `refused: ${data.error}`}`);
        break;
      default:
        break;
    }
  }

  function connectStream() {
    if (state.stream) state.stream.stop();
    state.stream = LockerSSE.follow("/api/v1/operator/stream", () => sessionStorage.getItem(TOKEN_KEY), {
      onEvent: handle,
      onDown: () => setConn(false, "reconnecting…"),
      onRefused: () => signOut("Your token was not accepted."),
    });
  }

  // ---- clocks ---------------------------------------------------------------------------
  function tick() {
    // Waited times and cycle countdowns move every second between stream updates.
    for (const c of state.cells.values()) {
      const cell = $("grid").querySelector(`[data-number="${c.number}"]`);
      if (!cell) continue;
      const waited = cell.querySelector('[data-field="waited"]');
      if (waited) waited.textContent = fmtDuration(waitedSeconds(c));
    }
  }

  // ---- wiring ---------------------------------------------------------------------------
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("login-token").value.trim());
    $("login-token").value = "";
    signIn().catch(signInFailed);
  });
  $("sign-out").addEventListener("click", () => signOut(""));
  $("site-select").addEventListener("change", (e) => selectSite(e.target.value));
  $("kiosk-select").addEventListener("change", (e) => selectKiosk(e.target.value));
  $("chart-hours").addEventListener("change", loadChart);
  $("orders-form").addEventListener("submit", (event) => {
    event.preventDefault();
    loadOrders();
  });
  $("kill-form").addEventListener("submit", (event) => {
    event.preventDefault();
    toggleKill();
  });
  $("freeze-all-form").addEventListener("submit", (event) => {
    event.preventDefault();
    freezeAll(!event.submitter || event.submitter.dataset.engaged === "true");
  });
  $("action-form").addEventListener("submit", (event) => {
    event.preventDefault();
    act(event.submitter ? event.submitter.dataset.action : "open");
  });
  window.addEventListener("resize", () => state.chart && drawChart());
  setInterval(tick, 1000);

  // `?site=&kiosk=` (a row of the fleet view) opens that kiosk's grid first.
  const wanted = new URLSearchParams(location.search);
  state.siteId = Number(wanted.get("site")) || null;
  state.kioskId = Number(wanted.get("kiosk")) || null;

  const fromHash = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (fromHash) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(fromHash[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
  if (sessionStorage.getItem(TOKEN_KEY)) signIn().catch(signInFailed);
  else signOut("");
})();
