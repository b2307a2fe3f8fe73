"""What a slot request may carry: dates, numbers, header values, file names.

Everything a client puts in a ``<request/>`` becomes a signed slot, a record
and, later, HTTP headers and listings; each value is judged here, and every
malformed request gets the XEP's error stanza, never an escaped exception.
"""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_xmpp_handler import Service, error_of, request
from twisted.logger import capturedLogs
from twisted.web.http_headers import Headers
from twisted.words.xish import domish

from httpupload.errors import BadSlotRequest, SlotRequestError
from httpupload.slots import (
    _MEDIA_TYPE_RE,
    ALLOWED_FORMAT_CHARACTERS,
    MAX_CONTENT_TYPE_LENGTH,
    MAX_FILENAME_BYTES,
    REFUSED_NAME_CATEGORIES,
    check_content_type,
    check_new_filename,
    media_type,
    new_file_id,
    parse_url_path,
    url_path,
)
from httpupload.xmpp.stanzas import (
    MAX_ECHOED_PURPOSE,
    NAMESPACES,
    NS_PURPOSE,
    NS_UPLOAD,
    parse_request,
)

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
JAN_1_2027 = 1_798_761_600.0


@pytest.fixture(params=["dispatch", "wire"])
def service(request: pytest.FixtureRequest) -> Service:
    return Service(request.param)


def ephemeral(stamp: str | None) -> domish.Element:
    element = request(filename="a.txt", size="3")
    child = element.addElement((NS_PURPOSE, "ephemeral"))
    if stamp is not None:
        child["expire-before"] = stamp
    return element


# ---- dates (XEP-0082)


@pytest.mark.parametrize(
    "stamp",
    [
        "2027-W01-1T00:00:00Z",
        "20270101T000000Z",
        "2027-01-01 00:00:00Z",
        "2027-01-01T00:00Z",
        "2027-01-01T00:00:00+0100",
        "2027-01-01T00:00:00",
        " 2027-01-01T00:00:00Z",
        "",
    ],
)
def test_lenient_expire_before_is_a_bad_request(service: Service, stamp: str) -> None:
    """An expire-before that is not exactly XEP-0082 gets modify/bad-request."""
    reply = service.ask(ephemeral(stamp))
    error_type, condition, text = error_of(reply)
    assert (error_type, condition) == ("modify", "bad-request")
    assert text is not None and "expire-before" in text and "XEP-0082" in text


def test_missing_expire_before_is_a_bad_request(service: Service) -> None:
    """The ephemeral purpose without expire-before gets modify/bad-request."""
    assert error_of(service.ask(ephemeral(None)))[:2] == ("modify", "bad-request")


@pytest.mark.parametrize(
    "stamp",
    ["2027-01-01T00:00:00Z", "2027-01-01T01:00:00+01:00", "2027-01-01T00:00:00.000Z"],
)
def test_exact_expire_before_is_read(stamp: str) -> None:
    """An XEP-0082 stamp, in any zone, with or without a fraction, is the deadline."""
    parsed = parse_request(ephemeral(stamp), NOW)
    assert (parsed.purpose, parsed.expire_before) == ("ephemeral", JAN_1_2027)


def test_exact_expire_before_gets_a_slot(service: Service) -> None:
    """A valid ephemeral request is granted."""
    assert service.ask(ephemeral("2099-01-01T00:00:00Z"))["type"] == "result"


# ---- numbers


@pytest.mark.parametrize(
    "size",
    [
        "+12",
        "-12",
        "-0",
        " 12",
        "12 ",
        "1 2",
        "١٢٣",  # Arabic-Indic digits
        "\uff11\uff12",  # full-width digits
        "²",
        "1_000",
        "0x10",
        "1e3",
        "1" * 21,
        "1" * 5000,
        "0" * 5000 + "1",
    ],
)
def test_sizes_other_than_plain_digits_are_refused(service: Service, size: str) -> None:
    """A size with a sign, spaces, other digits or too many digits: bad-request."""
    reply = service.ask(request(filename="a.txt", size=size))
    error_type, condition, text = error_of(reply)
    assert (error_type, condition) == ("modify", "bad-request")
    assert text is not None and "size" in text


def test_longest_size_is_judged_against_the_limit(service: Service) -> None:
    """Twenty digits are read, and a size that large is too large."""
    reply = service.ask(request(filename="a.txt", size="9" * 20))
    assert error_of(reply)[:2] == ("modify", "not-acceptable")


# ---- header values: content-type


