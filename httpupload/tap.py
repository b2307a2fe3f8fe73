"""``twistd httpupload``: options and the service maker."""

from __future__ import annotations

from twisted.application.service import IService
from twisted.python import usage

from httpupload.config import Config, load_config
from httpupload.errors import ConfigError


class Options(usage.Options):
    synopsis = "--config FILE"
    longdesc = (
        "Run the XEP-0363 HTTP File Upload service: an XEP-0114 component of "
        "your XMPP server plus the HTTP server that takes and serves the files."
    )
    optParameters = [["config", "c", None, "Path to the TOML configuration file."]]

    config: Config

    def postOptions(self) -> None:
        if not self["config"]:
            raise SystemExit("httpupload: --config FILE is required")
        try:
            self.config = load_config(self["config"])
        except ConfigError as e:
            # One line naming the key; twistd would print its whole usage
            # text before a UsageError.
            raise SystemExit(f"httpupload: config error: {e}") from None


def makeService(options: Options) -> IService:
    """The service tree, on the reactor twistd installed (the one place the
    global reactor is named)."""
    from httpupload._reactor import running_reactor
    from httpupload.service import make_service

    try:
        return make_service(options.config, running_reactor())
    except ConfigError as e:
        raise SystemExit(f"httpupload: config error: {e}") from None
