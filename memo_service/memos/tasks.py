"""Celery tasks: ids in, one call out. Retry and acknowledgement policy is in settings."""

from celery import shared_task

from memo_service.memos import dispatch, sending


@shared_task(name="memos.send_batch")
def send_batch(delivery_ids: list[int]) -> None:
    sending.delivery_send_batch(delivery_ids=delivery_ids)


@shared_task(name="memos.dispatch_memo")
def dispatch_memo(memo_id: int) -> None:
    dispatch.memo_dispatch(memo_id=memo_id)
