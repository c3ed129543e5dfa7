"""memo_service.settings with the floor's URL added (bench/tracking_floor.py)."""

from memo_service.settings import *  # noqa: F403

ROOT_URLCONF = "bench.tracking_floor"
