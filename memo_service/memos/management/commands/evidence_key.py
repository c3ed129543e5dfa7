from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from memo_service.memos.evidence import checkpoints
from memo_service.memos.evidence.sequencer import public_key, public_keys


class Command(BaseCommand):
    help = (
        "Print the evidence signing key's public half and fingerprint (publish them: auditors compare "
        "them with an export's) and the retired keys still accepted. --new prints a new private key "
        "for EVIDENCE_SIGNING_KEY and what EVIDENCE_RETIRED_KEYS becomes when it replaces the current one."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--new", action="store_true", help="make a new signing key (printed, not stored)")

    def handle(self, *args: Any, new: bool, **options: Any) -> None:
        current = public_key()
        self.stdout.write(f"EVIDENCE_SIGNING_KEY's public key: {current}\n  fingerprint {checkpoints.key_id(current)}")
        retired = [k for k in public_keys().values() if k != current]
        for key in retired:
            self.stdout.write(f"retired, still verifies: {key}\n  fingerprint {checkpoints.key_id(key)}")
        if not new:
            return
        private = checkpoints.new_private_key()
        successor = checkpoints.public_key_b64(private)
        self.stdout.write(
            "\nTo rotate, set both and restart every web and worker process (checkpoints signed so far "
            "keep verifying with the retired key):\n"
            f"EVIDENCE_SIGNING_KEY={private}\n"
            f"EVIDENCE_RETIRED_KEYS={','.join([*retired, current])}\n"
            f"The new public key: {successor}\n  fingerprint {checkpoints.key_id(successor)}"
        )
