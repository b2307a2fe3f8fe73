"""Slot tokens and file URLs: pure functions, checked with hypothesis."""

import hashlib
import hmac
import json
from dataclasses import replace
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from twisted.internet.task import Clock

from httpupload.errors import BadSlotRequest, InvalidSlot
from httpupload.keys import KeyRing
from httpupload.slots import (
    FILE_ID_RE,
    TOKEN_PARAMETER,
    Slot,
    SlotSigner,
    SlotUrls,
    check_content_type,
    check_filename,
    new_file_id,
    parse_url_path,
    url_path,
)
from httpupload.slots import _b64encode as b64encode

KEY = b"k" * 32


def valid_filename(name: str) -> bool:
    try:
        check_filename(name)
    except BadSlotRequest:
        return False
    return True


filenames = st.text(min_size=1, max_size=80).filter(valid_filename)
content_types = st.one_of(
    st.none(),
    st.sampled_from(["image/jpeg", "text/plain; charset=utf-8", "application/x-foo"]),
)
slots = st.builds(
    Slot,
    file_id=st.builds(new_file_id),
    filename=filenames,
    size=st.integers(min_value=1, max_value=2**53),
    content_type=content_types,
    expires=st.integers(min_value=0, max_value=2**40),
    owner=st.sampled_from(["romeo@montague.tld", "juliet@capulet.tld"]),
)


def signer(now: float = 1000.0) -> tuple[SlotSigner, Clock]:
    clock = Clock()
    clock.advance(now)
    return SlotSigner(KEY, clock), clock


def test_file_ids_are_long_and_random() -> None:
    """File ids carry at least 128 random bits and never repeat."""
    ids = {new_file_id() for _ in range(1000)}
    assert len(ids) == 1000
    for file_id in ids:
        assert FILE_ID_RE.fullmatch(file_id)
        assert len(file_id) * 6 >= 128


def test_url_path_example_from_the_xep() -> None:
    """Non-ASCII and spaces are percent-encoded as UTF-8, the extension kept."""
    assert url_path("abc", "très cool.jpg") == "abc/tr%C3%A8s%20cool.jpg"


@given(slots)
def test_token_round_trip(slot: Slot) -> None:
    """A signed slot decodes to the same slot."""
    s, _ = signer()
    assert s.decode(s.sign(slot)) == slot


@given(slots, st.data())
def test_any_changed_field_is_refused(slot: Slot, data: st.DataObject) -> None:
    """A token re-signed by anyone without the key, with any field changed, fails."""
    s, _ = signer()
    other = data.draw(slots)
    field = data.draw(st.sampled_from(list(Slot.__dataclass_fields__)))
    changed = replace(slot, **{field: getattr(other, field)})
    assume(changed != slot)
    token = s.sign(slot)
    forged = SlotSigner(b"x" * 32, Clock()).sign(changed)
    # The forger's payload with the genuine signature, and the forger's whole token.
    spliced = ".".join(forged.split(".")[:3] + token.split(".")[3:])
    for bad in (forged, spliced):
        with pytest.raises(InvalidSlot):
            s.decode(bad)


@given(slots, st.data())
def test_any_changed_character_is_refused(slot: Slot, data: st.DataObject) -> None:
    """Changing, dropping or adding one character anywhere breaks the token."""
    s, _ = signer()
    token = s.sign(slot)
    i = data.draw(st.integers(min_value=0, max_value=len(token) - 1))
    char = data.draw(st.characters(codec="ascii"))
    assume(char != token[i])
    for bad in (token[:i] + char + token[i + 1 :], token[:i] + token[i + 1 :]):
        with pytest.raises(InvalidSlot):
            s.decode(bad)


def test_verify_checks_url_and_expiry() -> None:
    """A genuine token is refused for another URL or once expired."""
    s, clock = signer()
    slot, token = s.mint("a.txt", 10, None, "romeo@montague.tld", lifetime=300)
    assert s.verify(token, slot.file_id, "a.txt") == slot
    with pytest.raises(InvalidSlot, match="another URL"):
        s.verify(token, slot.file_id, "b.txt")
    with pytest.raises(InvalidSlot, match="another URL"):
        s.verify(token, new_file_id(), "a.txt")
    clock.advance(299)
    s.verify(token, slot.file_id, "a.txt")
    clock.advance(1)
    with pytest.raises(InvalidSlot, match="expired"):
        s.verify(token, slot.file_id, "a.txt")


