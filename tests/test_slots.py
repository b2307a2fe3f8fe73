"""Slot tokens and file URLs: pure functions, checked with hypothesis."""

from dataclasses import replace

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from twisted.internet.task import Clock

from httpupload.errors import BadSlotRequest, InvalidSlot
from httpupload.slots import (
    FILE_ID_RE,
    Slot,
    SlotSigner,
    check_content_type,
    check_filename,
    new_file_id,
    parse_url_path,
    url_path,
)

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
    spliced = ".".join(forged.split(".")[:2] + token.split(".")[2:])
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


@pytest.mark.parametrize("token", ["", "v1", "v1.a.b", "v2.a.b", "v1..", "x" * 500])
def test_garbage_tokens(token: str) -> None:
    """Malformed tokens are refused, never crash."""
    s, _ = signer()
    with pytest.raises(InvalidSlot):
        s.decode(token)


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
