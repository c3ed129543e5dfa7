"""What the provider tests have in common: the tests of each provider's backend against
its loopback (tests/test_provider_*.py), and test_sending's and test_faults' Mailgun and
Resend cases. Each module keeps its provider's own specifics (its batch size, its server
fixture, the shape of what its loopback records); here are the memo's audiences, the
deliveries to send, the names and templates that catch a double escape or a substitution
gone wrong, and the judgement of a kill test. The `later` fixture is in conftest."""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from memo_service.developers.models import Developer
from memo_service.memos.answer.tokens import answer_token_read
from memo_service.memos.compose.context import developer_context
from memo_service.memos.compose.rendering import MemoRenderer
from memo_service.memos.models import Delivery, Memo
from memo_service.memos.send.dispatch import send_batch_size
from memo_service.memos.send.sending import delivery_send_batch
from tests.conftest import approve, dispatched, found, make_developer

E = TypeVar("E")

# A name with every character HTML escapes: escaped twice, it would show as "&amp;amp;".
TRICKY = 'O\'Neil & <Sons> "{}"'
# The memo's own text (conftest's make_memo), which a provider's merge fields can carry.
SUBSTITUTABLE: dict[str, str] = {}
# A text that tests a developer's value: it travels as each developer's whole email.
TESTS_A_VALUE: dict[str, str] = {
    "text_body": "{% if developer.country == 'CN' %}China{% else %}Not China{% endif %}, {{ developer.name }}"
}
LINK = r"http://testserver/ack/[^/]+/"


def developers_in_bulk(
    n: int, prefix: str, name: Callable[[int], str], country: str = "RU", organization: str = "Acme", **fields: Any
) -> list[Developer]:
    """n developers PREFIX-00000… (their address PREFIX-00000@example.com), the i-th named
    name(i), inserted in bulk (10,000 in about a second)."""
    return Developer.objects.bulk_create(
        [
            Developer(
                external_id=f"{prefix}-{i:05d}",
                email=f"{prefix}-{i:05d}@example.com",
                name=name(i),
                organization=organization,
                country=country,
                **fields,
            )
            for i in range(n)
        ],
        batch_size=2_000,
    )


def make_developers(prefix: str, n: int, country: str = "RU") -> list[Developer]:
    """n developers PREFIX0, PREFIX1, … in `country` (conftest's make_developer)."""
    return [make_developer(f"{prefix}{i}", country) for i in range(n)]


def developers_named_trickily(n: int, prefix: str, country: str = "RU") -> None:
    """n developers, each named TRICKY with their number."""
    developers_in_bulk(n, prefix, TRICKY.format, country, organization="Acme & Co")


def queued(memo: Memo) -> list[int]:
    """The ids of the memo's deliveries, dispatched (conftest's dispatched) and queued."""
    return list(Delivery.objects.filter(memo=dispatched(memo)).order_by("id").values_list("id", flat=True))


def sent_through_the_admin(memo: Memo, capture_on_commit: Any) -> Memo:
    """The memo approved and sent as a platform admin sends it, with the memo page's
    Send button, what that enqueues run once its transactions commit
    (`capture_on_commit`: pytest-django's django_capture_on_commit_callbacks; tasks run
    in-process with the `eager` fixture)."""
    memo = approve(memo)
    admin = User.objects.filter(is_superuser=True).first() or User.objects.create_superuser(
        "sender", "sender@example.com", "not-used"
    )
    client = Client()
    client.force_login(admin)
    with capture_on_commit(execute=True):
        page = client.post(reverse("admin:memos_memo_send", args=[memo.pk]), follow=True)
    assert page.status_code == 200 and "being queued" in page.content.decode()
    return memo


def sent_in_send_tasks(memo: Memo, send: Callable[[list[int]], object]) -> list[int]:
    """The memo dispatched and its deliveries sent as the workers send them: `send` called
    with each send task's ids (send_batch_size() of them, as dispatch enqueues them);
    returns the ids of all."""
    ids = queued(memo)
    size = send_batch_size()
    for start in range(0, len(ids), size):
        send(ids[start : start + size])
    return ids


def sent_with_three_refused(memo: Memo, provider: Any) -> None:
    """Nine developers in RU (ru-ok0…) and three (ru-bad0…) whose addresses the provider
    refuses (its `refuse`), and the memo sent to them by one send task, run twice (a
    rerun changes nothing)."""
    make_developers("ru-ok", 9)
    make_developers("ru-bad", 3)
    provider.refuse = {"ru-bad0@", "ru-bad1@", "ru-bad2@"}
    ids = queued(memo)
    delivery_send_batch(delivery_ids=ids)
    delivery_send_batch(delivery_ids=ids)  # a rerun changes nothing


