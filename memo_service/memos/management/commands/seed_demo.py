"""Demo data for `make run`: developers, the "Unsupported regions" region, a month of API
traffic (some accounts in supported countries calling from unsupported ones), an approved
memo for developers in those regions by account or by traffic, and an admin login.
Running it again adds nothing and changes nothing."""

import datetime as dt
import random
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from memo_service.developers.geo import geo_database
from memo_service.developers.models import Developer, Region, TrafficObservation
from memo_service.developers.regions import PRESETS
from memo_service.memos.approval import memo_approve, memo_request_approval
from memo_service.memos.models import Memo, MemoTranslation

DEMO_ADMIN = ("admin", "admin")
DEMO_APPROVER = ("approver", "approver")
DEVELOPERS = 500
UNSUPPORTED, REGION_SOURCE = PRESETS["Unsupported regions"]
SUPPORTED = [
    "US",
    "GB",
    "DE",
    "FR",
    "JP",
    "KR",
    "IN",
    "BR",
    "CA",
    "AU",
    "SG",
    "NL",
    "SE",
    "ES",
    "IT",
    "MX",
    "ID",
    "VN",
    "TH",
    "PH",
    "NG",
    "KE",
    "ZA",
    "PL",
    "TR",
    "AR",
    "CL",
    "CO",
    "EG",
    "AE",
]
CHINESE_SPEAKING = {"CN", "HK", "MO"}
FIRST = [
    "Wei",
    "Li",
    "Mei",
    "Jun",
    "Olga",
    "Ivan",
    "Reza",
    "Sara",
    "Min",
    "Ana",
    "John",
    "Priya",
    "Kenji",
    "Lucia",
    "Omar",
    "Emma",
    "Noah",
    "Chen",
    "Yuki",
    "Amir",
    "Fatima",
    "Lars",
    "Ines",
]
LAST = [
    "Wang",
    "Zhang",
    "Liu",
    "Chen",
    "Petrov",
    "Ivanova",
    "Hosseini",
    "Kim",
    "Garcia",
    "Smith",
    "Patel",
    "Sato",
    "Rossi",
    "Haddad",
    "Novak",
    "Silva",
    "Nguyen",
    "Okafor",
    "Jensen",
    "Lopez",
]
ORGS = [
    "Acme Analytics",
    "Blue Lantern AI",
    "Northwind Apps",
    "Pixel Forge",
    "Quanta Labs",
    "River Stack",
    "Summit Data",
    "Tiny Robots",
    "Vertex Studio",
    "Zephyr Cloud",
]

SUBJECT_EN = "Action required: API access from {{ developer.country_name }} ends on {{ memo.effective_date.strftime('%-d %B %Y') }}"
HTML_EN = """<p>Dear {{ developer.name }},</p>
<p>We are taking additional steps to block API traffic from regions where we do not support access
to our services. Our records show that <strong>{{ developer.organization }}</strong> has made API
requests from <strong>{{ developer.country_name }}</strong>, which is not on our list of supported
countries and territories.</p>
<p><strong>Starting {{ memo.effective_date.strftime('%-d %B %Y') }}, API traffic from unsupported
regions will be blocked.</strong> Requests made after that date will fail.</p>
<p>If you believe your region is recorded incorrectly, or you need help moving your traffic,
contact developer support.</p>
<p>Please confirm that you have read this notice by pressing <em>Acknowledge</em> on the page linked
below{% if memo.ack_deadline %} before {{ memo.ack_deadline.strftime('%-d %B %Y') }}{% endif %}.</p>
<p>— The Platform Trust &amp; Safety team</p>"""
TEXT_EN = """Dear {{ developer.name }},

We are taking additional steps to block API traffic from regions where we do not support access to
our services. Our records show that {{ developer.organization }} has made API requests from
{{ developer.country_name }}, which is not on our list of supported countries and territories.

Starting {{ memo.effective_date.strftime('%-d %B %Y') }}, API traffic from unsupported regions will be blocked.
Requests made after that date will fail.

If you believe your region is recorded incorrectly, or you need help moving your traffic, contact
developer support.

Please confirm that you have read this notice by pressing Acknowledge on the page linked below{% if memo.ack_deadline %} before {{ memo.ack_deadline.strftime('%-d %B %Y') }}{% endif %}.

-- The Platform Trust & Safety team"""

SUBJECT_ZH = "需要您处理：自 {{ memo.effective_date.strftime('%Y年%-m月%-d日') }} 起，来自{{ developer.country_name }}的 API 访问将被阻止"
HTML_ZH = """<p>{{ developer.name }}，您好：</p>
<p>我们正在采取进一步措施，阻止来自我们不支持的地区的 API 流量。我们的记录显示，
<strong>{{ developer.organization }}</strong> 曾从 <strong>{{ developer.country_name }}</strong>
发出 API 请求，而该地区不在我们支持的国家和地区列表中。</p>
<p><strong>自 {{ memo.effective_date.strftime('%Y年%-m月%-d日') }} 起，来自不受支持地区的 API 流量将被阻止。</strong>此后发出的请求将会失败。</p>
<p>如果您认为我们记录的地区有误，或需要帮助迁移流量，请联系开发者支持团队。</p>
<p>请在下方链接的页面上点击“确认”{% if memo.ack_deadline %}（截止日期：{{ memo.ack_deadline.strftime('%Y年%-m月%-d日') }}）{% endif %}，以确认您已阅读本通知。</p>
<p>— 平台信任与安全团队</p>"""
TEXT_ZH = """{{ developer.name }}，您好：

我们正在采取进一步措施，阻止来自我们不支持的地区的 API 流量。我们的记录显示，{{ developer.organization }} 曾从{{ developer.country_name }}发出 API 请求，而该地区不在我们支持的国家和地区列表中。

自 {{ memo.effective_date.strftime('%Y年%-m月%-d日') }} 起，来自不受支持地区的 API 流量将被阻止。此后发出的请求将会失败。

如果您认为我们记录的地区有误，或需要帮助迁移流量，请联系开发者支持团队。

请在下方链接的页面上点击“确认”{% if memo.ack_deadline %}（截止日期：{{ memo.ack_deadline.strftime('%Y年%-m月%-d日') }}）{% endif %}，以确认您已阅读本通知。

-- 平台信任与安全团队"""


