import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from memo_service.memos.management.commands._memo_ref import memo_by_ref
from memo_service.memos.report.reports import FIELDS, memo_funnel


class Command(BaseCommand):
    help = "Show a memo's funnel (targeted, sent, delivered, bounced, failed, acknowledged) per country."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("memo", help="memo id or slug")
        parser.add_argument("--json", action="store_true", help="print JSON")

    def handle(self, *args: Any, memo: str, **options: Any) -> None:
        funnel = memo_funnel(memo_by_ref(memo))
        if options["json"]:
            self.stdout.write(json.dumps(funnel, indent=2))
            return
        self.stdout.write(f"{funnel['memo']} ({funnel['status']})")
        self.stdout.write("country  " + "".join(f"{f:>16}" for f in FIELDS))
        self.stdout.write("all      " + "".join(f"{funnel[f]:>16}" for f in FIELDS))
        for country, row in funnel["by_country"].items():
            self.stdout.write(f"{country:<9}" + "".join(f"{row[f]:>16}" for f in FIELDS))
        self.stdout.write(
            "answers by channel: "
            + "; ".join(
                f"{channel.replace('_', ' ')} {counts['total']} ("
                + ", ".join(
                    f"{response.replace('_', ' ')} {n}" for response, n in counts.items() if response != "total"
                )
                + ")"
                for channel, counts in funnel["answers_by_channel"].items()
            )
        )
