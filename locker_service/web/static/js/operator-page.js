// What the dashboard's record pages share (the openings audit, the HACCP records): the operator
// token this tab keeps (sessionStorage, the dashboard's key: one sign-in for every page), the
// sign-in form, API requests with the token in the Authorization header, and a file fetched so
// and handed to the browser (a plain link could not carry the header, and a token in a URL
// would end up in access logs).
"use strict";

window.LockerOperatorPage = (function () {
  const TOKEN_KEY = "locker.operatorToken";
  const $ = (id) => document.getElementById(id);

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message || code);
      this.status = status;
      this.code = code;
    }
  }

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    $("app").hidden = true;
    $("login").hidden = false;
    $("login-error").hidden = !message;
    $("login-error").textContent = message || "";
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

  function notice(id, text, kind) {
    const p = $(id);
    p.hidden = !text;
    p.textContent = text || "";
    p.className = "notice " + (kind || "");
  }

  async function save(path, name) {
    const response = await request(path);
    const url = URL.createObjectURL(await response.blob());
    const link = el("a", { href: url, download: name });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 0);
  }

  // Signs in (a token given as #token=... or typed in the form), reads the operator's sites
  // and hands them to `ready` with the page shown.
  function signIn(ready) {
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
      let sites;
      try {
        sites = await (await request("/operator/sites")).json();
      } catch (err) {
        if (err.status !== 401) signOut(`Sign-in failed: ${err.message}`);
        return;
      }
      $("login").hidden = true;
      $("app").hidden = false;
      ready(sites);
    }
    $("login-form").addEventListener("submit", (event) => {
      event.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, $("login-token").value.trim());
      start();
    });
    start();
  }

  return { $, el, notice, request, save, signIn };
})();
