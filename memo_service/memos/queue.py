"""Enqueue a task by the name tasks.py registers it under, once the transaction commits
(a rollback enqueues nothing).

Services enqueue work and tasks call services: if services imported the task functions,
each would import the module that imports it. Celery's registry, looked up by name, keeps
the imports one way; tests/test_tasks.py checks that every name used here is registered.
"""

from __future__ import annotations

from typing import Any

from celery import current_app


def enqueue_on_commit(task_name: str, *args: Any) -> None:
    current_app.tasks[task_name].delay_on_commit(*args)


def enqueue(task_name: str, *args: Any) -> None:
    """Now, for work that writes nothing the task must see first (beat's sweeps)."""
    current_app.tasks[task_name].delay(*args)


def enqueue_later(task_name: str, *args: Any, countdown: float) -> None:
    """In `countdown` seconds (a provider asked us to wait)."""
    current_app.tasks[task_name].apply_async(args=args, countdown=countdown)