def assert_the_refused_failed_and_the_others_have_their_own_ids(
    emails: dict[str, E], message_id: Callable[[E], str]
) -> list[Delivery]:
    """After sent_with_three_refused: the three refused failed, the nine others are sent,
    each once (`emails`: the provider's emails by address) with the id the provider gave
    its email (`message_id`), each its own. Returns the failed deliveries."""
    failed = list(Delivery.objects.filter(status="failed").select_related("developer"))
    assert sorted(d.developer.external_id for d in failed) == ["ru-bad0", "ru-bad1", "ru-bad2"]
    sent = Delivery.objects.filter(status="sent").select_related("developer")
    assert len(emails) == 9 and {d.developer.email for d in sent} == set(emails)
    assert all(d.provider_message_id == message_id(emails[d.developer.email]) for d in sent)
    assert len({d.provider_message_id for d in sent}) == 9  # each its own
    return failed


def one_each(emails: Iterable[E], address: Callable[[E], str]) -> dict[str, E]:
    """Each recipient's email by `address`; fails if somebody got the memo twice."""
    emails = list(emails)
    by_address = {address(email): email for email in emails}
    assert len(by_address) == len(emails), "somebody got the memo twice"
    return by_address


def assert_full_render(
    renderer: MemoRenderer, developer: Developer, subject: str, html: str, text: str, own_link: bool = True
) -> str:
    """The email (its subject, html and text) is, to the character, the memo's full render
    for the developer, with the link in its text (their own, read if `own_link`); returns
    the link."""
    link = found(LINK, text)
    if own_link:
        assert answer_token_read(link.split("/")[-2]).developer == developer  # their own link
    _, expected = renderer._render_full(developer_context(developer), link)
    assert (subject, html, text) == (expected.subject, expected.html, expected.text)
    return link


def requests_of(
    ours: Any,
    anymails: Any,
    addresses: list[Any],
    url: str,
    merge_data: Callable[[Any], dict[str, str]],
    **message: Any,
) -> tuple[Any, Any]:
    """The request our batching backend makes of one message to `addresses` (anymail's
    EmailAddress objects, taken as they are), and the one anymail's own backend makes of
    it with the addresses as text. `merge_data(address)`: that recipient's merge values;
    `message`: its subject and body."""
    from anymail.message import AnymailMessage

    requests = []
    for backend, to in [(ours, addresses), (anymails, list(map(str, addresses)))]:
        anymail_message = AnymailMessage(
            to=to,
            from_email="Notices <n@example.com>",
            merge_data={a.addr_spec: merge_data(a) for a in addresses},
            merge_metadata={a.addr_spec: {"delivery_id": str(i)} for i, a in enumerate(addresses)},
            **message,
        )
        payload = backend.build_message_payload(anymail_message, backend.send_defaults)
        requests.append(payload.get_request_params(url))
    return requests[0], requests[1]


def deliveries_by_address(memo: Memo) -> dict[str, Delivery]:
    return {d.developer.email: d for d in Delivery.objects.filter(memo=memo).select_related("developer")}


@dataclass
class KilledSend:
    """What a send with workers killed left: each address's emails at the provider, each
    delivery by address, the addresses flagged outcome_unknown and those sent twice."""

    per_recipient: collections.Counter[str]
    deliveries: dict[str, Delivery]
    unknown: list[str]
    duplicates: list[str]


def assert_nobody_lost_and_sent_means_once(memo: Memo, recipients: int, addresses: Iterable[str]) -> KilledSend:
    """A kill test's judgement of a provider that can neither be asked nor deduplicate a
    call (`addresses`: the recipient of each email it took): one delivery each, nobody
    lost, "sent" means exactly once, a flagged one got at most one extra copy, and the
    provider sent nobody outside the audience."""
    per_recipient = collections.Counter(addresses)
    deliveries = deliveries_by_address(memo)
    assert len(deliveries) == recipients  # one Delivery each
    assert {d.status for d in deliveries.values()} <= {"sent", "outcome_unknown"}  # nobody lost
    for address, delivery in deliveries.items():
        if delivery.status == "sent":
            assert per_recipient[address] == 1, address  # sent means: exactly once
        else:
            assert per_recipient[address] <= 2, address  # flagged; at most one extra copy
    assert set(per_recipient) <= set(deliveries)  # the provider sent nobody outside the audience
    unknown = [a for a, d in deliveries.items() if d.status == "outcome_unknown"]
    duplicates = [a for a, n in per_recipient.items() if n > 1]
    return KilledSend(per_recipient, deliveries, unknown, duplicates)


def assert_everyone_got_it_exactly_once(memo: Memo, recipients: int, addresses: Iterable[str]) -> KilledSend:
    """A kill test's judgement of a provider that deduplicates or can be asked
    (`addresses`: the recipient of each email it took): `recipients` addresses got
    exactly one email each, and every delivery of the memo is sent."""
    per_recipient = collections.Counter(addresses)
    assert len(per_recipient) == recipients and set(per_recipient.values()) == {1}
    assert set(Delivery.objects.filter(memo=memo).values_list("status", flat=True)) == {"sent"}
    return KilledSend(per_recipient, deliveries_by_address(memo), unknown=[], duplicates=[])