def demo_developers() -> list[Developer]:
    rng = random.Random(20240709)  # fixed: the same 500 developers on every machine
    developers = []
    for i in range(1, DEVELOPERS + 1):
        # About 40 % in unsupported regions, so the demo memo has a real audience.
        country = rng.choice(UNSUPPORTED) if rng.random() < 0.4 else rng.choice(SUPPORTED)
        first, last = rng.choice(FIRST), rng.choice(LAST)
        chinese = country in CHINESE_SPEAKING and rng.random() < 0.8
        developers.append(
            Developer(
                external_id=f"demo-{i:04d}",
                email=f"{first}.{last}.{i}@example.com".lower(),
                name=f"{first} {last}",
                organization=rng.choice(ORGS),
                country=country,
                language="zh-hans" if chinese else "en",
                is_active=rng.random() < 0.95,
            )
        )
    # Every country appears at least once, whatever the draw.
    for i, country in enumerate(UNSUPPORTED + SUPPORTED):
        developers[i * 13].country = country
    return developers


def demo_traffic() -> list[TrafficObservation]:
    """About one in eight accounts of supported countries called the API from an
    unsupported one on a few days of the last month: in the memo's audience by traffic."""
    rng = random.Random(20240710)
    today, database = timezone.now().date(), geo_database().name
    rows = []
    for developer in Developer.objects.filter(external_id__startswith="demo-").order_by("id"):
        if developer.country.code in UNSUPPORTED or rng.random() >= 0.12:
            continue
        country = rng.choice(["CN", "HK", "RU", "IR"])
        for days_ago in sorted(rng.sample(range(1, 29), rng.randint(1, 4))):
            rows.append(
                TrafficObservation(
                    developer=developer,
                    country=country,
                    day=today - dt.timedelta(days=days_ago),
                    requests=rng.randint(20, 4000),
                    source="demo-gateway",
                    geo_database=database,
                )
            )
    return rows


class Command(BaseCommand):
    help = (
        "Load demo developers, the 'Unsupported regions' region, a month of their API traffic, a "
        "memo approved by a demo approver, and the admin and approver logins (idempotent)."
    )

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        Developer.objects.bulk_create(demo_developers(), ignore_conflicts=True)
        region, _ = Region.objects.get_or_create(
            name="Unsupported regions", defaults={"countries": UNSUPPORTED, "source": REGION_SOURCE}
        )
        memo, memo_created = Memo.objects.get_or_create(
            slug="demo-restriction-notice",
            defaults={
                "title": "API traffic from unsupported regions will be blocked",
                "subject": SUBJECT_EN,
                "html_body": HTML_EN,
                "text_body": TEXT_EN,
                "effective_date": dt.date(2027, 7, 9),
                "ack_deadline": dt.datetime(2027, 6, 30, 23, 59, tzinfo=dt.UTC),
                "active_only": True,
                "audience_basis": Memo.Basis.EITHER,
            },
        )
        User = get_user_model()
        username, password = DEMO_ADMIN
        admin = User.objects.filter(username=username).first() or User.objects.create_superuser(
            username, "admin@example.com", password
        )
        approver = User.objects.filter(username=DEMO_APPROVER[0]).first()
        if approver is None:
            approver = User.objects.create_user(
                *DEMO_APPROVER[:1], email="approver@example.com", password=DEMO_APPROVER[1], is_staff=True
            )
            approver.groups.add(Group.objects.get(name="Approver"))
        if memo_created:
            memo.include_regions.add(region)
            memo.traffic_regions.add(region)
            TrafficObservation.objects.bulk_create(demo_traffic(), ignore_conflicts=True)
            MemoTranslation.objects.create(
                memo=memo, language="zh-hans", subject=SUBJECT_ZH, html_body=HTML_ZH, text_body=TEXT_ZH
            )
            # Approved by a second person, so `make run` shows the whole flow at once.
            Memo.objects.filter(pk=memo.pk).update(author=admin)
            memo_request_approval(memo=memo, by=admin)
            memo_approve(memo=memo, by=approver)
            memo.refresh_from_db()
        self.stdout.write(
            f"Demo data: {Developer.objects.count()} developers, region {region.name!r}, "
            f"memo {memo.slug!r} ({memo.status}); logins {username} / {password} (admin), "
            f"{DEMO_APPROVER[0]} / {DEMO_APPROVER[1]} (approver)."
        )
