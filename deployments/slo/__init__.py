"""Service levels: SLO samples collected from the gateway's load figures (``collect``) and burn-rate alerts
evaluated from them (``evaluate``)."""
