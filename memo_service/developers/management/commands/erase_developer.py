from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from memo_service.developers.erasure import developer_erase
from memo_service.developers.models import Developer


class Command(BaseCommand):
    help = (
        "Pseudonymise a developer's personal data (email, name, organisation, attributes); "
        "deliveries and acknowledgements stay as evidence."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("external_id", help="the platform's account id")

    def handle(self, *args: Any, external_id: str, **options: Any) -> None:
        developer = Developer.objects.filter(external_id=external_id).first()
        if developer is None:
            raise CommandError(f"no developer with external_id {external_id!r}")
        if developer.erased_at:
            self.stdout.write(f"{external_id} was already erased on {developer.erased_at:%Y-%m-%d %H:%M} UTC.")
            return
        developer_erase(developer=developer)
        self.stdout.write(f"{external_id}: personal data erased; evidence kept.")
