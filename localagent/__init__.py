"""The local agent: a long-running process that owns the replica processes of the ``local`` backend.

Desired state arrives from :class:`deployments.backends.local.LocalBackend` through Redis (the format is
``controlplane/contracts/localagent.py``); the agent starts, health-checks, restarts and stops replica processes to
match it and writes the observed status back. It is Django-free so it starts fast and never touches the database.
See docs/local-backend.md.
"""
