"""Converging desired state onto a backend: the pure replica plan and its reconcile pass (``engine``), and the
on-commit enqueueing of passes (``enqueue``)."""
