"""Frontdoor gateway: the OpenAI-compatible data plane."""
