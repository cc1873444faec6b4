"""What a forked child sees of its process: printed as JSON, then it exits as ZYGOTE_APP_EXIT says
(a code, "raise" for an uncaught exception, "wait" to block until a signal)."""

from __future__ import annotations

import atexit
import json
import os
import signal
import sys
import threading


def main() -> None:
    print(
        json.dumps(
            {
                "argv": sys.argv,
                "name": __name__,
                "env": dict(os.environ),
                "cwd": os.getcwd(),
                "pid": os.getpid(),
                "pgid": os.getpgid(0),
                "sid": os.getsid(0),
                "ppid": os.getppid(),
                "threads": threading.active_count(),
                "sigchld_default": signal.getsignal(signal.SIGCHLD) == signal.SIG_DFL,
                "stdin": sys.stdin.read(),
            }
        ),
        flush=True,
    )
    atexit.register(lambda: print("atexit ran", flush=True))
    how = os.environ.get("ZYGOTE_APP_EXIT", "0")
    if how == "raise":
        raise RuntimeError("the app failed")
    if how == "wait":
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        print("waiting", flush=True)
        signal.pause()
    sys.exit(int(how))


if __name__ == "__main__":  # preloaded by the zygote under its own name: nothing runs then
    main()
