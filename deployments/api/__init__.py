"""The REST API of deployments, revisions, manifests, SLOs and rollouts (``/api/v1/tenants/<slug>/deployments``)."""
