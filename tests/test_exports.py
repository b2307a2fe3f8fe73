"""The package's public names, and what importing the client loads.

As klein's ``test_exports.py`` pins its ``__all__``: every exported name
resolves to the object its module defines, and the uploading side
(``httpupload.client``) is importable without the server: a fresh
interpreter shows what the import loads.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import import_module

import pytest

import httpupload
import httpupload.client

#: Modules of the server that a client never needs.
SERVER_MODULES = (
    "httpupload.web",
    "httpupload.service",
    "httpupload.metadata",
    "httpupload.storage",
    "httpupload.xmpp",
    "httpupload.policy",
    "httpupload.config",
    "prometheus_client",
    "twisted.web.server",
)

#: Every name ``httpupload`` exports, and the module that defines it.
EXPORTS = {
    "ComponentService": "httpupload.xmpp.component",
    "Config": "httpupload.config",
    "ConfigError": "httpupload.errors",
    "FileInfo": "httpupload.storage",
    "FilesystemStorage": "httpupload.storage.filesystem",
    "HttpUploadError": "httpupload.errors",
    "KeyRing": "httpupload.keys",
    "Node": "httpupload.assembly",
    "Slot": "httpupload.slots",
    "SlotGranter": "httpupload.granting",
    "SlotPolicy": "httpupload.policy",
    "SlotSigner": "httpupload.slots",
    "Storage": "httpupload.storage",
    "UploadHandler": "httpupload.xmpp.handler",
    "UploadReceiver": "httpupload.web.uploads",
    "UploadSite": "httpupload.web.site",
    "attach_handlers": "httpupload.assembly",
    "load_config": "httpupload.config",
    "make_service": "httpupload.service",
    "open_node": "httpupload.assembly",
    "parse_config": "httpupload.config",
}


def test_all_is_exactly_the_documented_names() -> None:
    """``httpupload.__all__`` lists the public names, no more and no fewer."""
    assert sorted(httpupload.__all__) == sorted(EXPORTS)


@pytest.mark.parametrize("name", sorted(EXPORTS))
def test_every_exported_name_resolves_to_its_modules_object(name: str) -> None:
    """Each name in ``__all__`` is the very object its defining module has."""
    assert getattr(httpupload, name) is getattr(import_module(EXPORTS[name]), name)


def test_an_unknown_name_is_an_attribute_error() -> None:
    """A name the package does not export raises AttributeError, as a module does."""
    with pytest.raises(AttributeError, match="no_such_name"):
        httpupload.no_such_name  # noqa: B018


def test_dir_lists_the_exports() -> None:
    """``dir(httpupload)`` shows the lazy names before they are first used."""
    assert set(EXPORTS) <= set(dir(httpupload))


def test_the_client_exports_what_docs_client_md_lists() -> None:
    """``httpupload.client`` keeps every public name it had as one module."""
    documented = {
        "ALLOWED_HEADERS", "NS_UPLOAD", "FileTooLarge", "HttpError", "IQRequester",
        "NoAnswer", "NoUploadService", "ProgressCallback", "ProtocolError", "Slot",
        "SlotRefused", "TransferFailed", "UploadClient", "UploadError",
        "UploadService", "XmppError", "parse_slot", "slot_headers", "upload_file",
        "FileProducer", "DEFAULT_TIMEOUT", "DEFAULT_IDLE_TIMEOUT", "CHUNK_SIZE",
        "MAX_ERROR_BODY",
    }  # fmt: skip
    assert documented <= set(httpupload.client.__all__)
    for name in httpupload.client.__all__:
        assert getattr(httpupload.client, name) is not None


def _loaded_by(statement: str) -> list[str]:
    """The modules a fresh interpreter holds after running ``statement``."""
    script = f"import sys, json; {statement}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    loaded: list[str] = json.loads(out)
    return loaded


def _server_modules_in(loaded: list[str]) -> list[str]:
    return [
        name
        for name in loaded
        if any(name == m or name.startswith(m + ".") for m in SERVER_MODULES)
    ]


def test_importing_the_client_loads_no_server() -> None:
    """``import httpupload.client`` loads neither the web, service, metadata,
    storage or XMPP server modules, nor prometheus_client, nor twisted.web's
    server."""
    loaded = _loaded_by("import httpupload.client")
    assert "httpupload.client.api" in loaded
    assert _server_modules_in(loaded) == []


def test_the_send_command_loads_no_server() -> None:
    """``httpupload-send`` (its module) loads no server module either."""
    loaded = _loaded_by("import httpupload.client.send")
    assert "httpupload.client.login" in loaded
    assert _server_modules_in(loaded) == []


def test_importing_the_package_loads_only_the_wokkel_shim() -> None:
    """``import httpupload`` applies the wokkel shim and imports nothing else of
    the package until a name is used."""
    loaded = _loaded_by("import httpupload")
    ours = [name for name in loaded if name.startswith("httpupload")]
    assert ours == ["httpupload", "httpupload._wokkel_compat"]


def test_the_wokkel_shim_is_applied_before_the_client_imports_wokkel() -> None:
    """Importing the client first (nothing else before it) still finds wokkel's
    disco and data forms importable on current Twisted."""
    loaded = _loaded_by(
        "from httpupload.client import UploadClient; import wokkel.data_form"
    )
    assert "wokkel.disco" in loaded and "httpupload._wokkel_compat" in loaded
