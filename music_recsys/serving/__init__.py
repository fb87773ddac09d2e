"""Serving the champion model: ``model`` (a loaded bundle and its answers), ``app`` (the FastAPI app)."""
