"""Shared test set-up: the wokkel shim must be in place before any test imports wokkel."""

import httpupload  # noqa: F401
