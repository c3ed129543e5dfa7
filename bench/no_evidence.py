"""The Celery app of a worker that sends without its evidence: bench/evidence_cost.py's
baseline, never a deployment's (`celery -A bench.no_evidence worker`).

Each worker process, once Django is set up, swaps out what a send adds for its evidence
(BatchSender.send in memos/send/sending.py): the text hash, the values kept as stored,
the texts written with the rows, and the handover record. The rows are recorded sent as
they were before evidence: an UPDATE per language of the call, in one transaction. What
is left of the evidence is the dict of the call's languages the send still builds (its
EmailText now holds only the language), so the baseline is a shade slower than a send
that never had evidence, and the cost it shows a shade smaller.
"""

from __future__ import annotations

from typing import Any

from celery.signals import worker_process_init

from memo_service.celery import app

__all__ = ["app"]


@worker_process_init.connect
def send_without_evidence(**kwargs: Any) -> None:
    from django.db import transaction

    from memo_service.memos import delivery_status
    from memo_service.memos.send import sending

    record_sent = delivery_status.deliveries_record_sent

    def deliveries_record_sent(
        *, delivery_ids: list[int], message_id: str, texts: dict[int, str] | None = None, **rest: Any
    ) -> None:
        if texts is None:
            record_sent(delivery_ids=delivery_ids, message_id=message_id, **rest)
            return
        by_language: dict[str, list[int]] = {}
        for delivery_id in delivery_ids:
            by_language.setdefault(texts[delivery_id], []).append(delivery_id)
        with transaction.atomic():
            for language, ids in by_language.items():
                record_sent(delivery_ids=ids, message_id=message_id, language=language)

    sending.deliveries_record_sent = deliveries_record_sent
    sending.EmailText = lambda language, values, text_hash: language  # type: ignore[assignment,misc]
    sending.stored_values = lambda values: None  # type: ignore[assignment]
    sending.email_text_hash = lambda email: ""  # type: ignore[assignment]
    delivery_status.evidence_record_handover = lambda **kwargs: None  # type: ignore[assignment]
