"""The FastAPI service: vendor uploads, campaign-tool scoring, analyst queries."""

from api.app import create_app, serve
from api.settings import ApiSettings

__all__ = ["ApiSettings", "create_app", "serve"]
