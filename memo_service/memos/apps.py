from django.apps import AppConfig


class MemosConfig(AppConfig):
    name = "memo_service.memos"
    verbose_name = "Memos"

    def ready(self) -> None:
        # Connects the receiver for anymail's tracking signal.
        from memo_service import checks  # noqa: F401

        # Registers the tasks in every process, not only in workers (which autodiscover
        # them): services enqueue them by name (memos/queue.py).
        from memo_service.memos import (
            erasure,  # noqa: F401  (scrubs an erased developer's data from the memos' records)
            tasks,  # noqa: F401
            tracking,  # noqa: F401
        )
