"""The trial render server, run in a child process (compose/trial.py starts it): a
template that loops forever or builds a gigabyte string is then a form error, not a hung
web server.

The child runs isolated, with no path to this project: it loads this package alone
(`SERVE`), which imports nothing but the standard library and Jinja2. The server answers
request after request, JSON lines on stdin, each in a child forked for it under memory
and time limits."""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from .budget import render_limited
from .environments import environment_for
from .errors import describe, template_line

# Python code that loads this package from its folder (the first argument) as the
# top-level package `sandbox`, with no path to the project needed.
LOAD_PACKAGE = """
import importlib.util, sys
folder = sys.argv[1]
spec = importlib.util.spec_from_file_location("sandbox", folder + "/__init__.py", submodule_search_locations=[folder])
sandbox = sys.modules["sandbox"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sandbox)
"""
# ...and runs the server.
SERVE = LOAD_PACKAGE + "from sandbox.trial_server import serve\nserve()\n"


class TooSlow(Exception):
    def __init__(self, line: int | None) -> None:
        super().__init__("takes too long to render (a runaway loop?)")
        self.line = line


def _budget_tracer(deadline: float, template: Any) -> Callable[..., Any]:
    """A sys.settrace hook that stops a render running past its deadline.

    Python reports a 'line' event for every line of compiled template code, so a loop
    in the template is checked on each iteration; its line maps back to the template.
    """

    def trace(frame: Any, event: str, arg: Any) -> Any:
        if time.monotonic() > deadline:
            line = None
            f = frame
            while f is not None:
                if f.f_code.co_filename == "<template>":
                    line = template.get_corresponding_lineno(f.f_lineno)
                    break
                f = f.f_back
            raise TooSlow(line)
        return trace

    return trace


def _context(raw: dict[str, Any]) -> dict[str, Any]:
    """The JSON context back into the types a real send uses (dates, not strings)."""
    memo = dict(raw["memo"])
    if memo.get("effective_date"):
        memo["effective_date"] = dt.date.fromisoformat(memo["effective_date"])
    if memo.get("ack_deadline"):
        memo["ack_deadline"] = dt.datetime.fromisoformat(memo["ack_deadline"])
    return {**raw, "memo": memo}


def trial_render(jobs: list[dict[str, Any]], seconds: float) -> Iterator[dict[str, Any]]:
    """Compile and render each job ({key, field, source, context}); yields one result each."""
    for job in jobs:
        key, field, source = job["key"], job["field"], job["source"]
        template = None
        try:
            template = environment_for(field).from_string(source)
            sys.settrace(_budget_tracer(time.monotonic() + seconds, template))
            try:
                output = render_limited(template, _context(job["context"]))
            finally:
                sys.settrace(None)
            yield {"key": key, "ok": True, "output_chars": len(output)}
        except TooSlow as exc:
            yield {"key": key, "ok": False, "error": str(exc), "line": exc.line}
        except Exception as exc:  # every failure is reported to the admin, with its line
            yield {"key": key, "ok": False, "error": describe(exc), "line": template_line(exc)}


def _limit_memory(extra_bytes: int) -> None:
    """This process may hold `extra_bytes` more than it already does, and no more."""
    import resource

    with open("/proc/self/statm") as f:
        in_use = int(f.read().split()[0]) * resource.getpagesize()
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = in_use + extra_bytes
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


DONE = json.dumps({"done": True})


def serve() -> None:
    """Jinja2 is imported once, when the server starts; each request, a JSON line on
    stdin, is rendered by a child forked for it alone, under the request's memory limit
    and a deadline past which it is killed, so that one template's memory or time never
    reaches the next. The child prints its results as JSON lines; the line DONE ends
    each request's."""
    import os
    import signal

    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:  # the child: render, print, leave without running anything else
            try:
                _limit_memory(request["memory_bytes"])
                for result in trial_render(request["jobs"], request["seconds"]):
                    print(json.dumps(result), flush=True)
            finally:
                os._exit(0)
        deadline = time.monotonic() + request["seconds"] * len(request["jobs"]) + 5
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                break
            time.sleep(0.001)
        print(DONE, flush=True)
