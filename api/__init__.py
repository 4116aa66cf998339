"""The FastAPI service: vendor uploads, campaign-tool scoring, analyst queries (see DESIGN.md)."""

from api.app import ApiSettings, create_app, serve

__all__ = ["ApiSettings", "create_app", "serve"]
