// The HACCP page: a site's sealed days, whether their chain is intact, and a day or a range
// downloaded as PDF or CSV (sign-in, requests and the download: operator-page.js).
"use strict";

(function () {
  const { $, el, notice, request, save } = window.LockerOperatorPage;

  function ready(sites) {
    const select = $("haccp-site");
    select.replaceChildren(...sites.map((s) => el("option", { value: s.id }, `${s.name} (${s.code})`)));
    const wanted = new URLSearchParams(location.search).get("site");
    if (wanted && sites.some((s) => String(s.id) === wanted)) select.value = wanted;
    showDays();
  }

  async function showDays() {
    const body = $("haccp-rows");
    let listed;
    try {
      listed = await (await request(`/operator/sites/${$("haccp-site").value}/haccp`)).json();
    } catch (err) {
      notice("haccp-notice", err.message, "bad");
      return;
    }
    $("haccp-count").textContent = String(listed.days.length);
    body.replaceChildren(
      ...listed.days.map((d) =>
        el(
          "tr",
          {},
          el("td", {}, d.day),
          el("td", {}, String(d.lines)),
          el("td", {}, new Date(d.sealed_at).toLocaleString(undefined, { dateStyle: "short", timeStyle: "short" })),
          el("td", {}, d.seal.slice(0, 16) + "…"),
        ),
      ),
    );
    if (!listed.days.length) {
      body.append(el("tr", {}, el("td", { colspan: 4 }, "No day sealed yet: a day is sealed an hour after it ends.")));
      notice("haccp-chain", "", "");
      return;
    }
    if (listed.intact) notice("haccp-chain", "Chain intact: every seal matches its day and follows the day before.", "ok");
    else notice("haccp-chain", "Chain broken: " + listed.problems.join("; "), "bad");
    const newest = listed.days[0].day;
    if (!$("haccp-to").value) $("haccp-to").value = newest;
    if (!$("haccp-from").value) $("haccp-from").value = newest;
  }

  async function download(format) {
    const site = $("haccp-site").value;
    const from = $("haccp-from").value;
    const to = $("haccp-to").value || from;
    if (!from) {
      notice("haccp-notice", "Choose the first day.", "bad");
      return;
    }
    const query = new URLSearchParams({ from, to, format });
    const name = `haccp-${site}-${from}${to !== from ? "-to-" + to : ""}.${format}`;
    try {
      await save(`/operator/sites/${site}/haccp/export?` + query, name);
      notice("haccp-notice", "", "");
    } catch (err) {
      notice("haccp-notice", err.message, "bad");
    }
  }

  $("haccp-site").addEventListener("change", () => {
    $("haccp-from").value = "";
    $("haccp-to").value = "";
    showDays();
  });
  $("haccp-form").addEventListener("submit", (event) => {
    event.preventDefault();
    download("pdf");
  });
  $("haccp-csv").addEventListener("click", () => download("csv"));
  window.LockerOperatorPage.signIn(ready);
})();
