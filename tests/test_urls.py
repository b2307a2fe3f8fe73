"""The strict file-URL parser behind take-down: whole URLs, never a path from a
fragment or query."""

from __future__ import annotations

from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from httpupload.slots import new_file_id, url_path
from httpupload.urls import MAX_URL_LENGTH, BadFileUrl, FileUrl, parse_file_url

GET_BASE = "https://download.example.org/files/"
PUT_BASE = "https://upload.example.org:8443/"
BASES = (GET_BASE, PUT_BASE)
ID_A = "A" * 32
ID_B = "B" * 32


def parsed(text: str) -> tuple[str, str]:
    result = parse_file_url(text, BASES)
    return result.file_id, result.filename


def test_get_and_put_urls_name_their_file() -> None:
    """A GET URL under get_url and a PUT URL (token and all) under public_url."""
    assert parsed(GET_BASE + url_path(ID_A, "my cat.jpg")) == (ID_A, "my cat.jpg")
    put = PUT_BASE + url_path(ID_A, "très.txt") + "?token=v2.k.p.m"
    assert parsed(put) == (ID_A, "très.txt")
    # Scheme and host in any case, the default port written out, the name
    # not percent-encoded (as a client may show it), spaces around.
    assert parsed(f"  HTTPS://Download.Example.ORG:443/files/{ID_A}/my cat.jpg\n") == (
        ID_A,
        "my cat.jpg",
    )


def test_a_fragment_never_names_another_file() -> None:
    """``URL_A#/<id B>/<name B>`` is refused; it never names B (the old parser did)."""
    text = GET_BASE + url_path(ID_A, "a.png") + f"#/{ID_B}/b.png"
    with pytest.raises(BadFileUrl, match="fragment"):
        parse_file_url(text, BASES)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "No URL"),
        ("upload.example.org/x/y", "absolute"),
        (f"ftp://download.example.org/files/{ID_A}/a", "scheme"),
        (f"https://elsewhere.example/files/{ID_A}/a", "not under"),
        (f"https://download.example.org:8080/files/{ID_A}/a", "not under"),
        (f"http://download.example.org/files/{ID_A}/a", "not under"),
        (f"https://download.example.org/other/{ID_A}/a", "not under"),
        (f"https://download.example.org/files/x/{ID_A}/a", "path"),
        (f"https://download.example.org/files/{ID_A}/a/../{ID_B}/b", "path"),
        (f"https://download.example.org/files/{ID_A}", "path"),
        ("https://download.example.org/files/short/a", "path"),
        (f"https://download.example.org/files/{ID_A}/a%2Fb", "path"),
        (f"https://download.example.org/files/{ID_A}/..", "path"),
        (f"https://me@download.example.org/files/{ID_A}/a", "user name"),
        (f"https://download.example.org:x/files/{ID_A}/a", "port"),
        (f"https://[::1/files/{ID_A}/a", "IPv6"),
        (f"https://download.example.org/files/{ID_A}/a?{ID_B}/b", "query"),
        (f"https://download.example.org/files/{ID_A}/a?token=t&x=/{ID_B}/b", "query"),
        (f"https://download.example.org/files/{ID_A}/a\tb", r"U\+0009"),
        (f"https://download.example.org/files/{ID_A}/a\u202eb", r"U\+202E"),
        ("https://download.example.org/files/" + "a" * MAX_URL_LENGTH, "longer"),
    ],
)
def test_what_is_not_a_file_url_is_refused_saying_why(text: str, reason: str) -> None:
    """Each rule has its own one-line reason."""
    with pytest.raises(BadFileUrl, match=reason) as refused:
        parse_file_url(text, BASES)
    assert "\n" not in refused.value.text


def test_the_longest_matching_base_is_used() -> None:
    """With one base below another, the path below the deeper base is the file."""
    bases = ("https://h.example/", "https://h.example/files/")
    result = parse_file_url(f"https://h.example/files/{ID_A}/a", bases)
    assert (result.file_id, result.base.path) == (ID_A, "/files/")
    result = parse_file_url(f"https://h.example/{ID_A}/a", bases)
    assert (result.file_id, result.base.path) == (ID_A, "/")


# -- properties ------------------------------------------------------------------

URL_CHARS = st.sampled_from(
    [*"/?#%@:[]&=.;~-_ aZ09", "%2F", "%23", "%3F", "\u202e", "\t", "é"]
)
url_like = st.builds(
    lambda scheme, host, path: scheme + host + path,
    st.sampled_from(["https://", "http://", "HTTPS://", "", "ftp://", "https:/"]),
    st.sampled_from(
        [
            "download.example.org",
            "upload.example.org:8443",
            "download.example.org:443",
            "u@download.example.org",
            "",
            "[::1]",
        ]
    ),
    st.lists(
        st.one_of(
            st.sampled_from(["/files", "/", f"/{ID_A}", f"/{ID_B}", "/a.png"]),
            URL_CHARS,
        ),
        max_size=12,
    ).map("".join),
)


@given(st.one_of(st.text(max_size=300), url_like))
def test_any_text_gets_a_file_or_a_reason(text: str) -> None:
    """Always an answer: a file whose id is in the URL's path, or BadFileUrl."""
    try:
        result = parse_file_url(text, BASES)
    except BadFileUrl as e:
        assert e.text and "\n" not in e.text
        return
    assert isinstance(result, FileUrl)
    assert "#" not in text
    before_query = text.strip().split("?", 1)[0]
    path = "/" + before_query.split("://", 1)[1].split("/", 1)[1]
    segment = path.rsplit("/", 1)[1]
    assert path == result.base.path + result.file_id + "/" + segment
    assert unquote(segment) == result.filename
    assert result.base.text in BASES


@given(
    name_a=st.sampled_from(["a.png", "my cat.jpg", "très.txt", "a#b", "x?y"]),
    separator=st.sampled_from(["#", "#/", "?", "?token=", "?token=t&", "&", ";", "/"]),
    tail=st.text(max_size=40),
    base=st.sampled_from(BASES),
)
def test_a_url_never_names_a_file_from_its_query_or_fragment(
    name_a: str, separator: str, tail: str, base: str
) -> None:
    """Whatever follows A's URL, the answer is A or a refusal, never B."""
    id_a, id_b = new_file_id(), new_file_id()
    text = base + url_path(id_a, name_a) + separator + f"/{id_b}/b.png" + tail
    try:
        result = parse_file_url(text, BASES)
    except BadFileUrl:
        return
    assert (result.file_id, result.filename) == (id_a, name_a)