@pytest.mark.parametrize(
    ("content_type", "words"),
    [
        ('text/plain; name="€"', "ASCII"),
        ("text/plain; name=é", "ASCII"),
        ("imagé/png", "ASCII"),
        ("text/plain; a=\x01", "control"),
        ("text/plain; a=b\x7f", "control"),
        ("text/plain; a=" + "b" * MAX_CONTENT_TYPE_LENGTH, "longer than"),
        ("text/plain; a", "media type"),
        ("text/plain; =b", "media type"),
        ('text/plain; a="b', "media type"),
        ('text/plain; a="b"c', "media type"),
        ("text/plain, text/html", "media type"),
        ("text/plain; a=b c", "media type"),
    ],
)
def test_content_types_that_cannot_be_served_are_refused(
    service: Service, content_type: str, words: str
) -> None:
    """A type that could not go out as a Content-Type header: bad-request saying why."""
    if service.mode == "wire" and any(c in content_type for c in "\x01"):
        pytest.skip("an XML 1.0 stream cannot carry U+0001")
    reply = service.ask(request(filename="a.txt", size="3", content_type=content_type))
    error_type, condition, text = error_of(reply)
    assert (error_type, condition) == ("modify", "bad-request")
    assert text is not None and "content-type" in text and words in text


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain;charset=utf-8",
        'text/plain; name="a \\"quoted\\" name"',
        "text/plain;",
        "text/plain; ;charset=utf-8",
        "application/vnd.example+json; v=1",
    ],
)
def test_rfc_9110_media_types_are_taken(content_type: str) -> None:
    """RFC 9110 media types (quoted pairs, empty parameters too) are kept as given."""
    assert check_content_type(content_type) == content_type


ANY_TEXT = st.characters(codec=None)  # surrogates included


@settings(max_examples=500)
@given(
    st.one_of(
        st.text(ANY_TEXT, max_size=300),
        st.builds(
            "{}/{};{}".format,
            st.from_regex(r"[a-z]{1,8}", fullmatch=True),
            st.from_regex(r"[a-z+.-]{1,8}", fullmatch=True),
            st.text(ANY_TEXT, max_size=40),
        ),
    )
)
def test_content_type_check_answers_anything(text: str) -> None:
    """Any text is absent, refused, or a type that encodes as a header value."""
    try:
        checked = check_content_type(text)
    except BadSlotRequest as e:
        assert "content-type" in e.text
        return
    if checked is None:
        assert not text.strip(" \t")
        return
    assert len(checked) <= MAX_CONTENT_TYPE_LENGTH
    raw = checked.encode("ascii")
    assert not set(raw) & {0, 10, 13}
    headers = Headers()
    headers.addRawHeader(b"Content-Type", raw)
    assert headers.getRawHeaders(b"Content-Type") == [raw]
    assert media_type(checked).count("/") == 1


@given(st.from_regex(_MEDIA_TYPE_RE, fullmatch=True))
def test_generated_media_types_are_taken(value: str) -> None:
    """Every media type of the grammar, within the length bound, is taken unchanged."""
    stripped = value.strip(" \t")
    if len(stripped) > MAX_CONTENT_TYPE_LENGTH:
        return
    assert check_content_type(value) == stripped


# ---- file names


@pytest.mark.parametrize(
    ("char", "kind"),
    [
        ("\u202e", "format"),  # RIGHT-TO-LEFT OVERRIDE
        ("\u2066", "format"),  # LEFT-TO-RIGHT ISOLATE
        ("\u200b", "format"),  # ZERO WIDTH SPACE
        ("\ufeff", "format"),  # BYTE ORDER MARK
        ("\u00ad", "format"),  # SOFT HYPHEN
        ("\ue000", "private-use"),
        ("\U000f0000", "private-use"),
        ("\u0378", "unassigned"),
        ("\u2028", "line separator"),
        ("\u2029", "paragraph separator"),
        ("\x85", "control"),
        ("\ud800", "surrogate"),
    ],
)
def test_names_with_invisible_or_reordering_characters_are_refused(
    service: Service, char: str, kind: str
) -> None:
    """A file name holding such a character: bad-request naming it and its kind."""
    if service.mode == "wire" and char == "\ud800":
        pytest.skip("an XML stream cannot carry a lone surrogate")
    name = f"invoice{char}fdp.exe"
    reply = service.ask(request(filename=name, size="3"))
    error_type, condition, text = error_of(reply)
    assert (error_type, condition) == ("modify", "bad-request")
    assert text is not None and "filename" in text
    assert f"U+{ord(char):04X}" in text and kind in text


@pytest.mark.parametrize(
    "name",
    [
        "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645.txt",  # Persian, with ZWNJ
        "\U0001f468\u200d\U0001f469\u200d\U0001f467.jpg",  # an emoji ZWJ sequence
    ],
)
def test_names_written_with_joiners_are_granted(service: Service, name: str) -> None:
    """ZWNJ and ZWJ reorder nothing and words need them: such names get a slot."""
    reply = service.ask(request(filename=name, size="3"))
    assert reply.getAttribute("type") == "result", reply.toXml()


