"""What a refused request must leave as it was: the rows a deployment write could have added."""

from __future__ import annotations


def deployment_row_counts() -> tuple[int, int, int, int]:
    """Deployments, revisions, deployment events and audit events, across every tenant."""
    from deployments.models import DeploymentEvent, ModelDeployment, Revision
    from tenants.models import AuditEvent

    return (
        ModelDeployment.objects.unscoped().count(),
        Revision.objects.unscoped().count(),
        DeploymentEvent.objects.unscoped().count(),
        AuditEvent.objects.unscoped().count(),
    )
