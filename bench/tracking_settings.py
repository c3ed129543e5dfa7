"""memo_service.settings with the floor's URL added (bench/tracking_floor.py)."""

from memo_service.settings import *

ROOT_URLCONF = "bench.tracking_floor"
