"""A fake Kubernetes API server speaking the real HTTP API, for tests and the reconcile benchmark."""
