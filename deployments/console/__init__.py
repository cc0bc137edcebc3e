"""The console pages of deployments: list, detail, forms, usage figures, SLO charts and rollout controls."""
