"""The HTTP side: streaming uploads, downloads, CORS and security headers."""
