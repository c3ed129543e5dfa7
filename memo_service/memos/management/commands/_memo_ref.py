from django.core.management.base import CommandError

from memo_service.memos.models import Memo


def memo_by_ref(ref: str) -> Memo:
    """MEMO on the command line: a numeric id or a slug."""
    lookup = {"pk": int(ref)} if ref.isdigit() else {"slug": ref}
    try:
        return Memo.objects.get(**lookup)
    except Memo.DoesNotExist:
        raise CommandError(f"no memo with id or slug {ref!r}") from None
