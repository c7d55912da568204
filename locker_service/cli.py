"""`lockerctl`: run any part of the locker system and administer the service.

Each command imports what it runs only when it is called, so a kiosk PC running only
`lockerctl bridge` never loads the service's web stack.
"""

from __future__ import annotations

import typer

app = typer.Typer(help="Contactless smart food locker controller.", no_args_is_help=True)
