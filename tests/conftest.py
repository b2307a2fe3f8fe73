"""Shared set-up: the wokkel shim must load before any test imports wokkel."""

import httpupload  # noqa: F401
