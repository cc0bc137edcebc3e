"""``python -m deployments.localagent`` still starts the local agent, which now lives in the ``localagent`` package."""
