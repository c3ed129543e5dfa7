"""A status has one home: memo_status.py writes Memo.status and delivery_status.py
writes Delivery.status. This reads memo_service's sources and fails on a write of a
`status` anywhere else that is not one of the sites named below, each with why."""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ROOT / "memo_service"
HOMES = {"memo_service/memos/memo_status.py", "memo_service/memos/delivery_status.py"}

# (file, function): why it may write a status.
ALLOWED = {
    ("memo_service/memos/send/dispatch.py", "deliveries_create"): (
        "creates the initial deliveries: queued, or failed at once for an address that bounced or complained"
    ),
    ("memo_service/memos/webhooks/delivery.py", "webhook_attempt_record"): (
        "an outbound webhook message's own status (WebhookMessage), not a memo's or a delivery's"
    ),
    # A case's status (open, waiting, resolved) is written by cases.py alone, under the
    # case's row lock, with the history entry that says why.
    ("memo_service/memos/cases/cases.py", "case_reply"): "a reply leaves the case waiting for the developer",
    ("memo_service/memos/cases/cases.py", "case_set_status"): "open or waiting, as staff set it",
    ("memo_service/memos/cases/cases.py", "_close"): "a case resolved, with its outcome and rationale",
    # A notification's own status (Notification: queued, sending, sent, failed).
    ("memo_service/memos/notify/notifications.py", "notifications_send"): "the claim before its call",
    ("memo_service/memos/notify/notifications.py", "_record"): "the call's outcome",
}

# Calls whose `status=` writes a row (filter, exclude, Q and When only read it).
_WRITES = {"update", "create", "get_or_create", "update_or_create", "bulk_update", "Memo", "Delivery"}
# SQL that writes a status: "SET … status =" or an INSERT naming a status column.
_SQL = re.compile(
    r"\bSET\b(?:(?!\bWHERE\b|\bFROM\b)[^;])*?[\s,(]status\s*=|\bINSERT\s+INTO\b[^;]*?[\s,(]status\s*[,)]", re.I | re.S
)


