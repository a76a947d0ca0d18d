"""The HTTP adapter: a Litestar application over TrackService."""

from trackstore.web.app import create_app

__all__ = ["create_app"]
