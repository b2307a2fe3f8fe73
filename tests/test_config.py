"""Reading the TOML configuration: defaults, and one clear error per bad key."""

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from httpupload.config import load_config, parse_config
from httpupload.errors import ConfigError


def minimal(**sections: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = {
        "component": {"jid": "upload.example.org", "secret": "s3cret"},
        "http": {"public_url": "https://upload.example.org/"},
        "storage": {"path": "/var/lib/httpupload"},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return data


def error_for(data: dict[str, Any], base: Path = Path("/etc")) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(data, base)
    return info.value


def test_defaults() -> None:
    """A minimal file gets the documented defaults."""
    config = parse_config(minimal(), Path("/etc"))
    assert config.component.server_host == "127.0.0.1"
    assert config.component.server_port == 5347
    assert config.http.listen == "tcp:5050:interface=127.0.0.1"
    assert config.http.get_url == "https://upload.example.org/"
    assert config.http.signing_key is None
    assert config.limits.max_file_size == 104857600
    assert config.limits.slot_lifetime == 300
    assert config.access.domains == ("example.org",)


def test_full_example_file_loads() -> None:
    """The example shipped in docs/ is a valid configuration."""
    config = load_config(Path(__file__).parent.parent / "docs/httpupload.example.toml")
    assert config.component.jid == "upload.example.org"
    assert config.access.domains == ("example.org",)


def test_base_urls_get_a_trailing_slash() -> None:
    """URLs are joined with slot paths, so a missing slash is added."""
    config = parse_config(
        minimal(http={"public_url": "https://h/up", "get_url": "https://d/x"}),
        Path("/"),
    )
    assert config.http.public_url == "https://h/up/"
    assert config.http.get_url == "https://d/x/"


def test_relative_storage_path_is_from_the_config_folder(tmp_path: Path) -> None:
    """A relative storage path is taken from the config file's folder."""
    (tmp_path / "c.toml").write_text(
        '[component]\njid = "upload.x.org"\nsecret = "a"\n'
        '[http]\npublic_url = "https://x.org/"\n[storage]\npath = "files"\n'
    )
    assert load_config(tmp_path / "c.toml").storage.path == tmp_path / "files"


def test_secret_file(tmp_path: Path) -> None:
    """secret_file is read and its trailing newline dropped."""
    (tmp_path / "secret").write_text("from-file\n")
    data = minimal()
    del data["component"]["secret"]
    data["component"]["secret_file"] = "secret"
    assert parse_config(data, tmp_path).component.secret == "from-file"


def test_secret_never_in_repr() -> None:
    """Secrets and the signing key stay out of reprs (and so out of logs)."""
    config = parse_config(minimal(http={"signing_key": "k" * 40}), Path("/"))
    assert "s3cret" not in repr(config)
    assert "kkkk" not in repr(config)


@pytest.mark.parametrize(
    ("data", "key", "words"),
    [
        (minimal(limits={"max_filesize": 5}), "[limits] max_filesize", "max_file_size"),
        ({**minimal(), "limit": {}}, "[limit]", "unknown section"),
        (
            minimal(limits={"max_file_size": "100MB"}),
            "[limits] max_file_size",
            "positive",
        ),
        (minimal(limits={"max_file_size": 0}), "[limits] max_file_size", "positive"),
        (minimal(limits={"slot_lifetime": True}), "[limits] slot_lifetime", "positive"),
        (minimal(component={"server_port": 70000}), "[component] server_port", "65535"),
        (minimal(component={"jid": "user@upload.x"}), "[component] jid", "bare domain"),
        (minimal(component={"jid": ""}), "[component] jid", "non-empty"),
        (minimal(http={"public_url": "ftp://x/"}), "[http] public_url", "http(s)"),
        (minimal(http={"public_url": "https://x/?a=b"}), "[http] public_url", "query"),
        (minimal(http={"signing_key": "short"}), "[http] signing_key", "32 bytes"),
        (minimal(access={"domains": []}), "[access] domains", "non-empty"),
        (minimal(access={"domains": "example.org"}), "[access] domains", "list"),
        (
            minimal(component={"secret_file": "/nonexistent/x"}),
            "[component] secret",
            "either",
        ),
    ],
)
def test_bad_values_name_their_key(data: dict[str, Any], key: str, words: str) -> None:
    """Each bad value raises one ConfigError naming the key and the problem."""
    error = error_for(data)
    assert error.key == key
    assert words in str(error)
    assert "\n" not in str(error)


@pytest.mark.parametrize(
    ("section", "key"),
    [("component", "jid"), ("http", "public_url"), ("storage", "path")],
)
def test_missing_required_keys(section: str, key: str) -> None:
    """Each required key is reported by name when missing."""
    data = minimal()
    del data[section][key]
    assert error_for(data).key == f"[{section}] {key}"


def test_missing_secret() -> None:
    """Without secret or secret_file the error names both ways to give it."""
    data = minimal()
    del data["component"]["secret"]
    error = error_for(data)
    assert error.key == "[component] secret"
    assert "secret_file" in str(error)


def test_unreadable_secret_file(tmp_path: Path) -> None:
    """A secret_file that cannot be read is named with the reason."""
    data = minimal()
    del data["component"]["secret"]
    data["component"]["secret_file"] = "missing.secret"
    error = error_for(data, tmp_path)
    assert error.key == "[component] secret_file"
    assert "No such file" in str(error)


def test_domains_default_needs_a_parent_domain() -> None:
    """A single-label component JID has no parent domain to default to."""
    error = error_for(minimal(component={"jid": "upload"}))
    assert error.key == "[access] domains"


def test_invalid_toml(tmp_path: Path) -> None:
    """A file that is not TOML is refused with the parser's position."""
    path = tmp_path / "bad.toml"
    path.write_text("[component\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)


@given(st.integers())
def test_positive_sizes(value: int) -> None:
    """max_file_size takes exactly the positive integers."""
    data = minimal(limits={"max_file_size": value})
    if value > 0:
        assert parse_config(data, Path("/")).limits.max_file_size == value
    else:
        assert error_for(data).key == "[limits] max_file_size"
