"""Frontdoor's built-in OpenAI-compatible model server (a simulator, plus optional real MiniLM embeddings).

Start it with ``python -m modelserver``; embed it with :func:`modelserver.app.create_app`.
"""
