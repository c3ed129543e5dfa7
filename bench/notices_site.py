"""Settings for bench/notices.py's server: the project as deployed, with the floor's URL
(bench/notices_urls.py) added. Not for production."""

from memo_service.settings import *

ROOT_URLCONF = "bench.notices_urls"
