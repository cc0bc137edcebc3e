"""The gateway's config snapshot: a projection of tenants, keys, quotas and deployments, and what republishes it.

A Django app without models (label ``snapshot``) so that its signal handlers connect in ``ready`` and Celery
discovers its task like any app's.
"""
