"""`python -m tests.e2e.stack_control`: a local stack (as `python -m local` starts it) that
fault tests drive over stdin, one command per line, each acknowledged on stdout as
`done <command>` once it took effect:

    storage-stop <n>    close moto's port (S3 + DynamoDB unreachable, data kept)
    storage-start <n>   serve the same data on the same port again

EOF on stdin or SIGTERM stops the stack (every environment, moto), like Ctrl-C.
"""

from __future__ import annotations

import signal
import sys
import threading

from local.stack import start


def main() -> int:
    stack = start()
    print(f"ready {stack.endpoint}", flush=True)
    stopping = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stopping.set()
        stack.stop()
        sys.exit(0)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for line in sys.stdin:
        command = line.split()[:1]
        if command == ["storage-stop"]:
            stack.storage.stop()
        elif command == ["storage-start"]:
            stack.storage.start()
        else:
            print(f"unknown command {line.strip()!r}", flush=True)
            continue
        print(f"done {line.strip()}", flush=True)
    if not stopping.is_set():
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
