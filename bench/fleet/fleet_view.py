"""The fleet view over 10,000 kiosks x 12 compartments in PostgreSQL: first paint and a filter.

Seeds the fleet of the browser test (`tests/screens/fleet_seed.py`) into a fresh PostgreSQL
database, runs the service as a process and measures, each as a median of several rounds:

- the API: `GET /api/v1/operator/fleet` (first page, a search, the trouble filter) over HTTP,
  beside two bare SQL reads on the same database: the cheapest page (`kiosks ORDER BY name
  LIMIT 50`) and the one pass over all compartments (`GROUP BY kiosk_id`) that sorting by
  trouble cannot do without;
- the browser (Debian Chromium): first paint as the time from navigation to the first row
  visible (and the browser's own first contentful paint), beside the same page's rendered rows
  served as a static page of the same size; a search and the trouble filter from the key press
  to the new rows on screen (the typing pause is skipped: Enter submits at once).

Goals: first paint and a filter under 1 s.

    python bench/fleet/fleet_view.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from migrations import upgrade
from tests.locker_service.conftest import drop_pg_database, make_pg_database
from tests.screens.fleet_seed import KIOSKS, WARM, kiosk_code, seed_fleet
from tests.screens.support import CHROMIUM, CHROMIUM_ARGS, ServiceProcess, in_thread

FIRST_ROW = "#fleet-rows tr"


def ms(values: list[float]) -> str:
    return f"median {statistics.median(values) * 1000:7.1f} ms  (min {min(values) * 1000:.1f})"


def timed(action: Callable[[], Any], rounds: int) -> list[float]:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        action()
        samples.append(time.perf_counter() - start)
    return samples


async def bare_sql(database_url: str, rounds: int) -> dict[str, list[float]]:
    url = make_url(database_url)
    conn = await asyncpg.connect(
        host=url.host, port=url.port or 5432, user=url.username, database=url.database
    )
    reads = {
        "bare SQL: kiosks ORDER BY name LIMIT 50": (
            "SELECT k.id, k.code, k.name, s.name FROM kiosks k JOIN sites s ON s.id = k.site_id"
            " ORDER BY k.name LIMIT 50"
        ),
        "bare SQL: compartments GROUP BY kiosk_id": (
            "SELECT kiosk_id, count(*), count(*) FILTER (WHERE fault IS NOT NULL)"
            " FROM compartments GROUP BY kiosk_id"
        ),
    }
    out: dict[str, list[float]] = {}
    try:
        for name, sql in reads.items():
            await conn.fetch(sql)  # warm
            samples = []
            for _ in range(rounds):
                start = time.perf_counter()
                await conn.fetch(sql)
                samples.append(time.perf_counter() - start)
            out[name] = samples
    finally:
        await conn.close()
    return out


# Runs in the page: submit what `prepare` set up, resolve when the rows answer the new query.
FILTER_JS = """
async ([q, trouble]) => {
  const rows = document.getElementById('fleet-rows');
  const before = rows.dataset.query;
  document.getElementById('fleet-q').value = q;
  document.getElementById('fleet-trouble').checked = trouble;
  const start = performance.now();
  document.getElementById('fleet-form').requestSubmit();
  await new Promise((resolve) => {
    const done = () => rows.dataset.query !== before && !rows.hasAttribute('aria-busy');
    if (done()) return resolve();
    new MutationObserver((_, obs) => { if (done()) { obs.disconnect(); resolve(); } })
      .observe(rows, { attributes: true, childList: true });
  });
  await new Promise(requestAnimationFrame);  // painted, not only in the DOM
  return performance.now() - start;
}
"""


def browser_figures(service: ServiceProcess, token: str, rounds: int) -> dict[str, list[float]]:
    from playwright.sync_api import sync_playwright

    out: dict[str, list[float]] = {
        "first row visible": [],
        "first contentful paint": [],
        "baseline: same rows as a static page": [],
        "search one kiosk (Enter to rows)": [],
        "trouble only (click to rows)": [],
        "back to all (to rows)": [],
    }
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            static_html = ""
            for i in range(rounds + 1):  # the first round warms caches and is not counted
                context = browser.new_context(viewport={"width": 1366, "height": 900})
                page = context.new_page()
                page.goto(f"{service.url}/dashboard/fleet#token={token}")
                page.locator(FIRST_ROW).first.wait_for(state="visible")
                first_row = page.evaluate("performance.now()") / 1000
                fcp = page.evaluate(
                    "(performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime"
                )
                if i == 0:
                    # The rendered page without its scripts: what a server-side table of the
                    # same rows would cost the browser to show.
                    static_html = page.evaluate(
                        """() => { const d = document.documentElement.cloneNode(true);
                        d.querySelectorAll('script').forEach(s => s.remove());
                        d.querySelector('#app').hidden = false;
                        d.querySelector('#login').hidden = true;
                        return '<!doctype html>' + d.outerHTML; }"""
                    )
                else:
                    out["first row visible"].append(first_row)
                    out["first contentful paint"].append((fcp or 0) / 1000)
                    for name, args in (
                        ("search one kiosk (Enter to rows)", [kiosk_code(WARM), False]),
                        ("trouble only (click to rows)", ["", True]),
                        ("back to all (to rows)", ["", False]),
                    ):
                        out[name].append(page.evaluate(FILTER_JS, args) / 1000)
                context.close()
            for _ in range(rounds):
                context = browser.new_context(viewport={"width": 1366, "height": 900})
                page = context.new_page()
                page.route(
                    f"{service.url}/baseline",
                    lambda route: route.fulfill(body=static_html, content_type="text/html"),
                )
                page.goto(f"{service.url}/baseline")
                page.locator(FIRST_ROW).first.wait_for(state="visible")
                out["baseline: same rows as a static page"].append(
                    page.evaluate("performance.now()") / 1000
                )
                context.close()
        finally:
            browser.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    rounds = parser.parse_args().rounds
    url = make_pg_database()
    try:
        upgrade(url)
        start = time.perf_counter()
        fleet = seed_fleet(url)
        print(f"seeded {KIOSKS} kiosks x 12 compartments in {time.perf_counter() - start:.1f} s")
        with tempfile.TemporaryDirectory() as tmp:
            service = ServiceProcess(url, Path(tmp), LOCKER_TIMERS_ENABLED="false").start()
            try:
                headers = {"Authorization": f"Bearer {fleet.operator_token}"}
                api = f"{service.url}/api/v1/operator/fleet"
                with httpx.Client(headers=headers, timeout=30.0) as client:
                    client.get(api).raise_for_status()  # warm
                    figures = {
                        "API: first page": timed(lambda: client.get(api), rounds),
                        "API: search one kiosk": timed(
                            lambda: client.get(api, params={"q": kiosk_code(WARM)}), rounds
                        ),
                        "API: trouble only": timed(
                            lambda: client.get(api, params={"trouble": "true"}), rounds
                        ),
                        "API: page 100 of 200": timed(
                            lambda: client.get(api, params={"offset": 4950}), rounds
                        ),
                    }
                figures.update(asyncio.run(bare_sql(url, rounds)))
                figures.update(
                    in_thread(lambda: browser_figures(service, fleet.operator_token, rounds))
                )
            finally:
                service.stop()
    finally:
        drop_pg_database(url)
    width = max(len(name) for name in figures)
    print(f"{rounds} rounds each (goal: first paint and a filter under 1 s)")
    for name, samples in figures.items():
        print(f"  {name:<{width}}  {ms(samples)}")


if __name__ == "__main__":
    main()
