// Purchaser page: keep "minutes left" moving and reload when the order's status changes.
//
// The page is rendered on the server and reads the same without this script; the script only
// counts the disinfection minutes down and asks the status API now and then, reloading when
// the state changes (disinfecting -> ready -> collected). A phone in a pocket needs no faster
// than every 15 seconds.
"use strict";

(function () {
  const POLL_MS = 15000;
  const FINAL = ["picked_up", "expired", "cancelled", "failed"];
  const root = document.getElementById("purchaser");
  if (!root || !root.dataset.statusUrl) return;
  const shownState = root.dataset.state;

  function countDown() {
    const endsAt = Date.parse(root.dataset.cycleEndsAt || "");
    const line = document.getElementById("minutes-left");
    if (!line || isNaN(endsAt)) return;
    const minutes = Math.max(1, Math.ceil((endsAt - Date.now()) / 60000));
    line.textContent = root.dataset.minutesTemplate.replace("{m}", String(minutes));
  }

  async function check() {
    try {
      const response = await fetch(root.dataset.statusUrl, { cache: "no-store" });
      if (!response.ok) return;
      const status = await response.json();
      // A fault or the kiosk going offline changes what the page must say without changing
      // the order's state: the server decides the words, so reload on those too.
      const fault = status.fault ? "yes" : "no";
      const online = status.kiosk_online === false ? "no" : "yes";
      if (
        status.state !== shownState ||
        fault !== root.dataset.fault ||
        online !== root.dataset.online
      ) {
        location.reload();
      }
    } catch (err) {
      // offline for a moment: the next round tries again
    }
  }

  if (FINAL.includes(shownState)) return;
  setInterval(() => {
    countDown();
    check();
  }, POLL_MS);
})();
