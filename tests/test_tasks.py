"""What beat runs is what the code expects it to: every periodic task is registered and
scheduled, and every task a service enqueues by name exists."""

import inspect
import re
from pathlib import Path

from django.conf import settings

from memo_service.celery import app
from memo_service.memos import tasks


def periodic_tasks() -> set[str]:
    """Tasks that take no arguments have nothing to work on but what is due: beat's."""
    return {
        task.name
        for task in vars(tasks).values()
        if hasattr(task, "name") and hasattr(task, "run") and not inspect.signature(task.run).parameters
    }


def test_it_schedules_every_periodic_task_and_only_registered_ones():
    scheduled = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert periodic_tasks() == scheduled
    assert "memos.send_scheduled" in scheduled
    assert scheduled <= set(app.tasks)


def test_it_registers_every_task_a_service_enqueues_by_name():
    source = "\n".join(p.read_text() for p in Path(settings.BASE_DIR, "memo_service").rglob("*.py"))
    names = set(re.findall(r'enqueue(?:_on_commit)?\(\s*"([^"]+)"', source))
    assert names, "services enqueue through memos/queue.py"
    assert names <= set(app.tasks), names - set(app.tasks)