@pytest.mark.parametrize(
    "token",
    [
        "",
        "v1",
        "v1.a.b",
        "v2.a.b",
        "v1..",
        "v2...",
        "v2.default..",
        "x" * 500,
        "v2.é.a.b",
    ],
)
def test_garbage_tokens(token: str) -> None:
    """Malformed tokens are refused, never crash."""
    s, _ = signer()
    with pytest.raises(InvalidSlot):
        s.decode(token)


@given(st.text(max_size=200))
def test_any_text_is_refused_cleanly(token: str) -> None:
    """Arbitrary text (non-ASCII too) is refused with InvalidSlot, never crashes."""
    s, _ = signer()
    with pytest.raises(InvalidSlot):
        s.decode(token)


KEY_A = b"a" * 32
KEY_B = b"b" * 32
key_ids = st.from_regex(r"[A-Za-z0-9_-]{1,32}", fullmatch=True)


def test_tokens_carry_the_current_key_id() -> None:
    """A token is v2.<kid>.<payload>.<mac>, naming the ring's current key."""
    ring = KeyRing("2026-11", {"2026-05": KEY_A, "2026-11": KEY_B})
    s = SlotSigner(ring, Clock())
    _, token = s.mint("a.txt", 1, None, "romeo@montague.tld", lifetime=60)
    version, kid, _, _ = token.split(".")
    assert (version, kid) == ("v2", "2026-11")
    assert SlotSigner(b"k" * 32, Clock()).sign(s.decode(token)).split(".")[1] == (
        "default"
    )


@given(slots, st.integers(min_value=0, max_value=3), st.data())
def test_any_changed_part_of_a_v2_token_is_refused(
    slot: Slot, index: int, data: st.DataObject
) -> None:
    """Replacing any of the four parts, key id included, by any other value fails."""
    ring = KeyRing("k1", {"k1": KEY_A, "k2": KEY_B})
    s = SlotSigner(ring, Clock())
    parts = s.sign(slot).split(".")
    candidates = [
        key_ids,
        st.sampled_from(["k1", "k2", "default", "v1", "v2"]),
        st.text(alphabet="ABCxyz019_-", max_size=60),
    ]
    replacement = data.draw(st.one_of(candidates))
    assume(replacement != parts[index])
    parts[index] = replacement
    with pytest.raises(InvalidSlot):
        s.decode(".".join(parts))


@given(slots, key_ids, key_ids)
def test_rotation_keeps_old_slots_until_the_key_is_retired(
    slot: Slot, old_id: str, new_id: str
) -> None:
    """A token of key A verifies once B signs while A is listed, not after A goes."""
    assume(old_id != new_id)
    before = SlotSigner(KeyRing.single(KEY_A, old_id), Clock())
    token = before.sign(slot)
    during = SlotSigner(KeyRing(new_id, {old_id: KEY_A, new_id: KEY_B}), Clock())
    assert during.decode(token) == slot
    assert during.sign(slot).split(".")[1] == new_id
    after = SlotSigner(KeyRing.single(KEY_B, new_id), Clock())
    with pytest.raises(InvalidSlot, match="retired"):
        after.decode(token)
    assert after.decode(during.sign(slot)) == slot


def v1_token(slot: Slot, key: bytes) -> str:
    """A token as minted before key ids (the v1 format), for upgrade tests."""
    payload = json.dumps(
        {
            "i": slot.file_id,
            "n": slot.filename,
            "s": slot.size,
            "t": slot.content_type,
            "e": slot.expires,
            "o": slot.owner,
        },
        separators=(",", ":"),
        sort_keys=True,
        ensure_ascii=False,
    )
    signed = "v1." + b64encode(payload.encode("utf-8"))
    mac = hmac.new(key, signed.encode("ascii"), hashlib.sha256).digest()
    return f"{signed}.{b64encode(mac)}"


