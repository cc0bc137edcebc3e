from django.apps import AppConfig


class QuotasConfig(AppConfig):
    name = "quotas"
    verbose_name = "Quotas and usage"

    def ready(self) -> None:
        # Every commit that changes keys, tenants, quotas, deployments or revisions republishes the gateway's
        # config snapshot (docs/contracts.md).
        from quotas.signals import connect_signals

        connect_signals()
