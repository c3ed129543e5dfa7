"""The memos app's models, a module per step of the flow: memo (the text, its audience,
its status), delivery (the send and its emails), answer (the developer's answers and
the disputes), case (what happens after an answer), notification (one-off emails), evidence (the chain), audit (the admin's log), webhooks (the platform's).

The words the models use:
- answer: a developer's press of a button on the memo's page (or in the console, through
  the sync API): acknowledged, disputes region or traffic, needs help; appended, never changed.
- handover: the provider accepting an email (DELIVERY_HANDED_OVER); the evidence chain
  records one per provider call, listing its emails.
- lease: a send task's claim on its deliveries (SendLease), renewed while its worker lives;
  an expired one goes to reconciliation (send/reconcile.py).
- sequencer: one per memo (evidence/sequencer.py), it gives the pending EvidenceRecords
  whose tag holds their seq in the chain, and marks the others refused.
- seal: one step of the sequencer, one transaction of records closed by a signed
  EvidenceCheckpoint (evidence_seal).
- inert link: the answer link of a preview, test email or check (inert_ack_url); the
  page refuses it, saying so, and records no answer.
- outcome unknown: a delivery whose send ended not knowing whether the provider took it (an
  answer lost, a worker gone mid-call); a tracking event may settle it, or a Composer resend it.
- text hash: the SHA-256 of the email as sent, subject, text and HTML (Delivery.text_hash);
  an Answer keeps the text hash of the email its page showed.
"""

from memo_service.memos.models.answer import Answer, Dispute, DisputeResolution
from memo_service.memos.models.audit import AuditEvent
from memo_service.memos.models.case import CASE_CARRIED, Case, CaseEntry
from memo_service.memos.models.delivery import (
    DELIVERY_ARRIVED,
    DELIVERY_HANDED_OVER,
    DELIVERY_PENDING,
    DELIVERY_RANK,
    DELIVERY_UNCONFIRMED,
    Delivery,
    DeliveryEvent,
    ProviderThrottle,
    SendLease,
)
from memo_service.memos.models.evidence import EvidenceCheckpoint, EvidenceRecord
from memo_service.memos.models.memo import (
    MEMO_CANCELLABLE,
    MEMO_EDITABLE,
    MEMO_FINISHED,
    MEMO_MAY_SEND,
    MEMO_SHOWN,
    MEMO_STARTABLE,
    MEMO_STARTED,
    MEMO_WITHDRAWABLE,
    TRANSLATION_FIELDS,
    AudienceSnapshot,
    Memo,
    MemoQuerySet,
    MemoTranslation,
    default_reminder_days,
)
from memo_service.memos.models.notification import Notification
from memo_service.memos.models.webhooks import WebhookAttempt, WebhookEndpoint, WebhookMessage, webhook_secret

# default_reminder_days and webhook_secret: the migrations name them here, as field defaults.
__all__ = [
    # memo
    "Memo",
    "MemoQuerySet",
    "MemoTranslation",
    "AudienceSnapshot",
    "default_reminder_days",
    "MEMO_EDITABLE",
    "MEMO_STARTABLE",
    "MEMO_STARTED",
    "MEMO_MAY_SEND",
    "MEMO_SHOWN",
    "MEMO_CANCELLABLE",
    "MEMO_FINISHED",
    "MEMO_WITHDRAWABLE",
    "TRANSLATION_FIELDS",
    # delivery
    "Delivery",
    "DeliveryEvent",
    "ProviderThrottle",
    "SendLease",
    "DELIVERY_PENDING",
    "DELIVERY_HANDED_OVER",
    "DELIVERY_ARRIVED",
    "DELIVERY_UNCONFIRMED",
    "DELIVERY_RANK",
    # answer
    "Answer",
    "DisputeResolution",
    "Dispute",
    # case
    "Case",
    "CaseEntry",
    "CASE_CARRIED",
    # notification
    "Notification",
    # evidence
    "EvidenceRecord",
    "EvidenceCheckpoint",
    # audit
    "AuditEvent",
    # webhooks
    "WebhookEndpoint",
    "WebhookMessage",
    "WebhookAttempt",
    "webhook_secret",
]
