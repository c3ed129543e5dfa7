"""Trial renders in a child process: the sandbox's trial server (sandbox/trial_server.py),
started once per process with no environment (`-I`, `env={}`: a template cannot find a
secret there) and kept, so that Python and Jinja2 start once, not at every trial; it
forks a child for each request, which renders under a memory limit and a deadline.

A process that forks after starting one (a Celery prefork child) starts its own; a
server that dies or overruns its deadline is killed and the next trial starts another.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
import time
from typing import Any

from memo_service.memos.compose.sandbox import trial_server

# Past the child's own deadline (which the server enforces), how long the caller waits
# before it gives up on the server itself.
SLACK_S = 10.0


class _Server:
    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.owner = 0  # the pid that started it
        self.lock = threading.Lock()

    def _started(self) -> subprocess.Popen[bytes]:
        if self.process is None or self.owner != os.getpid() or self.process.poll() is not None:
            self.process = subprocess.Popen(
                [sys.executable, "-I", "-c", trial_server.SERVE, os.path.dirname(trial_server.__file__)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env={},
                bufsize=0,
            )
            self.owner = os.getpid()
        return self.process

    def _stop(self) -> None:
        if self.process is not None and self.owner == os.getpid():
            self.process.kill()
            self.process.wait()
        self.process = None

    def run(self, request: dict[str, Any], timeout: float) -> list[str]:
        """The request's result lines; those printed before a hang or a crash still count."""
        with self.lock:
            process = self._started()
            assert process.stdin is not None and process.stdout is not None
            lines: list[str] = []
            try:
                unsent = memoryview(json.dumps(request).encode() + b"\n")
                while unsent:  # an unbuffered pipe may take a long request in parts
                    unsent = unsent[process.stdin.write(unsent) or 0 :]
                fd, pending, deadline = process.stdout.fileno(), b"", time.monotonic() + timeout
                while True:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                        raise TimeoutError
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        raise EOFError
                    pending += chunk
                    while b"\n" in pending:
                        line, pending = pending.split(b"\n", 1)
                        if line.decode() == trial_server.DONE:
                            return lines
                        lines.append(line.decode())
            except (OSError, TimeoutError, EOFError):
                self._stop()
                return lines


_server = _Server()


def trial_run(request: dict[str, Any]) -> list[str]:
    """Run a trial request ({jobs, seconds, memory_bytes}, see trial_server.trial_render);
    one JSON result line per job that finished."""
    return _server.run(request, request["seconds"] * len(request["jobs"]) + SLACK_S)