def test_stored_names_with_format_characters_are_still_served() -> None:
    """A name an earlier version granted still parses from its URL (nothing is lost)."""
    file_id = new_file_id()
    name = "invoice\u202efdp.exe"
    assert parse_url_path(f"/{url_path(file_id, name)}".encode("ascii")) == (
        file_id,
        name,
    )


@settings(max_examples=500)
@given(st.text(ANY_TEXT, min_size=1, max_size=80))
def test_accepted_names_round_trip_and_hold_nothing_refused(name: str) -> None:
    """Any name the slot check takes is clean and comes back from its URL path."""
    try:
        checked = check_new_filename(name)
    except BadSlotRequest as e:
        assert "filename" in e.text
        return
    assert checked == name
    assert not any(
        unicodedata.category(c) in REFUSED_NAME_CATEGORIES
        and c not in ALLOWED_FORMAT_CHARACTERS
        for c in name
    )
    assert len(name.encode("utf-8")) <= MAX_FILENAME_BYTES
    file_id = new_file_id()
    path = f"/{url_path(file_id, name)}".encode("ascii")
    assert parse_url_path(path) == (file_id, name)


# ---- other client-chosen values


def test_long_unknown_purpose_is_not_echoed(service: Service) -> None:
    """An unknown purpose is named in the error only when it is short."""
    short = request(filename="a.txt", size="3")
    short.addElement((NS_PURPOSE, "holiday"))
    assert "holiday" in (error_of(service.ask(short))[2] or "")
    name = "x" * (MAX_ECHOED_PURPOSE + 1)
    long = request(filename="a.txt", size="3")
    long.addElement((NS_PURPOSE, name))
    error_type, condition, text = error_of(service.ask(long))
    assert (error_type, condition) == ("cancel", "feature-not-implemented")
    assert text is not None and name not in text


# ---- anything at all


TEXT = st.text(ANY_TEXT, max_size=40)
SIZES = st.one_of(TEXT, st.integers(-(10**30), 10**30).map(str), st.just("1" * 5000))
STAMPS = st.one_of(
    TEXT,
    st.from_regex(
        r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,12})?"
        r"(Z|[+-][0-9]{2}:?[0-9]{2})",
        fullmatch=True,
    ),
)
REQUESTS = st.fixed_dictionaries(
    {"namespace": st.sampled_from(NAMESPACES)},
    optional={
        "filename": TEXT,
        "size": SIZES,
        "content-type": TEXT,
        "purpose": st.one_of(
            st.sampled_from(["message", "profile", "permanent", "ephemeral", "x"]),
            st.from_regex(r"[a-z][a-z0-9-]{0,60}", fullmatch=True),
        ),
        "expire-before": STAMPS,
    },
)


def build(fields: dict[str, str]) -> domish.Element:
    """A ``<request/>`` in the given namespace, values as attributes or children."""
    namespace = fields["namespace"]
    element = domish.Element((namespace, "request"))
    for name in ("filename", "size", "content-type"):
        if name not in fields:
            continue
        if namespace == NS_UPLOAD:
            element[name] = fields[name]
        else:
            element.addElement(name, content=fields[name])
    if "purpose" in fields:
        child = element.addElement((NS_PURPOSE, fields["purpose"]))
        if "expire-before" in fields:
            child["expire-before"] = fields["expire-before"]
    return element


@settings(max_examples=400)
@given(REQUESTS)
def test_request_parser_answers_anything(fields: dict[str, str]) -> None:
    """Any request parses to bounded, servable values or to a slot request error."""
    try:
        parsed = parse_request(build(fields), NOW)
    except SlotRequestError as e:
        assert e.text and len(e.text) < 200
        return
    assert 0 < parsed.size < 10**20
    assert check_new_filename(parsed.filename) == parsed.filename
    if parsed.content_type is not None:
        parsed.content_type.encode("ascii")
    if parsed.expire_before is not None:
        assert parsed.expire_before > NOW


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(REQUESTS, st.sampled_from(["romeo@montague.tld/x", "/x", "a@x..y/z", ""]))
def test_every_request_gets_the_xeps_answer(
    fields: dict[str, str], sender: str
) -> None:
    """Any request gets one reply, a slot or a stanza error; no failure is logged."""
    service = Service("dispatch")
    with capturedLogs() as events:
        reply = service.ask(build(fields), sender=sender)
    assert not [e for e in events if "log_failure" in e]
    if reply["type"] == "result":
        assert reply.slot is not None
        return
    assert error_of(reply)[1] != "internal-server-error"
