// Server-Sent Events over fetch(), shared by the dashboard, the fleet view and the kiosk screen,
// and what their live updates share: rewriting an element in place (`takeAttributes`).
//
// EventSource cannot send an Authorization header, and a token in the URL would end up in
// access logs, so the stream is read with fetch() and parsed here. `follow()` reconnects with
// a growing delay (1 s doubling to 15 s) until `stop()` is called or the token is refused.
"use strict";

window.LockerSSE = (function () {
  const RECONNECT_MIN_MS = 1000;
  const RECONNECT_MAX_MS = 15000;

  async function read(body, onEvent) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let event = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) event = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
        }
        if (!data.length) continue;
        try {
          onEvent(event, JSON.parse(data.join("\n")));
        } catch (err) {
          console.warn("bad stream event", event, err);
        }
      }
    }
  }

  // follow(url, token(), {onEvent, onDown, onRefused}) -> {stop()}
  function follow(url, token, handlers) {
    let stopped = false;
    let abort = null;
    (async () => {
      let delay = RECONNECT_MIN_MS;
      while (!stopped) {
        abort = new AbortController();
        try {
          const response = await fetch(url, {
            headers: { Authorization: "Bearer " + token(), Accept: "text/event-stream" },
            signal: abort.signal,
            cache: "no-store",
          });
          if (response.status === 401) {
            if (handlers.onRefused) handlers.onRefused();
            return;
          }
          if (!response.ok || !response.body) throw new Error("stream answered " + response.status);
          delay = RECONNECT_MIN_MS;
          await read(response.body, handlers.onEvent);
        } catch (err) {
          if (stopped) return;
        }
        if (handlers.onDown) handlers.onDown();
        await new Promise((resolve) => setTimeout(resolve, delay));
        delay = Math.min(RECONNECT_MAX_MS, delay * 2);
      }
    })();
    return {
      stop() {
        stopped = true;
        if (abort) abort.abort();
      },
    };
  }

  // A live update rewrites an element in place, never replaces it: a click pressed on the old
  // element and released on its replacement is no click at all. This gives `target` the
  // attributes of `source`, a freshly rendered copy; the caller moves the contents over.
  function takeAttributes(target, source) {
    for (const name of target.getAttributeNames()) {
      if (!source.hasAttribute(name)) target.removeAttribute(name);
    }
    for (const name of source.getAttributeNames()) {
      target.setAttribute(name, source.getAttribute(name));
    }
  }

  return { follow, takeAttributes };
})();
