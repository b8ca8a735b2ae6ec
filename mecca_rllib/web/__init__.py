"""Browser UI of ``mecca serve``: a local FastAPI server around :class:`InteractiveSession`.

Needs the ``web`` extra (``fastapi``, ``uvicorn``); :func:`create_app` builds the app.
"""
from __future__ import annotations

__all__ = ["create_app"]


def __getattr__(name: str):
    if name == "create_app":  # lazy: importing the package must not need FastAPI
        from mecca_rllib.web.app import create_app

        return create_app
    raise AttributeError(name)