def _name(func: ast.expr) -> str:
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def _is_status(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value == "status"


def _has_status_key(node: ast.AST) -> bool:
    return isinstance(node, ast.Dict) and any(_is_status(k) for k in node.keys)


# Each reads one kind of node: (the node, its parent, the names its function passes as
# **changes to a write) -> what about it writes a status, or None.
Reader = Callable[[Any, ast.AST | None, set[str]], str | None]


def _call(node: ast.Call, parent: ast.AST | None, splatted: set[str]) -> str | None:
    name = _name(node.func)
    if name in _WRITES and any(
        k.arg == "status" or (k.arg is None and _has_status_key(k.value)) for k in node.keywords
    ):
        return f"{name}(status=…)"
    if name == "setattr" and any(_is_status(a) for a in node.args[1:2]):
        return 'setattr(…, "status", …)'
    return _saved_fields(node) if name == "save" else None


def _saved_fields(node: ast.Call) -> str | None:
    fields = [k.value for k in node.keywords if k.arg == "update_fields"]
    return 'save(update_fields=["status", …])' if any(_is_status(c) for f in fields for c in ast.walk(f)) else None


def _attribute(node: ast.Attribute, parent: ast.AST | None, splatted: set[str]) -> str | None:
    return ".status = …" if node.attr == "status" and isinstance(node.ctx, ast.Store) else None


def _assign(node: ast.Assign, parent: ast.AST | None, splatted: set[str]) -> str | None:
    changes = _has_status_key(node.value) and any(isinstance(t, ast.Name) and t.id in splatted for t in node.targets)
    return '{"status": …} passed as **changes to a write' if changes else None


def _subscript(node: ast.Subscript, parent: ast.AST | None, splatted: set[str]) -> str | None:
    stored = isinstance(node.ctx, ast.Store) and isinstance(node.value, ast.Name) and node.value.id in splatted
    return 'changes["status"] = … passed to a write' if stored and _is_status(node.slice) else None


def _pair(node: ast.Tuple, parent: ast.AST | None, splatted: set[str]) -> str | None:
    in_row = isinstance(parent, ast.Tuple | ast.List) and len(node.elts) == 2
    return '("status", …), a column and its value' if in_row and _is_status(node.elts[0]) else None


def _text(node: ast.Constant, parent: ast.AST | None, splatted: set[str]) -> str | None:
    return "SQL writing status" if isinstance(node.value, str) and _SQL.search(node.value) else None


def _formatted(node: ast.JoinedStr, parent: ast.AST | None, splatted: set[str]) -> str | None:
    text = "".join(str(v.value) if isinstance(v, ast.Constant) else "{}" for v in node.values)
    return "SQL writing status" if _SQL.search(text) else None


_READERS: dict[type[ast.AST], Reader] = {
    ast.Call: _call,
    ast.Attribute: _attribute,
    ast.Assign: _assign,
    ast.Subscript: _subscript,
    ast.Tuple: _pair,
    ast.Constant: _text,
    ast.JoinedStr: _formatted,
}


def _splatted(function: ast.AST) -> set[str]:
    """The names a function passes as **kwargs to a call that writes."""
    return {
        k.value.id
        for call in ast.walk(function)
        if isinstance(call, ast.Call) and _name(call.func) in _WRITES
        for k in call.keywords
        if k.arg is None and isinstance(k.value, ast.Name)
    }


def status_writes(source: str) -> list[tuple[str, int, str]]:
    """(enclosing function, line, what) of each write of a status in `source`."""
    found: list[tuple[str, int, str]] = []

    def visit(node: ast.AST, parent: ast.AST | None, function: str, splatted: set[str]) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            function, splatted = node.name, _splatted(node)
        reader = _READERS.get(type(node))
        if reader and (what := reader(node, parent, splatted)) is not None:
            found.append((function, getattr(node, "lineno", 0), what))
        if isinstance(node, ast.JoinedStr):
            return  # its parts were read as one text
        for child in ast.iter_child_nodes(node):
            visit(child, node, function, splatted)

    visit(ast.parse(source), None, "<module>", set())
    return found


def all_status_writes() -> dict[tuple[str, str], list[str]]:
    writes: dict[tuple[str, str], list[str]] = {}
    for path in sorted(SOURCES.rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        if "/migrations/" in relative:
            continue  # the schema's history
        for function, line, what in status_writes(path.read_text()):
            writes.setdefault((relative, function), []).append(f"{relative}:{line} in {function}: {what}")
    return writes


def test_a_status_is_written_only_by_its_state_machine_or_a_named_site() -> None:
    writes = all_status_writes()
    unexplained = [
        where for site, found in writes.items() if site[0] not in HOMES and site not in ALLOWED for where in found
    ]
    assert not unexplained, "a status written outside memo_status.py and delivery_status.py:\n" + "\n".join(unexplained)
    assert {path for path, _ in writes} >= HOMES, "the scan finds not even the state machines' writes"
    stale = [site for site in ALLOWED if site not in writes]
    assert not stale, f"named as writing a status but no longer does (take it off ALLOWED): {stale}"


@pytest.mark.parametrize(
    "code",
    [
        "def f(): Memo.objects.filter(pk=1).update(status='sent')",
        "def f(): Delivery.objects.create(memo=m, status='failed')",
        "def f(): Delivery(memo=m, status='queued').save()",
        "def f(): memo.status = 'sent'",
        "def f(): setattr(memo, 'status', 'sent')",
        "def f(): memo.save(update_fields=['status', 'updated_at'])",
        "def f(): changes = {'status': 'queued', 'not_before': None}; Delivery.objects.update(**changes)",
        "def f():\n    changes = {}\n    changes['status'] = 'sent'\n    Memo.objects.update(**changes)",
        "def f(): Memo.objects.filter(pk=1).update(**{'status': 'sent'})",
        "def f(): columns = (('memo_id', 1), ('status', 'queued'))",
        "def f(): cursor.execute('UPDATE memos_delivery SET attempts = 0, status = %s WHERE id = %s')",
        "def f(): cursor.execute(f'UPDATE {table} d SET status = CASE WHEN d.status = 1 END')",
        "def f(): cursor.execute('INSERT INTO memos_delivery (memo_id, status) SELECT 1, 2')",
    ],
)
def test_the_scan_sees_each_way_of_writing_a_status(code: str) -> None:
    assert [function for function, _, _ in status_writes(code)] == ["f"]


@pytest.mark.parametrize(
    "code",
    [
        "def f(): Delivery.objects.filter(status='queued').exclude(status='sent').count()",
        "def f(): Q(status='queued') | When(status='sent', then=1)",
        "def f(): return JsonResponse({'ok': True}, status=400)",
        "def f(): cursor.execute('SELECT id FROM memos_delivery WHERE status = %s')",
        "def f(): Developer.objects.filter(pk=1).update(email_status='bounced')",
        "def f(): cursor.execute('UPDATE developers_developer SET email_status = %s')",
        "def f(): memo.status_reason = ''",
        "def f(): return {'status': 'ok', 'delivery': 1}",
        "class Kind(TextChoices):\n    STATUS = 'status', 'status'",
        "def f(): cursor.execute('UPDATE memos_delivery SET attempts = 0 WHERE status = %s')",
    ],
)
def test_the_scan_takes_no_read_for_a_write(code: str) -> None:
    assert status_writes(code) == []
