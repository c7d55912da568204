// The kiosk screen while the locker is cut off from its service (docs/adr/0077): pickups by QR
// code at the scanner or by a typed code, decided by the bridge on this PC. Follows /state and
// /outcomes; goes back to the service's screen (?back=) once the locker is online again.
"use strict";
(function () {
  const POLL_MS = 1000;
  const RESULT_MS = 20000; // a result stays this long, then the next person's screen
  const LANG_KEY = "locker.offline.lang";
  const WORDS = {
    en: {
      title: "Food locker",
      offline: "Offline",
      collect: "Collect your food",
      collect_hint: "Scan your QR code at the scanner, or type your 8-digit code.",
      open: "Open",
      delete: "Delete",
      done: "Done",
      no_codes: "Typed codes cannot be checked right now. Please scan your QR code.",
      deliveries_paused:
        "Deliveries are paused while the locker is offline. Couriers: please try again later.",
      opening: "Opening compartment {n}…",
      opened: "Compartment {n} is open",
      opened_hint: "Take your food and close the door. Enjoy your meal!",
      refused: "Sorry",
      "error.invalid_code":
        "This code does not open anything here while the locker is offline. Please check it, or try again once the locker is back online.",
      "error.code_used": "This code has already been used.",
      "error.code_expired": "This order can no longer be collected here. Please contact the restaurant.",
      "error.locked_out": "Too many wrong attempts. Please wait {s} seconds and try again.",
      "error.kill_switch_engaged": "Openings are paused at this site. Please ask the staff.",
      "error.offline_codes_unavailable":
        "Typed codes cannot be checked right now. Please scan your QR code.",
      "error.kiosk_unreachable": "The compartment could not be opened. Please try again, or ask the staff.",
      "error.offline_clock_unreliable":
        "The locker cannot check the time while it is offline. Please ask the staff, or try again once it is back online.",
      "error.unlock_unconfirmed":
        "Compartment {n} may have opened: please check its door. If it is still shut, ask the staff.",
      "error.opened_since_offline":
        "This compartment has been opened since your order was last confirmed here, so it cannot be opened while the locker is offline. Please ask the staff.",
      "error.compartment_fault":
        "A fault was reported in this compartment: the food cannot be collected now. Staff will contact you.",
      "error.malformed_code": "The pickup code has 8 digits. Please check it and try again.",
      "error.service_reachable": "The locker is online again. One moment…",
      "error.generic": "Something went wrong. Please try again.",
    },
    "zh-Hans": {
      title: "取餐柜",
      offline: "离线",
      collect: "取餐",
      collect_hint: "请在扫码器上扫描您的二维码，或输入 8 位取餐码。",
      open: "开柜",
      delete: "删除",
      done: "完成",
      no_codes: "暂时无法核验手动输入的取餐码，请扫描您的二维码。",
      deliveries_paused: "取餐柜离线期间暂停投递。骑手请稍后再试。",
      opening: "正在打开 {n} 号柜格…",
      opened: "{n} 号柜格已打开",
      opened_hint: "请取走餐品并关好柜门。祝您用餐愉快！",
      refused: "抱歉",
      "error.invalid_code": "取餐柜离线期间，此取餐码在这里无法开柜。请检查取餐码，或在取餐柜恢复在线后重试。",
      "error.code_used": "此取餐码已被使用。",
      "error.code_expired": "此订单已无法在这里领取，请联系餐厅。",
      "error.locked_out": "错误次数过多，请等待 {s} 秒后再试。",
      "error.kill_switch_engaged": "本站点已暂停开柜，请联系工作人员。",
      "error.offline_codes_unavailable": "暂时无法核验手动输入的取餐码，请扫描您的二维码。",
      "error.kiosk_unreachable": "柜格未能打开，请重试或联系工作人员。",
      "error.offline_clock_unreliable": "取餐柜离线期间无法核对时间。请联系工作人员，或在取餐柜恢复在线后重试。",
      "error.unlock_unconfirmed": "{n} 号柜格可能已打开，请查看柜门。如果柜门仍关着，请联系工作人员。",
      "error.opened_since_offline": "自您的订单上次确认以来，此柜格已被打开过，取餐柜离线时无法开柜。请联系工作人员。",
      "error.compartment_fault": "该柜格报告了故障，餐品暂时无法取出。工作人员会与您联系。",
      "error.malformed_code": "取餐码为 8 位数字，请检查后重试。",
      "error.service_reachable": "取餐柜已恢复在线，请稍候…",
      "error.generic": "出现问题，请重试。",
    },
  };
  const params = new URLSearchParams(location.search);
  const asked = /^https?:\/\//.test(params.get("back") || "") ? new URL(params.get("back")) : null;
  let lang = params.get("lang") || localStorage.getItem(LANG_KEY) || "en";
  if (!WORDS[lang]) lang = "en";
  let code = "";
  let seen = 0; // the last outcome shown
  let onlineFor = 0; // polls in a row that found the locker online
  let resultTimer = null;

  function t(key, values) {
    let text = WORDS[lang][key] || WORDS.en[key] || WORDS[lang]["error.generic"];
    for (const [name, value] of Object.entries(values || {})) text = text.replace(`{${name}}`, value);
    return text;
  }

  function applyLanguage() {
    document.documentElement.lang = lang;
    document.title = t("title");
    document.querySelectorAll("[data-t]").forEach((el) => (el.textContent = t(el.dataset.t)));
    document.querySelectorAll(".lang").forEach((b) => b.setAttribute("aria-pressed", String(b.dataset.lang === lang)));
    document.getElementById("key-delete").setAttribute("aria-label", t("delete"));
  }

  function renderCode() {
    document.getElementById("code-display").textContent = code.replace(/(\d{4})(?=\d)/, "$1 ");
    document.getElementById("open").disabled = code.length !== 8;
  }

  function buildKeypad() {
    const pad = document.getElementById("keypad");
    for (const key of ["1", "2", "3", "4", "5", "6", "7", "8", "9", "", "0", "⌫"]) {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = key;
      if (!key) b.hidden = true;
      if (key === "⌫") b.id = "key-delete";
      b.addEventListener("click", () => press(key));
      pad.appendChild(b);
    }
  }

  function press(key) {
    if (key === "⌫") code = code.slice(0, -1);
    else if (/\d/.test(key) && code.length < 8) code += key;
    renderCode();
  }

  function showResult(ok, title, hint, number) {
    const result = document.getElementById("result");
    document.getElementById("collect").hidden = true;
    result.hidden = false;
    result.classList.toggle("refused", !ok);
    document.getElementById("result-number").textContent = number || "";
    document.getElementById("result-title").textContent = title;
    document.getElementById("result-hint").textContent = hint;
    clearTimeout(resultTimer);
    resultTimer = setTimeout(reset, RESULT_MS);
  }

  function showOutcome(o) {
    if (o.ok) showResult(true, t("opened", { n: o.compartment }), t("opened_hint"), o.compartment);
    else showRefusal(o);
  }

  function showRefusal(answer) {
    const s = Math.ceil(answer.retry_after_s || 0);
    showResult(false, t("refused"), t("error." + answer.error, { s: s, n: answer.compartment }), "");
  }

  function reset() {
    code = "";
    renderCode();
    document.getElementById("result").hidden = true;
    document.getElementById("collect").hidden = false;
  }

  async function openWithCode() {
    const typed = code;
    code = "";
    renderCode();
    let response;
    try {
      response = await fetch("/pickup", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ code: typed }),
      });
    } catch (err) {
      showRefusal({ error: "generic" });
      return;
    }
    const answer = await response.json().catch(() => ({ error: "generic" }));
    if (typeof answer.outcome === "number") seen = Math.max(seen, answer.outcome);
    if (response.ok) showResult(true, t("opening", { n: answer.compartment }), "", answer.compartment);
    else showRefusal(answer);
  }

  async function poll() {
    try {
      const state = await (await fetch("/state", { cache: "no-store" })).json();
      onlineFor = state.offline ? 0 : onlineFor + 1;
      // Back to the service's screen, and only to it (the bridge says which it is).
      if (onlineFor >= 2 && asked && asked.origin === state.service) {
        location.replace(asked.href);
        return;
      }
      document.getElementById("typed").hidden = !state.codes;
      document.getElementById("no-codes").hidden = state.codes;
      if (state.outcome > seen) {
        const { outcomes } = await (await fetch(`/outcomes?after=${seen}`, { cache: "no-store" })).json();
        for (const o of outcomes) {
          seen = Math.max(seen, o.seq);
          showOutcome(o);
        }
      }
    } catch (err) {
      // The bridge restarting: the next poll tries again.
    }
    setTimeout(poll, POLL_MS);
  }

  document.addEventListener("DOMContentLoaded", async () => {
    buildKeypad();
    applyLanguage();
    renderCode();
    document.querySelectorAll(".lang").forEach((b) =>
      b.addEventListener("click", () => {
        lang = b.dataset.lang;
        localStorage.setItem(LANG_KEY, lang);
        applyLanguage();
      }),
    );
    document.getElementById("open").addEventListener("click", openWithCode);
    document.getElementById("done").addEventListener("click", reset);
    document.addEventListener("keydown", (e) => {
      if (/^\d$/.test(e.key)) press(e.key);
      else if (e.key === "Backspace") press("⌫");
      else if (e.key === "Enter" && code.length === 8) openWithCode();
    });
    // Outcomes from before this page was opened are not this person's.
    try {
      seen = (await (await fetch("/state", { cache: "no-store" })).json()).outcome;
    } catch (err) {
      seen = 0;
    }
    poll();
  });
})();
