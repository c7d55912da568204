// Demo panel: play the physical side of the simulated kiosk from the browser.
//
// It talks straight to the simulator's control API (`lockerctl sim`, CORS enabled): what a
// courier's or purchaser's hands do (doors, food, the scanner), the lobby, and the faults an
// operator should see. The kiosk's touch screen sits beside it in a frame, so one browser
// plays the whole story. The panel polls the simulator's physical truth once a second: it is
// a local demo aid, unlike the dashboard, which is live through the service's stream.
"use strict";

(function () {
  // Twice a second: a released latch springs back after 60 simulated seconds, which is under a
  // second of wall time at the fast time scales demos and tests use.
  const POLL_MS = 500;
  const root = document.getElementById("demo");
  const SIM = root.dataset.simUrl;
  const $ = (id) => document.getElementById(id);

  // Every control the panel uses, in one place: [method, path, body].
  const ROUTES = {
    truth: () => ["GET", "/truth"],
    openDoor: (n, force) => ["POST", `/compartments/${n}/door/open`, { force }],
    closeDoor: (n) => ["POST", `/compartments/${n}/door/close`],
    placeItem: (n) => ["POST", `/compartments/${n}/item`, { mass_g: 450, temp_c: 70 }],
    removeItem: (n) => ["DELETE", `/compartments/${n}/item`],
    sensor: (n, mode) => ["PUT", `/faults/compartments/${n}`, { sensor: mode || null }],
    deadHeater: (n, on) => ["PUT", `/faults/compartments/${n}`, { dead_heater: on }],
    jamLock: (n, on) => ["PUT", `/faults/compartments/${n}`, { jammed_lock: on }],
    scan: (text) => ["POST", "/scanner/scan", { text }],
    lobby: (temp_c) => ["PUT", "/lobby", { temp_c }],
    reboot: () => ["POST", "/faults/reboot"],
    pullCable: (seconds) => ["POST", "/faults/cable", { seconds, device: "board" }],
    lineErrors: (rate) => ["PUT", "/faults/line", { error_rate: rate }],
  };

  function log(text) {
    const line = `${new Date().toLocaleTimeString()}  ${text}\n`;
    const box = $("demo-log");
    box.textContent = (line + box.textContent).slice(0, 8000);
  }

  async function sim(route, ...args) {
    const [method, path, body] = ROUTES[route](...args);
    const response = await fetch(SIM + path, {
      method,
      headers: body === undefined ? {} : { "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let payload = null;
    try {
      payload = await response.json();
    } catch (err) {
      payload = null;
    }
    if (!response.ok) {
      const why = payload && (payload.message || payload.detail || payload.error);
      throw new Error(typeof why === "string" ? why : `simulator answered ${response.status}`);
    }
    return payload;
  }

  async function control(label, route, ...args) {
    try {
      await sim(route, ...args);
      log(label);
    } catch (err) {
      log(`${label}: refused: ${err.message}`);
    }
    refresh();
  }

  function button(text, onClick, cls) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = text;
    if (cls) b.className = cls;
    b.addEventListener("click", onClick);
    return b;
  }

  function fmt(value, digits, unit) {
    return value === null || value === undefined ? "—" : Number(value).toFixed(digits) + unit;
  }

  function renderCompartment(c) {
    const card = document.createElement("article");
    card.className = "sim-cell" + (c.door_open ? " door-open" : "");
    card.dataset.number = c.number;
    const head = document.createElement("h3");
    head.textContent = `#${c.number}`;
    const doorState = document.createElement("span");
    doorState.className = "badge";
    doorState.dataset.field = "door";
    doorState.textContent = c.door_open ? "door open" : c.lock_released ? "unlocked" : "locked";
    head.append(doorState);
    const facts = document.createElement("div");
    facts.className = "small";
    facts.textContent = [
      `air ${fmt(c.air_temp_c, 1, " °C")}`,
      c.occupied ? `food ${fmt(c.food_temp_c, 1, " °C")} (${Math.round(c.item_mass_g)} g)` : "empty",
      `heater ${fmt(c.heater_w, 0, " W")}`,
      c.setpoint_c === null || c.setpoint_c === undefined ? "no setpoint" : `setpoint ${fmt(c.setpoint_c, 1, " °C")}`,
      c.uv_on ? "UV-C ON" : null,
      c.disinfecting ? `cycle ${Math.ceil(c.disinfect_remaining_s)} s left` : null,
      c.fault && !["NONE", "OK"].includes(c.fault) ? `fault ${c.fault}` : null,
    ].filter(Boolean).join(" · ");
    const buttons = document.createElement("div");
    buttons.className = "buttons";
    const n = c.number;
    if (c.door_open) {
      buttons.append(button("Close door", () => control(`#${n} door closed`, "closeDoor", n)));
      if (c.occupied) buttons.append(button("Take food out", () => control(`#${n} food taken out`, "removeItem", n)));
      else buttons.append(button("Put food in", () => control(`#${n} food put in`, "placeItem", n), "primary"));
    } else {
      buttons.append(button("Open door", () => control(`#${n} door opened`, "openDoor", n, false)));
      buttons.append(button("Force open", () => control(`#${n} door forced open`, "openDoor", n, true), "danger"));
    }
    const sensor = document.createElement("select");
    sensor.setAttribute("aria-label", `Temperature sensor of compartment ${n}`);
    for (const [value, text] of [["", "sensor ok"], ["open", "sensor open"], ["short", "sensor short"]]) {
      const option = document.createElement("option");
      option.value = value;
      option.textContent = text;
      option.selected = (c.sensor_fault || "") === value;
      sensor.append(option);
    }
    sensor.addEventListener("change", () => control(`#${n} sensor ${sensor.value || "repaired"}`, "sensor", n, sensor.value));
    buttons.append(sensor);
    buttons.append(button(c.dead_heater ? "Repair heater" : "Kill heater",
      () => control(`#${n} heater ${c.dead_heater ? "repaired" : "dead"}`, "deadHeater", n, !c.dead_heater)));
    buttons.append(button(c.jammed_lock ? "Free lock" : "Jam lock",
      () => control(`#${n} lock ${c.jammed_lock ? "freed" : "jammed"}`, "jamLock", n, !c.jammed_lock)));
    card.append(head, facts, buttons);
    return card;
  }

  // A spring-loaded door swings open when its latch releases, as on most locker banks; with
  // this off, the visitor pulls each door open by hand ("Open door").
  const opening = new Set();

  function springDoors(truth) {
    if (!$("spring-doors").checked) return;
    for (const c of truth.compartments) {
      if (c.lock_released && !c.door_open && !opening.has(c.number)) {
        opening.add(c.number);
        control(`#${c.number} door swung open`, "openDoor", c.number, false).finally(() =>
          opening.delete(c.number)
        );
      }
    }
  }

  let lastKey = "";
  let lobbyShown = false;

  async function refresh() {
    let truth;
    try {
      truth = await sim("truth");
    } catch (err) {
      $("sim-conn").textContent = `simulator: unreachable at ${SIM} (${err.message})`;
      return;
    }
    $("sim-conn").textContent = `simulator: ${truth.name}, ×${truth.time_scale}`;
    springDoors(truth);
    if (!lobbyShown) {
      $("lobby-temp").value = truth.lobby_temp_c;
      lobbyShown = true;
    }
    const pulled = Object.entries(truth.cable_pulled_s || {}).map(([d, s]) => `${d} cable back in ${Math.ceil(s)} s`);
    $("sim-facts").textContent = [
      `lobby ${fmt(truth.lobby_temp_c, 1, " °C")}`,
      `boot id ${truth.boot_id}${truth.booting ? " (booting)" : ""}`,
      truth.heater_lease_expired ? "HEATER LEASE EXPIRED" : null,
      `frames ${truth.requests}, duplicates ${truth.duplicates}, errors ${truth.errors}`,
      ...pulled,
    ].filter(Boolean).join(" · ");
    // Re-render only when something changed, so a click never lands on a replaced button.
    const key = JSON.stringify(truth.compartments.map((c) => [c.number, c.door_open, c.lock_released, c.occupied,
      Math.round(c.air_temp_c * 10), Math.round(c.food_temp_c * 10), Math.round(c.heater_w), c.setpoint_c, c.uv_on,
      Math.ceil(c.disinfect_remaining_s), c.fault, c.sensor_fault, c.dead_heater, c.jammed_lock]));
    if (key !== lastKey) {
      lastKey = key;
      $("sim-grid").replaceChildren(...truth.compartments.map(renderCompartment));
    }
  }

  $("scan-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("scan-text").value.trim();
    if (text) control(`scanned "${text.slice(0, 24)}${text.length > 24 ? "…" : ""}"`, "scan", text);
  });
  $("lobby-form").addEventListener("submit", (event) => {
    event.preventDefault();
    control(`lobby set to ${$("lobby-temp").value} °C`, "lobby", Number($("lobby-temp").value));
  });
  $("cable-form").addEventListener("submit", (event) => {
    event.preventDefault();
    control(`board cable pulled for ${$("cable-s").value} s`, "pullCable", Number($("cable-s").value));
  });
  $("errors-form").addEventListener("submit", (event) => {
    event.preventDefault();
    control(`line error rate ${$("errors-rate").value}`, "lineErrors", Number($("errors-rate").value));
  });
  $("reboot").addEventListener("click", () => control("board rebooted", "reboot"));

  refresh();
  setInterval(refresh, POLL_MS);
})();
