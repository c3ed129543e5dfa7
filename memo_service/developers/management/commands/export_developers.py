from typing import Any

from django.core.management.base import BaseCommand

from memo_service.developers.exporting import developers_csv


class Command(BaseCommand):
    help = "Write every developer as CSV to standard output (import_developers reads it back)."

    def handle(self, *args: Any, **options: Any) -> None:
        for line in developers_csv():
            self.stdout.write(line, ending="")
