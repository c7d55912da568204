"""The kiosk screen while the kiosk is cut off from the service, served by the bridge itself.

The kiosk's browser shows the service's kiosk screen (`/kiosk`), which looks at this server's
`/state` every few seconds; once the bridge decides pickups alone (docs/adr/0077) the browser
comes here, and goes back once the service is reachable again. Served on the kiosk PC only
(`BRIDGE_SCREEN_HOST`, 127.0.0.1 by default), from the bridge's own files, so it works with no
network at all:

- `GET /`: the offline screen, in English and Chinese: scan your QR code, or type your code;
  deliveries paused; "offline" said discreetly.
- `GET /state`: `{offline, codes, ready, outcome}` (cut off; typed codes checkable; orders
  ready here; the latest outcome's number), readable from the service's page (CORS): it gives
  away nothing a look at the kiosk would not.
- `POST /pickup` `{code}`: a typed code, decided by the bridge while cut off (refused with 409
  while in touch: the service decides then, with its own throttle). Refusals are the service's
  error codes with its HTTP statuses.
- `GET /outcomes?after=N`: what happened to the latest pickups, typed or scanned, so the screen
  says "compartment 4 is open" after a QR scan too.
"""

from firmware_bridge.screen.server import ScreenServer

__all__ = ["ScreenServer"]
