from django.apps import AppConfig


class TenantsConfig(AppConfig):
    name = "tenants"
    verbose_name = "Tenants, members and API keys"

    def ready(self) -> None:
        # Every Django process (web, worker, beat, tests) uses the configured Celery app for shared tasks.
        import controlplane.celery  # noqa: F401
