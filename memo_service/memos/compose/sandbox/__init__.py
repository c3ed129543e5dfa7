"""The Jinja2 sandbox admin-written memo templates run in: a composer's template is code.

Every render of such a template, wherever it runs (the developer's page, preview, the
send-start check, the workers), goes through `render_limited`, which gives it a budget
of operations, time and characters made (budget.py). The sandbox's hooks charge the
budget and refuse, before it is made, any value past MAX_VALUE_CHARS; a render over
budget fails alone with a clear reason, in the same process.

The package, one job a module:
  limits.py        the policy tables: how big a value may be, what may not be called
  budget.py        one render's budget of operations, time and characters; render_limited
  charges.py       what a value weighs, and charging the budget for what a template makes
  size_checks.py   what a filter, operator or method call would build, checked before it runs
  compiler.py      the compiler hooks the sandbox has none for (loops, captured output, `~`)
  environments.py  MemoSandbox, the HTML and text environments, the compiled-template cache
  errors.py        a failed render's reason and template line
  trial_server.py  the trial render server a child process runs (compose/trial.py)

It imports nothing but the standard library and Jinja2, its modules one another by
relative imports, so that the trial server's child process can load it alone.
"""

from .budget import RenderLimit, render_limited
from .environments import (
    REMINDER_FIELDS,
    TEMPLATE_FIELDS,
    MemoSandbox,
    environment_for,
    html_env,
    template_for,
    text_env,
)
from .errors import describe, template_line
from .limits import MAX_OUTPUT_CHARS, TemplateTooBig

__all__ = (
    "MAX_OUTPUT_CHARS",
    "REMINDER_FIELDS",
    "TEMPLATE_FIELDS",
    "MemoSandbox",
    "RenderLimit",
    "TemplateTooBig",
    "describe",
    "environment_for",
    "html_env",
    "render_limited",
    "template_for",
    "template_line",
    "text_env",
)
