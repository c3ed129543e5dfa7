from django.apps import AppConfig


class MemosConfig(AppConfig):
    name = "memo_service.memos"
    verbose_name = "Memos"

    def ready(self) -> None:
        # Connects the receiver for anymail's tracking signal.
        from memo_service import checks  # noqa: F401
        from memo_service.memos import tracking  # noqa: F401
