"""The keyring: which key signs, which keys still check, and the generated key."""

from pathlib import Path

import pytest

from httpupload.backends import signing_keys
from httpupload.config import Config, parse_config
from httpupload.keys import (
    KEY_FILE_NAME,
    LEGACY_KEY_ID,
    KeyRing,
    load_or_create_signing_key,
)

KEY_A = b"a" * 32
KEY_B = b"b" * 32


def test_ring_signs_with_the_current_key_and_knows_the_others() -> None:
    """current_key is the named key; get() finds every listed id, None for others."""
    ring = KeyRing("new", {"old": KEY_A, "new": KEY_B})
    assert ring.current_id == "new"
    assert ring.current_key == KEY_B
    assert ring.get("old") == KEY_A
    assert ring.get("gone") is None
    assert ring.ids == ("new", "old")


def test_single_key_has_the_legacy_id() -> None:
    """A key given alone gets the id that also checks v1 tokens."""
    ring = KeyRing.single(KEY_A)
    assert ring.current_id == LEGACY_KEY_ID == "default"
    assert ring.get("default") == KEY_A


def test_repr_shows_ids_not_keys() -> None:
    """The keys stay out of repr, and so out of logs."""
    text = repr(KeyRing("new", {"old": KEY_A, "new": KEY_B}))
    assert "aaaa" not in text
    assert "bbbb" not in text
    assert "'old'" in text
    assert "'new'" in text


def test_ring_is_immutable_and_compares_by_value() -> None:
    """A ring built from a dict does not change when the dict does."""
    keys = {"a": KEY_A}
    ring = KeyRing("a", keys)
    keys["b"] = KEY_B
    assert ring.get("b") is None
    assert ring == KeyRing.single(KEY_A, "a")
    assert ring != KeyRing.single(KEY_B, "a")
    assert hash(ring) == hash(KeyRing.single(KEY_A, "a"))


@pytest.mark.parametrize(
    ("current", "keys", "words"),
    [
        ("x", {"a": KEY_A}, "current id"),
        ("a.b", {"a.b": KEY_A}, "bad key id"),
        ("", {"": KEY_A}, "bad key id"),
        ("a" * 33, {"a" * 33: KEY_A}, "bad key id"),
        ("a", {"a": b"short"}, "too short"),
    ],
)
def test_bad_rings_are_refused(
    current: str, keys: dict[str, bytes], words: str
) -> None:
    """An unknown current id, a bad id or a short key is a ValueError."""
    with pytest.raises(ValueError, match=words):
        KeyRing(current, keys)


def single_node(folder: Path) -> Config:
    """A one-node config without a signing key: the key is generated."""
    raw = {
        "component": {"jid": "upload.example.org", "secret": "s"},
        "http": {"public_url": "https://upload.example.org/"},
        "storage": {"path": str(folder)},
    }
    return parse_config(raw, folder)


def test_generated_key_is_kept_and_ringed(tmp_path: Path) -> None:
    """The generated key is made once, owner-only, read back the same, and
    signs as the one key of the node's ring under the legacy id."""
    key = load_or_create_signing_key(tmp_path)
    assert len(key) >= 32
    assert (tmp_path / KEY_FILE_NAME).stat().st_mode & 0o077 == 0
    assert load_or_create_signing_key(tmp_path) == key
    ring = signing_keys(single_node(tmp_path))
    assert ring == KeyRing.single(key)
    assert ring.current_id == LEGACY_KEY_ID


def test_a_kept_key_readable_by_others_is_made_owner_only(tmp_path: Path) -> None:
    """A signing.key left 0644 (by hand, or a restore) is narrowed to 0600 at start."""
    key = load_or_create_signing_key(tmp_path)
    (tmp_path / KEY_FILE_NAME).chmod(0o644)
    assert load_or_create_signing_key(tmp_path) == key
    assert (tmp_path / KEY_FILE_NAME).stat().st_mode & 0o777 == 0o600
