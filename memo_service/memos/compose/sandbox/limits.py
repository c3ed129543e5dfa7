"""The sandbox's policy tables: how big a value a template may make, and what it may not
call at all. The checks that apply them are in size_checks.py and environments.py; the
per-render budget of operations, time and characters is in budget.py."""

from __future__ import annotations

import re

from jinja2.sandbox import SecurityError

# Gmail clips messages over about 100 KB; a body several times that is a mistake.
MAX_OUTPUT_CHARS = 500_000
# No value a template makes may be longer than an email may be (a list counts its items
# and what they print as).
MAX_VALUE_CHARS = MAX_OUTPUT_CHARS
# Bounds range() so a loop cannot be made long by one call; far above any real list.
MAX_RANGE = 10_000
# A power's result may have at most this many bits (a 1,000-digit number is plenty).
MAX_POWER_BITS = 4096
# C's strftime pads to any width it is given ("%999Y"), into a buffer up to 256 times the
# format's length: a format is short, its field widths two digits at most.
MAX_STRFTIME_FORMAT = 100  # "%A %d %B %Y, %H:%M %Z" is 20
STRFTIME_WIDTH = re.compile(r"%[-_0^#]*\d{3,}")
# Adding up lists copies the total so far at each step: 1,000 of them is plenty.
MAX_SUMMED_SEQUENCES = 1_000

# Methods of strings, bytes and ints that allocate a string as long as their numeric
# argument, or longer.
BLOCKED_METHODS = frozenset(
    {
        "center",
        "ljust",
        "rjust",
        "zfill",
        "expandtabs",
        "format",
        "format_map",
        "translate",
        "maketrans",
        "to_bytes",
    }
)
# Jinja's defaults a template does not get: lipsum makes text as long as it is asked to,
# and these filters pad or format to any width.
REMOVED_GLOBALS = ("lipsum",)
REMOVED_FILTERS = ("center", "format", "indent", "wordwrap")


class TemplateTooBig(SecurityError):
    """A template would make a value, or output, past these limits."""
