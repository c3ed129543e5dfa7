"""Approve a bench's memo as the admin does (its author asks, a second person approves):
the approval record every later render checks itself against (memos/evidence/approved.py).
Call with Django set up."""

from __future__ import annotations

from typing import Any


def approve(memo: Any) -> None:
    from django.contrib.auth.models import Group, User

    from memo_service.memos.approval import memo_approve, memo_request_approval
    from memo_service.memos.models import Memo

    author, _ = User.objects.get_or_create(username="bench-author", defaults={"email": "a@example.com"})
    approver, made = User.objects.get_or_create(username="bench-approver", defaults={"email": "b@example.com"})
    if made:
        approver.groups.add(Group.objects.get(name="Approver"))
    Memo.objects.filter(pk=memo.pk).update(author=author)
    memo.refresh_from_db()
    memo_request_approval(memo=memo, by=author)
    memo_approve(memo=memo, by=approver)
