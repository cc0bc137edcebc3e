"""Frontdoor's built-in model server: OpenAI-compatible (a simulator, optional real MiniLM embeddings, generated
images) or, with ``--protocol v2``, the Open Inference Protocol serving a small matrix-factorisation ranker.

Start it with ``python -m modelserver``; embed it with :func:`modelserver.app.create_app`.
"""
