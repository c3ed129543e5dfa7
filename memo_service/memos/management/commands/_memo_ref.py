from django.core.management.base import CommandError

from memo_service.memos.models import Memo


def memo_by_ref(ref: str) -> Memo:
    """MEMO on the command line: a numeric id or a slug."""
    try:
        return Memo.objects.by_ref(ref)
    except Memo.DoesNotExist:
        raise CommandError(f"no memo with id or slug {ref!r}") from None
