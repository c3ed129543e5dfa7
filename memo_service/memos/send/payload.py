"""What one call to the provider carries: one rendered email, or a batch of them merged
into one message for a backend that sends many recipients per call (merge_batch_size)."""

from __future__ import annotations

from anymail.message import AnymailMessage
from django.core.mail.backends.base import BaseEmailBackend

from memo_service.backends.base import MergeFields
from memo_service.memos.send.queued import Prepared


def memo_tag(memo_id: int) -> str:
    """The provider's tag on a memo's emails: reconciliation asks for that memo's events."""
    return f"memo-{memo_id}"


def single_message(prepared: Prepared, connection: BaseEmailBackend) -> AnymailMessage:
    message = AnymailMessage(
        subject=prepared.email.subject,
        body=prepared.email.text,
        to=[str(prepared.to)],  # text, for any backend
        connection=connection,
        # Our id, never personal data: tracking events carry it back to us.
        metadata={"delivery_id": str(prepared.delivery.pk)},
        tags=[memo_tag(prepared.delivery.memo_id)],
    )
    message.attach_alternative(prepared.email.html, "text/html")
    return message


def batch_calls(pending: list[Prepared], size: int, email_limit: int) -> list[list[Prepared]]:
    """The calls `pending` goes in, each of at most `size` recipients. One address twice in
    a call would share one recipient's merge data, and a whole email over what the
    provider takes in a batch's merge data (`email_limit` bytes, 0: no limit) does not
    fit: each goes in a call of its own. Emails rendered from one skeleton go together,
    as that skeleton plus each one's values."""
    by_address: dict[str, Prepared] = {}
    calls: list[list[Prepared]] = []
    for prepared in pending:
        address = prepared.to.addr_spec.lower()  # the merge data's key: two stored spellings may share it
        email = prepared.email
        too_big = (
            email_limit
            and email.skeleton is None
            and len(f"{email.subject}{email.html}{email.text}".encode()) > email_limit
        )
        if address in by_address or too_big:
            calls.append([prepared])
        else:
            by_address[address] = prepared
    groups: dict[int, list[Prepared]] = {}
    for prepared in by_address.values():
        groups.setdefault(id(prepared.email.skeleton), []).append(prepared)
    for group in groups.values():
        calls += [group[start : start + size] for start in range(0, len(group), size)]
    return calls


def merged_message(group: list[Prepared], connection: BaseEmailBackend, fields: MergeFields | None) -> AnymailMessage:
    """One message for many recipients: the skeleton once with the provider's merge
    fields (`fields`, e.g. Mailgun's "%recipient.X%") and each recipient's values, or
    else each one's whole rendered email as the values "subject", "html" and "text"
    (under those merge fields, or for a backend that takes a message per recipient,
    `fields` None, to fill each message with)."""
    skeleton = group[0].email.skeleton
    template = skeleton.merge_template(fields) if skeleton is not None and fields is not None else None
    if template is not None and fields is not None:
        markers = {field.before for field in fields}
        if any(marker in value for p in group for value in p.email.values for marker in markers):
            template = None  # a value that looks like a merge field travels inside a whole email
    if template is not None and skeleton is not None:
        (subject, html, text), merge_data = (
            template,
            {p.to.addr_spec: skeleton.merge_values(p.email.values, p.email.escaped) for p in group},
        )
    else:
        subject, html, text = (
            (fields.subject.format("subject"), fields.html.format("html"), fields.text.format("text"))
            if fields is not None
            else ("", "", "")
        )
        merge_data = {
            p.to.addr_spec: {"subject": p.email.subject, "text": p.email.text, "html": p.email.html} for p in group
        }
    message = AnymailMessage(
        subject=subject,
        body=text,
        connection=connection,
        merge_data=merge_data,
        # Addresses as anymail's parser makes them: a batching backend (ours) takes them as they are.
        to=[p.to for p in group],
        merge_metadata={p.to.addr_spec: {"delivery_id": str(p.delivery.pk)} for p in group},
        tags=[memo_tag(group[0].delivery.memo_id)],
    )
    message.attach_alternative(html, "text/html")
    return message


def provider_message_id(message: AnymailMessage) -> str:
    """The message id the provider gave the sent message, or else the one it was sent with."""
    status = getattr(message, "anymail_status", None)
    if status is not None and status.message_id:
        return str(status.message_id)
    return str(message.extra_headers.get("Message-ID", ""))
