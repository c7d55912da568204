"""`python -m locker_service ARGS` is `lockerctl ARGS`.

The supervisor starts its children this way so they run on the same interpreter as `lockerctl up`
itself, whether or not the `lockerctl` script is on PATH (a venv not activated, `python -m`).
"""

from locker_service.cli import app

if __name__ == "__main__":
    app(prog_name="lockerctl")
