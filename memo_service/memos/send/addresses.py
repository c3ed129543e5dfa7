"""A developer's name and address as the EmailAddress anymail sends to, with a fast path.

anymail makes an EmailAddress by parsing the text "name <address>" with the standard
library's header parser, which is slow next to the rest of a batch call. Most of our
recipients need no parsing: a plain address (ASCII, a dot-atom local part, a plain
domain) and a name of words and single spaces. `fast_address` builds those directly;
everything else (quoted, international, odd) goes through anymail's parser
(`parsed_address`). The fast path must give exactly what the parser gives: a property
test in tests/test_sending.py holds the two together over plain and odd names and
addresses.
"""

from __future__ import annotations

import re

from anymail.utils import EmailAddress, parse_address_list

PLAIN_ADDRESS = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+"
)
PLAIN_NAME = re.compile(r"[\w'.-]+(?: [\w'.-]+)*")


def recipient_address(name: str, email: str) -> EmailAddress:
    """The developer's name and address (from the database, never from what a template
    saw) as anymail makes them from the text "name <address>". Raises
    AnymailInvalidAddress for an address anymail refuses."""
    fast = fast_address(name, email)
    return fast if fast is not None else parsed_address(name, email)


def fast_address(name: str, email: str) -> EmailAddress | None:
    """The EmailAddress of a plain name and address, made without the parser; None for
    any other."""
    if PLAIN_ADDRESS.fullmatch(email) and (not name or PLAIN_NAME.fullmatch(name)):
        username, domain = email.rsplit("@", 1)
        return EmailAddress(display_name=name, username=username, domain=domain)
    return None


def parsed_address(name: str, email: str) -> EmailAddress:
    """What anymail's parser makes of "name <address>" (a line break in a name is a space)."""
    text = str(EmailAddress(display_name=name.replace("\r", " ").replace("\n", " "), addr_spec=email))
    return parse_address_list([text])[0]
