// Purchaser page: reload when the order's status changes (disinfecting -> ready -> collected).
//
// The page itself is rendered on the server, so it reads the same without this script; the
// script only asks the status API now and then and reloads when something a purchaser would
// notice has changed. A phone in a pocket does not need faster than every 15 seconds.
"use strict";

(function () {
  const POLL_MS = 15000;
  const root = document.getElementById("purchaser");
  if (!root || !root.dataset.statusUrl) return;
  const shownState = root.dataset.state;
  const shownMinutes = root.dataset.minutesLeft;

  async function check() {
    try {
      const response = await fetch(root.dataset.statusUrl, { cache: "no-store" });
      if (!response.ok) return;
      const status = await response.json();
      const minutes = status.minutes_left === null || status.minutes_left === undefined ? "" : String(status.minutes_left);
      if (status.state !== shownState || minutes !== shownMinutes) location.reload();
    } catch (err) {
      // offline for a moment: the next round tries again
    }
  }

  const final = ["picked_up", "expired", "cancelled", "failed"];
  if (!final.includes(shownState)) setInterval(check, POLL_MS);
})();
