// The kiosk's touch screen: courier drop-off and purchaser pickup by typed code.
//
// One page, several screens shown one at a time. Everything a person typed is forgotten when
// the screen goes back to the start, by hand or after inactivity, so the next person never sees
// the last one's PIN or code, nor the language the last one chose: the screen goes back to the
// kiosk's own language (the page's `?lang=`, else the kiosk browser's, else English). The kiosk
// token comes once from `#token=...` in the address (a fragment is never sent to a server or
// written in its logs) and is kept in localStorage.
"use strict";

(function () {
  const TOKEN_KEY = "locker.kioskToken";
  // Where an earlier version kept the last person's language; removed so it cannot come back.
  const OLD_LANG_KEY = "locker.kioskLang";
  const IDLE_WARNING_S = 10; // the last seconds before going home are announced on screen
  const KIOSK_REFRESH_MS = 20000; // kill switch and online state: a notice within 20 s is enough

  const root = document.getElementById("kiosk");
  const catalogues = JSON.parse(document.getElementById("catalogues").textContent);
  const idleS = Number(root.dataset.idleS);
  const resultS = Number(root.dataset.resultS);
  // The kiosk's own language, chosen by the server from `?lang=` or the kiosk browser's language.
  const defaultLang = catalogues[root.dataset.lang] ? root.dataset.lang : "en";
  let lang = defaultLang;
  localStorage.removeItem(OLD_LANG_KEY);

  // "Try again" goes back to the step whose field was refused, with that field empty: a wrong PIN
  // to the PIN step, an unknown order to the order step, a wrong code to the keypad.
  const REFUSED_FIELD = {
    "error.bad_courier_credentials": "pin",
    "error.order_not_found": "order",
    "error.ambiguous_order": "order",
    "error.invalid_transition": "order",
    "error.dropoff_empty": "pin",
  };
  const STEP_OF_FIELD = { pin: "courier-pin", order: "courier-order", code: "pickup" };
  // A PIN shorter than any the service takes (the keypad's data-min, as the drop-off's schema)
  // is not sent: it could only come back as "input not understood".
  const PIN_MIN = Number(document.querySelector('.keypad[data-target="pin"]').dataset.min || 1);
  // Refusals where nothing typed was wrong (the locker or its service out of reach, no answer in
  // time): back to the last step with everything kept, so one touch sends it again.
  const NOTHING_TYPED_WRONG = new Set([
    "error.network",
    "error.http_503",
    "error.http_504",
    "error.kiosk_unreachable",
    "error.kiosk_link_down",
    "error.kiosk_link_error",
    "error.unavailable",
    "error.kiosk_command_timeout",
    "error.no_answer_in_time",
    "error.dropoff_unconfirmed",
    "error.order_changed",
  ]);

  const NO_RETRY = new Set(["error.food_too_old"]);

  const state = { screen: "start", pin: "", code: "", retry: null, lastActivity: Date.now() };

  function t(key, values) {
    let text = catalogues[lang][key] || catalogues.en[key] || key;
    for (const [name, value] of Object.entries(values || {})) {
      text = text.replace("{" + name + "}", String(value));
    }
    return text;
  }

  function token() {
    return localStorage.getItem(TOKEN_KEY);
  }

  function takeTokenFromAddress() {
    const match = /(?:^#|&)token=([^&]+)/.exec(location.hash);
    if (match) {
      localStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
      history.replaceState(null, "", location.pathname + location.search);
    }
  }

  // ---- language -------------------------------------------------------------------------
  function applyLanguage() {
    document.documentElement.lang = lang;
    document.title = t("kiosk.title");
    for (const el of document.querySelectorAll("[data-t]")) el.textContent = t(el.dataset.t);
    for (const el of document.querySelectorAll("button.lang")) {
      el.setAttribute("aria-pressed", String(el.dataset.lang === lang));
    }
    document.querySelector(".lang-switch").setAttribute("aria-label", t("kiosk.language"));
    for (const pad of document.querySelectorAll(".keypad")) renderKeypadLabels(pad);
    if (state.screen === "opened" && state.opened) showOpened(state.opened.kind, state.opened.n);
    if (state.screen === "error" && state.error) showError(state.error);
    if (state.screen === "busy" && state.busyKey) document.getElementById("busy-text").textContent = t(state.busyKey);
    renderNotice();
  }

  // ---- screens --------------------------------------------------------------------------
  function show(name) {
    state.screen = name;
    for (const el of document.querySelectorAll(".screen")) el.hidden = el.id !== "screen-" + name;
    renderNotice();
    const screen = document.getElementById("screen-" + name);
    const focusable = screen.querySelector("input, .keypad button, button.primary");
    if (focusable && name !== "start") focusable.focus();
  }

  // Back to the start. `newPerson`: whoever used the screen has gone (idle, result shown long
  // enough, "Done"), so their language goes too; "Back" and "Start over" keep it.
  function home(newPerson) {
    state.pin = "";
    state.code = "";
    state.retry = null;
    state.opened = null;
    state.error = null;
    if (newPerson === true && lang !== defaultLang) {
      lang = defaultLang;
      applyLanguage();
    }
    for (const input of document.querySelectorAll("#kiosk input")) input.value = "";
    renderCodes();
    hideIdleWarning();
    show(token() ? "start" : "setup");
  }

  // ---- keypads --------------------------------------------------------------------------
  const KEYS = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "clear", "0", "delete"];

  function buildKeypad(pad) {
    for (const key of KEYS) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "key" + (key.length > 1 ? " key-fn" : "");
      button.dataset.key = key;
      if (key.length === 1) button.textContent = key;
      button.addEventListener("click", () => pressKey(pad, key));
      pad.appendChild(button);
    }
    renderKeypadLabels(pad);
  }

  function renderKeypadLabels(pad) {
    for (const button of pad.querySelectorAll(".key-fn")) {
      button.textContent = t("kiosk." + button.dataset.key);
    }
  }

  function pressKey(pad, key) {
    const target = pad.dataset.target; // "pin" or "code"
    const max = Number(pad.dataset.max);
    let value = state[target];
    if (key === "delete") value = value.slice(0, -1);
    else if (key === "clear") value = "";
    else if (value.length < max) value += key;
    state[target] = value;
    renderCodes();
  }

  function renderCodes() {
    document.getElementById("courier-pin-display").textContent = "•".repeat(state.pin.length);
    // Grouped 4 + 4 as in the message the purchaser received.
    const code = state.code;
    const shown = code.length > 4 ? code.slice(0, 4) + " " + code.slice(4) : code;
    document.getElementById("pickup-display").textContent = shown;
    document.getElementById("pickup-open").disabled = code.length !== 8;
    document.getElementById("courier-pin-next").disabled = state.pin.length < PIN_MIN;
  }

  function onPhysicalKey(event) {
    // A USB keypad or keyboard works on the keypad screens too.
    const pad = document.querySelector("#screen-" + state.screen + " .keypad");
    if (!pad) return;
    if (/^[0-9]$/.test(event.key)) pressKey(pad, event.key);
    else if (event.key === "Backspace") pressKey(pad, "delete");
    else if (event.key === "Enter") {
      const go = document.querySelector("#screen-" + state.screen + " button.primary");
      if (go && !go.disabled) go.click();
    } else return;
    event.preventDefault();
  }

  // ---- service calls --------------------------------------------------------------------
  class Refusal extends Error {
    constructor(key, detail, values) {
      super(key);
      this.key = key;
      this.detail = detail;
      this.values = values || {}; // what the text names: the compartment to look at
    }
  }

  async function call(method, path, body) {
    let response;
    try {
      response = await fetch("/api/v1" + path, {
        method,
        headers: { "Content-Type": "application/json", Authorization: "Bearer " + token() },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (err) {
      throw new Refusal("error.network", String(err));
    }
    let payload = null;
    try {
      payload = await response.json();
    } catch (err) {
      payload = null;
    }
    if (response.ok) return payload;
    const code = payload && typeof payload.error === "string" ? payload.error : "";
    let key = "error." + code;
    if (!code || !catalogues.en[key]) key = "error.http_" + response.status;
    if (!catalogues.en[key]) key = "error.generic";
    const values = {};
    if (payload && Number.isInteger(payload.compartment)) values.n = payload.compartment;
    if (payload && typeof payload.kiosk === "string") values.kiosk = payload.kiosk;
    const refusal = new Refusal(key, payload && payload.message, values);
    refusal.status = response.status;
    throw refusal;
  }

  function compartmentOf(answer) {
    if (!answer) return "?";
    const c = answer.compartment;
    if (c && typeof c === "object") return c.number ?? c.n ?? "?";
    return answer.compartment_number ?? c ?? answer.number ?? "?";
  }

  async function attempt(busyKey, kind, action) {
    state.courierDoor = null; // someone is using the screen now: not interrupted for it
    state.busyKey = busyKey;
    document.getElementById("busy-text").textContent = t(busyKey);
    state.busySince = Date.now();
    show("busy");
    try {
      const answer = await action();
      state.pin = "";
      state.code = "";
      renderCodes();
      showOpened(kind, compartmentOf(answer));
    } catch (err) {
      if (err.status === 401) localStorage.removeItem(TOKEN_KEY);
      showError(err instanceof Refusal ? err : new Refusal("error.generic", String(err)));
    }
  }

  function showOpened(kind, n) {
    state.opened = { kind, n };
    // The door he was given, kept past this screen: shut on nothing later (he has up to the
    // drop-off's door time, the screen goes home after a few seconds), he is still told.
    state.courierDoor =
      kind === "courier"
        ? {
            n,
            lang,
            courier: document.getElementById("courier-id").value,
            order: document.getElementById("courier-order").value,
          }
        : null;
    document.getElementById("opened-number").textContent = String(n);
    document.getElementById("opened-title").textContent = t(kind + ".opened_title", { n });
    document.getElementById("opened-hint").textContent = t(kind + ".opened_hint");
    show("opened");
    state.resultUntil = Date.now() + resultS * 1000;
  }

  function showError(refusal) {
    state.error = refusal;
    document.getElementById("error-text").textContent = t(refusal.key, refusal.values);
    document.getElementById("error-text").title = refusal.detail || "";
    // Nothing to try again: the food goes back to the merchant (ADR 0124).
    document.getElementById("error-retry").hidden = !state.retry || NO_RETRY.has(refusal.key);
    show("error");
  }

  function dropOff() {
    const body = {
      courier_code: document.getElementById("courier-id").value.trim(),
      pin: state.pin,
      order_ref: document.getElementById("courier-order").value.trim(),
    };
    state.retry = "dropoff";
    attempt("kiosk.busy", "courier", () => call("POST", "/kiosk/dropoff", body));
  }

  function pickUp() {
    const code = state.code;
    state.retry = "pickup";
    attempt("kiosk.busy_pickup", "pickup", () => call("POST", "/kiosk/pickup", { code }));
  }

  function retry() {
    const key = state.error ? state.error.key : "";
    let field = null;
    let step = null;
    if (state.retry === "dropoff") {
      field = REFUSED_FIELD[key] || null;
      step = field ? STEP_OF_FIELD[field] : "courier-order";
    } else if (state.retry === "pickup") {
      field = NOTHING_TYPED_WRONG.has(key) ? null : "code";
      step = "pickup";
    }
    if (!step) {
      home();
      return;
    }
    if (field === "pin") state.pin = "";
    if (field === "code") state.code = "";
    if (field === "order") document.getElementById("courier-order").value = "";
    state.error = null;
    renderCodes();
    show(step);
  }

  // What the start screen says before anyone touches it: openings paused, or the locker bank
  // unreachable, so nobody types a code that cannot work.
  function renderNotice() {
    const notice = document.getElementById("kiosk-notice");
    const me = state.me;
    const key = !me ? null : me.kill_switch_engaged ? "kiosk.paused" : !me.online ? "kiosk.offline" : null;
    // On the start screen only: laid over the bottom edge, it would cover a step's buttons at
    // 768 px, and a refusal on those steps says the same.
    notice.hidden = !key || state.screen !== "start";
    notice.textContent = key ? t(key) : "";
  }

  async function loadKiosk() {
    if (!token()) return;
    try {
      const me = await call("GET", "/kiosk/me");
      state.me = me;
      renderNotice();
      const site = me.site_name || (me.site && me.site.name) || "";
      const name = me.name || me.code || "";
      document.getElementById("kiosk-label").textContent = [site, name].filter(Boolean).join(" · ");
    } catch (err) {
      if (err.status === 401) {
        localStorage.removeItem(TOKEN_KEY);
        home();
      }
    }
  }

  // ---- the scanner ---------------------------------------------------------------------
  // A QR code held under the scanner goes to the service over the kiosk's link, not through
  // this page; the service tells this screen the outcome so the person is told what happened.
  let scannerStream = null;

  function followScanner() {
    if (scannerStream) scannerStream.stop();
    if (!token()) return;
    scannerStream = LockerSSE.follow("/api/v1/kiosk/stream", token, {
      onEvent: (event, data) => {
        if (event === "dropoff") {
          courierShutNothing(data);
          return;
        }
        if (event !== "pickup" || state.screen === "setup") return;
        touched();
        state.retry = null;
        if (data.ok) {
          showOpened("pickup", data.compartment);
        } else {
          const key = "error." + data.error;
          showError(new Refusal(catalogues.en[key] ? key : "error.invalid_code", data.message));
        }
      },
      onRefused: () => {
        localStorage.removeItem(TOKEN_KEY);
        home();
      },
    });
  }

  // The courier shut the door he was given on nothing: he is told while still at the screen,
  // not left reading "put the food in" until it times out. Once his result screen has gone
  // back to the start he is told too, unless someone else is using the screen by then: his
  // language, courier ID and order come back, so Try again asks only for his PIN.
  function courierShutNothing(data) {
    if (data.outcome !== "empty") return;
    const door = state.courierDoor;
    if (!door || Number(door.n) !== Number(data.compartment)) return;
    if (state.screen === "start") {
      if (lang !== door.lang) {
        lang = door.lang;
        applyLanguage();
      }
      document.getElementById("courier-id").value = door.courier;
      document.getElementById("courier-order").value = door.order;
    } else if (state.screen !== "opened") {
      return;
    }
    state.courierDoor = null;
    touched();
    state.retry = "dropoff";
    showError(new Refusal("error.dropoff_empty", data.message, { n: data.compartment }));
  }

  // ---- inactivity -----------------------------------------------------------------------
  function hideIdleWarning() {
    document.getElementById("idle-warning").hidden = true;
  }

  function tickIdle() {
    const now = Date.now();
    if (state.screen === "opened" && state.resultUntil && now >= state.resultUntil) {
      home(true);
      return;
    }
    const left = idleS - (now - state.lastActivity) / 1000;
    if (state.screen === "start" || state.screen === "setup" || state.screen === "busy") {
      hideIdleWarning();
      // Someone chose a language and walked away without starting: the next person gets the
      // kiosk's own language back.
      if (state.screen === "start" && left <= 0 && lang !== defaultLang) home(true);
      return;
    }
    const warning = document.getElementById("idle-warning");
    if (left <= 0) {
      home(true);
    } else if (left <= Math.min(IDLE_WARNING_S, idleS / 2)) {
      warning.textContent = t("kiosk.idle_warning", { s: Math.ceil(left) });
      warning.hidden = false;
    } else {
      warning.hidden = true;
    }
  }

  function touched() {
    state.lastActivity = Date.now();
    hideIdleWarning();
  }

  // ---- wiring ---------------------------------------------------------------------------
  function wire() {
    for (const pad of document.querySelectorAll(".keypad")) buildKeypad(pad);
    for (const button of document.querySelectorAll("button.lang")) {
      button.addEventListener("click", () => {
        lang = button.dataset.lang;
        applyLanguage();
      });
    }
    for (const button of document.querySelectorAll("[data-action=home]")) {
      button.addEventListener("click", () => home(button.dataset.newPerson === "true"));
    }
    for (const button of document.querySelectorAll("[data-action=back]")) {
      button.addEventListener("click", () => show(button.dataset.to));
    }
    document.getElementById("go-collect").addEventListener("click", () => show("pickup"));
    document.getElementById("go-deliver").addEventListener("click", () => show("courier-id"));
    document.querySelector("#screen-courier-id form").addEventListener("submit", (event) => {
      event.preventDefault();
      show("courier-pin");
    });
    document.getElementById("courier-pin-next").addEventListener("click", () => show("courier-order"));
    document.getElementById("courier-order-form").addEventListener("submit", (event) => {
      event.preventDefault();
      dropOff();
    });
    document.getElementById("pickup-open").addEventListener("click", pickUp);
    document.getElementById("error-retry").addEventListener("click", retry);
    document.getElementById("setup-form").addEventListener("submit", (event) => {
      event.preventDefault();
      localStorage.setItem(TOKEN_KEY, document.getElementById("setup-token").value.trim());
      home();
      loadKiosk();
      followScanner();
    });
    for (const kind of ["pointerdown", "keydown", "input"]) {
      document.addEventListener(kind, touched, { capture: true, passive: true });
    }
    document.addEventListener("keydown", onPhysicalKey);
    setInterval(tickIdle, 250);
    setInterval(loadKiosk, KIOSK_REFRESH_MS);
  }

  // ---- the kiosk cut off ---------------------------------------------------------------
  // The bridge on this PC serves its own screen for pickups while the kiosk cannot reach the
  // service (docs/adr/0077). Asked every few seconds; once it says offline, this page hands over
  // to it, and it comes back here when the service is reachable again. Not while a door this
  // screen opened is open, or an answer is awaited: the courier or purchaser in front of it
  // reads "compartment 3 is open, put the food in" (true: the board opened it, and the bridge
  // reports its closing once back), not "deliveries are paused"; the handover waits for Done,
  // or for the result's time to run out. An answer that never comes (the link went mid-request,
  // and a fetch has no deadline of its own) holds it back for BUSY_HANDOVER_MS at most.
  const OFFLINE_CHECK_MS = 3000;
  const BUSY_HANDOVER_MS = 30000;

  function showsItsDoor() {
    if (state.screen === "opened") return true;
    return state.screen === "busy" && Date.now() - state.busySince < BUSY_HANDOVER_MS;
  }

  async function checkOffline() {
    const origin = root.dataset.offlineScreen;
    if (!origin || state.screen === "setup") return;
    try {
      const answer = await fetch(origin + "/state", { cache: "no-store" });
      if (!(await answer.json()).offline) return;
    } catch (err) {
      return; // no bridge screen on this PC, or it is restarting
    }
    if (showsItsDoor()) return; // as it is now, after the answer came
    const here = location.origin + location.pathname + location.search;
    location.replace(`${origin}/?lang=${encodeURIComponent(lang)}&back=${encodeURIComponent(here)}`);
  }

  takeTokenFromAddress();
  wire();
  setInterval(checkOffline, OFFLINE_CHECK_MS);
  applyLanguage();
  home();
  loadKiosk();
  followScanner();
})();
