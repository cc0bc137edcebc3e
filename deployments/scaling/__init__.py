"""Autoscaling: the pure KPA decision (``kpa``) and the tick that reads load from Redis and applies it (``tick``)."""
