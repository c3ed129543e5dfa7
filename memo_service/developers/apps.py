from django.apps import AppConfig


class DevelopersConfig(AppConfig):
    name = "memo_service.developers"
    verbose_name = "Developers"
