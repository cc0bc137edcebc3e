"""Backends that run revisions' replicas: ``local`` (processes on this machine) and ``kubernetes``."""
