from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "memo_service.api"
    verbose_name = "Sync API"
