import gc
import os
from typing import Any

from celery import Celery
from celery.signals import task_postrun, task_prerun, worker_process_init
from django.db import close_old_connections

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "memo_service.settings")

app = Celery("memo_service")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@task_prerun.connect
@task_postrun.connect
def connections_tidy(task: Any = None, **kwargs: Any) -> None:
    """Around each task, what Django does around each request (CELERY_DB_REUSE_MAX in
    settings.py says why). Not for a task run eagerly inside a caller's transaction."""
    if task is not None and not getattr(task.request, "is_eager", False):
        close_old_connections()


@worker_process_init.connect
def startup_objects_frozen(**kwargs: Any) -> None:
    """A worker process's objects from before its first task (Django, Celery, our
    modules: about 150,000) are kept for its life, so the garbage collector's full
    collections need not look at them again: otherwise each full collection walks them
    all, a large share of a sending worker's CPU (bench/RESULTS.md)."""
    gc.freeze()