@given(slots)
def test_v1_tokens_verify_with_the_legacy_key(slot: Slot) -> None:
    """Slots minted before the upgrade keep working while the legacy key is listed."""
    token = v1_token(slot, KEY_A)
    assert SlotSigner(KEY_A, Clock()).decode(token) == slot
    rotated = KeyRing("2026-11", {"default": KEY_A, "2026-11": KEY_B})
    assert SlotSigner(rotated, Clock()).decode(token) == slot
    with pytest.raises(InvalidSlot, match="retired"):
        SlotSigner(KeyRing.single(KEY_A, "2026-11"), Clock()).decode(token)
    with pytest.raises(InvalidSlot, match="signature"):
        SlotSigner(KEY_B, Clock()).decode(token)


def test_signer_refuses_a_short_key() -> None:
    """A key too short for HMAC to mean anything is refused at construction."""
    with pytest.raises(ValueError, match="short"):
        SlotSigner(b"k" * 8, Clock())


@given(st.builds(new_file_id), filenames)
def test_url_path_round_trip(file_id: str, filename: str) -> None:
    """Any valid name survives encoding into a URL and parsing back."""
    path = url_path(file_id, filename)
    assert path.isascii()
    assert parse_url_path(("/" + path).encode()) == (file_id, filename)
    assert parse_url_path(("/prefix/" + path + "?q=1").encode()) == (file_id, filename)


@given(st.binary(max_size=200))
def test_parse_url_path_never_crashes(path: bytes) -> None:
    """Arbitrary request paths parse to a valid pair or to None."""
    result = parse_url_path(path)
    if result is not None:
        assert FILE_ID_RE.fullmatch(result[0])
        assert valid_filename(result[1])


@pytest.mark.parametrize(
    "path",
    [
        b"/",
        b"/x",
        b"/short/a.txt",
        b"/" + b"A" * 32 + b"/..",
        b"/" + b"A" * 32 + b"/a%2Fb",
    ],
)
def test_parse_url_path_refuses(path: bytes) -> None:
    """Paths that are not file URLs, or that would escape a folder, give None."""
    assert parse_url_path(path) is None


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("", "empty"),
        (".", "'.'"),
        ("..", "'.'"),
        ("a/b", "'/'"),
        ("a\\b", "'/'"),
        ("a\x00b", "control"),
        ("a\nb", "control"),
        ("a\x85b", "control"),
        ("é" * 128, "255 bytes"),
    ],
)
def test_bad_filenames(name: str, words: str) -> None:
    """Each bad file name is refused with a text saying why."""
    with pytest.raises(BadSlotRequest, match=words):
        check_filename(name)


def test_longest_filename() -> None:
    """255 bytes of UTF-8 is allowed."""
    assert check_filename("é" * 127 + "a") == "é" * 127 + "a"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("  ", None),
        ("image/png", "image/png"),
        ("text/plain; charset=utf-8", "text/plain; charset=utf-8"),
        ('text/plain; charset="utf-8"', 'text/plain; charset="utf-8"'),
    ],
)
def test_content_types(value: str | None, expected: str | None) -> None:
    """Valid media types pass; empty counts as absent."""
    assert check_content_type(value) == expected


@pytest.mark.parametrize("value", ["image", "image/", "/png", "a/b\r\nX: y", "a b/c"])
def test_bad_content_types(value: str) -> None:
    """Anything that is not a media type (or could inject a header) is refused."""
    with pytest.raises(BadSlotRequest, match="content-type"):
        check_content_type(value)


@given(slots)
def test_slot_urls_carry_the_path_and_the_token(slot: Slot) -> None:
    """The PUT URL is base, path and ?token=; the GET URL base and path; the
    slot header the same token as a bearer token, which the HTTP side reads."""
    urls = SlotUrls("https://put.example/up/", "https://get.example/")
    token = signer()[0].sign(slot)
    put = urlsplit(urls.put_url(slot, token))
    assert put.path == "/up/" + slot.path
    assert parse_qs(put.query, strict_parsing=True) == {TOKEN_PARAMETER: [token]}
    assert parse_url_path(put.path.encode("ascii")) == (slot.file_id, slot.filename)
    assert urls.get_url(slot) == "https://get.example/" + slot.path
    assert urls.put_headers(token) == {"Authorization": f"Bearer {token}"}
