"""Names the httpupload tap for twistd; the module is imported only when used."""

from twisted.application.service import ServiceMaker

httpupload = ServiceMaker(
    "httpupload",
    "httpupload.tap",
    "XEP-0363 HTTP File Upload service (XEP-0114 component + HTTP server)",
    "httpupload",
)
