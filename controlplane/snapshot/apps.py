from django.apps import AppConfig


class SnapshotConfig(AppConfig):
    name = "controlplane.snapshot"
    label = "snapshot"
    verbose_name = "Gateway snapshot"

    def ready(self) -> None:
        # Every commit that changes keys, tenants, quotas, deployments or revisions republishes the gateway's
        # config snapshot (docs/contracts.md).
        from controlplane.snapshot.triggers import connect_signals

        connect_signals()
