"""The XMPP side: disco, slot requests, and the XEP-0114 component link."""

import httpupload._wokkel_compat  # noqa: F401  (before any wokkel import)
