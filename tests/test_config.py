"""Reading the TOML configuration: defaults, and one clear error per bad key."""

import socket
import string
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from httpupload.config import (
    KNOWN_KEYS,
    MetadataConfig,
    S3Settings,
    load_config,
    parse_config,
)
from httpupload.errors import ConfigError
from httpupload.keys import KeyRing


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
    assert config.http.signing_keys is None
    assert config.limits.max_file_size == 104857600
    assert config.limits.slot_lifetime == 300
    assert config.access.domains == ("example.org",)


def test_quotas_default_to_a_daily_budget_and_few_unused_slots() -> None:
    """Without [quotas], a user may upload 10 x max_file_size per day and hold
    10 unused slots; the budget follows a given max_file_size; 0 lifts either."""
    config = parse_config(minimal(), Path("/etc"))
    assert config.quotas.window == 86400
    assert config.quotas.user.bytes_per_window == 10 * 104857600
    assert config.quotas.pending_slots == 10
    assert config.quotas.user.files_per_window == config.quotas.user.total_bytes == 0
    config = parse_config(minimal(limits={"max_file_size": 5000}), Path("/etc"))
    assert config.quotas.user.bytes_per_window == 50000
    config = parse_config(
        minimal(quotas={"bytes_per_window": 0, "pending_slots": 0}), Path("/etc")
    )
    assert config.quotas.user.bytes_per_window == 0
    assert config.quotas.pending_slots == 0
    error = error_for(minimal(quotas={"pending_slots": -1}))
    assert error.key == "[quotas] pending_slots" and "non-negative" in str(error)
    typo = error_for(minimal(quotas={"pending_slot": 1}))
    assert typo.key == "[quotas] pending_slot" and "pending_slots" in str(typo)


def test_full_example_file_loads() -> None:
    """The example shipped in docs/ is a valid configuration."""
    config = load_config(Path(__file__).parent.parent / "docs/httpupload.example.toml")
    assert config.component.jid == "upload.example.org"
    assert config.access.domains == ("example.org",)
    assert config.quotas.user.bytes_per_window == 10 * config.limits.max_file_size
    assert config.quotas.pending_slots == 10


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


# -- scale-out: storage and metadata backends, node roles, signing keys -------

KEY = "k" * 40
PG = {"backend": "postgresql", "dsn": "postgresql://up:pw@db/httpupload"}
S3: dict[str, Any] = {"backend": "s3", "s3": {"bucket": "uploads"}}


def scaled(**sections: dict[str, Any]) -> dict[str, Any]:
    """A minimal config for S3 + PostgreSQL with a configured signing key."""
    data = minimal(metadata=PG, http={"signing_key": KEY})
    data["storage"] = dict(S3, s3=dict(S3["s3"]))
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return data


def test_scale_out_defaults() -> None:
    """Without the new tables: filesystem, SQLite, both roles, host name."""
    config = parse_config(minimal(), Path("/etc"))
    assert config.storage.backend == "filesystem"
    assert config.storage.path == Path("/var/lib/httpupload")
    assert config.storage.s3 is None
    assert config.metadata == MetadataConfig(backend="sqlite", dsn=None, threads=4)
    assert config.node.roles == ("component", "http")
    assert config.node.runs_component and config.node.runs_http
    assert config.node.name == socket.gethostname()
    assert config.http.signing_keys is None


def test_s3_settings_from_the_table(tmp_path: Path) -> None:
    """Every [storage.s3] key lands in S3Settings; the secret may come from a file."""
    (tmp_path / "s3.secret").write_text("shh-very-secret\n")
    s3 = {
        "bucket": "uploads",
        "prefix": "files/",
        "endpoint": "https://s3.example.org/",
        "region": "eu-west-3",
        "access_key_id": "AKIA1",
        "secret_access_key_file": "s3.secret",
        "addressing": "virtual",
        "mode": "direct",
        "part_size": 16 * 1024 * 1024,
        "parts_in_flight": 4,
        "public_base_url": "https://cdn.example.org/up",
    }
    config = parse_config(scaled(storage={"s3": s3}), tmp_path)
    assert config.storage.backend == "s3"
    assert config.storage.path is None
    assert config.storage.s3 == S3Settings(
        bucket="uploads",
        prefix="files/",
        endpoint="https://s3.example.org",
        region="eu-west-3",
        access_key_id="AKIA1",
        secret_access_key="shh-very-secret",
        addressing="virtual",
        mode="direct",
        part_size=16 * 1024 * 1024,
        parts_in_flight=4,
        public_base_url="https://cdn.example.org/up/",
    )
    assert "shh" not in repr(config)


def test_s3_defaults() -> None:
    """A bare bucket gets S3Settings' defaults: AWS chain, proxy mode, 8 MiB parts."""
    config = parse_config(scaled(), Path("/etc"))
    assert config.storage.s3 == S3Settings(bucket="uploads")


def test_postgresql_dsn_from_a_file_stays_secret(tmp_path: Path) -> None:
    """dsn_file is read; the DSN (it holds a password) is never in a repr."""
    (tmp_path / "dsn").write_text("host=db user=up password=hunter22\n")
    metadata = {"backend": "postgresql", "dsn_file": "dsn", "threads": 8}
    data = minimal(metadata=metadata, http={"signing_key": KEY})
    config = parse_config(data, tmp_path)
    assert config.metadata.backend == "postgresql"
    assert config.metadata.dsn == "host=db user=up password=hunter22"
    assert config.metadata.threads == 8
    assert "hunter22" not in repr(config)


def test_http_only_node_needs_no_component_secret() -> None:
    """A node without the component role starts without [component] secret."""
    data = scaled(node={"roles": ["http"], "name": "web-1"})
    del data["component"]["secret"]
    config = parse_config(data, Path("/etc"))
    assert config.node.roles == ("http",)
    assert config.node.name == "web-1"
    assert not config.node.runs_component
    assert config.component.secret is None


def test_component_role_names_itself_when_the_secret_is_missing() -> None:
    """The error for a missing secret says that the component role needs it."""
    data = scaled(node={"roles": ["component"]})
    del data["component"]["secret"]
    error = error_for(data)
    assert error.key == "[component] secret"
    assert '"component" role' in str(error)


def test_roles_keep_a_fixed_order() -> None:
    """Roles listed in any order read the same."""
    config = parse_config(scaled(node={"roles": ["http", "component"]}), Path("/"))
    assert config.node.roles == ("component", "http")


def test_single_signing_key_has_the_legacy_id() -> None:
    """[http] signing_key alone is a ring of one key with id "default"."""
    config = parse_config(minimal(http={"signing_key": KEY}), Path("/"))
    ring = config.http.signing_keys
    assert ring == KeyRing.single(KEY.encode(), "default")


def test_signing_keys_with_ids(tmp_path: Path) -> None:
    """[[http.signing_keys]] and signing_key_id make a ring that signs with that id."""
    (tmp_path / "new.key").write_text("n" * 40 + "\n")
    keys = [
        {"id": "2026-05", "key": "o" * 40},
        {"id": "2026-11", "key_file": "new.key"},
    ]
    http = {"signing_key": KEY, "signing_keys": keys, "signing_key_id": "2026-11"}
    ring = parse_config(minimal(http=http), tmp_path).http.signing_keys
    assert ring is not None
    assert ring.current_id == "2026-11"
    assert ring.current_key == b"n" * 40
    assert ring.ids == ("2026-05", "2026-11", "default")
    assert ring.get("2026-05") == b"o" * 40
    assert ring.get("default") == KEY.encode()


def test_one_listed_key_signs_without_naming_it() -> None:
    """With exactly one key, signing_key_id may be left out."""
    http = {"signing_keys": [{"id": "a1", "key": KEY}]}
    ring = parse_config(minimal(http=http), Path("/")).http.signing_keys
    assert ring is not None
    assert ring.current_id == "a1"


KEY_ID_CHARACTERS = string.ascii_letters + string.digits + "_-"


def key_id_error(key_id: object) -> ConfigError | None:
    """The error for a ring of one key with ``key_id``, or None if it loads."""
    data = minimal(http={"signing_keys": [{"id": key_id, "key": KEY}]})
    try:
        ring = parse_config(data, Path("/")).http.signing_keys
    except ConfigError as e:
        return e
    assert ring is not None
    assert ring.current_id == key_id
    return None


@pytest.mark.parametrize(
    "key_id", ["a", "Z", "0", "_", "-", "2026-11", "old_key-2", "x" * 32]
)
def test_key_ids_that_load(key_id: str) -> None:
    """Letters, digits, "_" and "-", 1 to 32 of them, make a key id."""
    assert key_id_error(key_id) is None


@pytest.mark.parametrize(
    "key_id",
    ["", "x" * 33, "a b", " a", "a ", "a.b", "a/b", "clé", "a\n", "ключ", 7, None],
)
def test_key_ids_that_are_refused(key_id: object) -> None:
    """An empty, long, spaced, dotted, non-ASCII or non-string id is refused."""
    error = key_id_error(key_id)
    assert error is not None
    assert error.key == "[[http.signing_keys]] #1 id"


@given(st.text(alphabet=KEY_ID_CHARACTERS, min_size=1, max_size=32))
def test_any_short_id_of_the_allowed_characters_loads(key_id: str) -> None:
    """Every id of 1-32 allowed characters loads, and is the signing key's id."""
    assert key_id_error(key_id) is None


@given(
    st.text(alphabet=KEY_ID_CHARACTERS, max_size=16),
    st.characters().filter(lambda c: c not in KEY_ID_CHARACTERS),
    st.text(alphabet=KEY_ID_CHARACTERS, max_size=15),
)
def test_one_other_character_refuses_an_id(head: str, bad: str, tail: str) -> None:
    """A single character outside A-Za-z0-9_- anywhere in the id refuses it."""
    assert key_id_error(head + bad + tail) is not None


@given(st.text(alphabet=KEY_ID_CHARACTERS, min_size=33, max_size=60))
def test_ids_over_32_characters_are_refused(key_id: str) -> None:
    """An id of more than 32 allowed characters is still refused."""
    assert key_id_error(key_id) is not None


@given(st.lists(st.sampled_from(["component", "http"]), min_size=1, max_size=2))
def test_any_role_set(roles: list[str]) -> None:
    """Any non-empty set of the two roles is a valid node, duplicates refused."""
    data = scaled(node={"roles": roles})
    if len(set(roles)) == len(roles):
        assert set(parse_config(data, Path("/")).node.roles) == set(roles)
    else:
        assert error_for(data).key == "[node] roles"


@pytest.mark.parametrize(
    ("data", "key", "words"),
    [
        # [storage]
        (minimal(storage={"backend": "filesytem"}), "[storage] backend", "did you"),
        (scaled(storage={"path": "/x"}), "[storage] path", 'not used by the "s3"'),
        (minimal(storage={"s3": {"bucket": "b"}}), "[storage.s3]", "filesystem"),
        (
            scaled(storage={"s3": {"bucket": "b", "regoin": "x"}}),
            "[storage.s3] regoin",
            "did you mean 'region'",
        ),
        (scaled(storage={"s3": {}}), "[storage.s3] bucket", "missing"),
        (scaled(storage={"s3": {"bucket": "a/b"}}), "[storage.s3] bucket", "bucket"),
        (
            scaled(storage={"s3": {"bucket": "b", "prefix": "/up"}}),
            "[storage.s3] prefix",
            "/",
        ),
        (
            scaled(storage={"s3": {"bucket": "b", "part_size": 5 * 1024 * 1024 - 1}}),
            "[storage.s3] part_size",
            "at least 5242880",
        ),
        (
            scaled(storage={"s3": {"bucket": "b", "mode": "direkt"}}),
            "[storage.s3] mode",
            '"proxy" or "direct"',
        ),
        (
            scaled(storage={"s3": {"bucket": "b", "addressing": "host"}}),
            "[storage.s3] addressing",
            '"path" or "virtual"',
        ),
        (
            scaled(storage={"s3": {"bucket": "b", "mode": "direct"}}),
            "[storage.s3] public_base_url",
            "missing",
        ),
        (
            scaled(
                storage={
                    "s3": {"bucket": "b", "mode": "direct", "public_base_url": "s3://x"}
                }
            ),
            "[storage.s3] public_base_url",
            "http(s)",
        ),
        (
            scaled(storage={"s3": {"bucket": "b", "endpoint": "minio:9000"}}),
            "[storage.s3] endpoint",
            "http(s)",
        ),
        (
            scaled(storage={"s3": {"bucket": "b", "access_key_id": "AK"}}),
            "[storage.s3] secret_access_key",
            "secret_access_key_file",
        ),
        (
            scaled(storage={"s3": {"bucket": "b", "secret_access_key": "x"}}),
            "[storage.s3] access_key_id",
            "missing",
        ),
        # [metadata]
        (minimal(metadata={"backend": "mysql"}), "[metadata] backend", '"sqlite"'),
        (minimal(metadata={"dsn": "x"}), "[metadata] dsn", '"postgresql" backend'),
        (minimal(metadata={"threads": 2}), "[metadata] threads", "postgresql"),
        (scaled(metadata={"dsn": ""}), "[metadata] dsn", "non-empty"),
        (scaled(metadata={"threads": 0}), "[metadata] threads", "positive"),
        (scaled(metadata={"threads": 65}), "[metadata] threads", "at most 64"),
        # [node]
        (scaled(node={"roles": []}), "[node] roles", "non-empty"),
        (scaled(node={"roles": "http"}), "[node] roles", "list"),
        (scaled(node={"roles": ["xmpp"]}), "[node] roles", "unknown role 'xmpp'"),
        (scaled(node={"name": "web 1"}), "[node] name", "A-Za-z0-9"),
        (scaled(node={"rolls": ["http"]}), "[node] rolls", "did you mean 'roles'"),
        # signing keys
        (
            minimal(http={"signing_keys": [{"id": "a", "key": "short"}]}),
            "[[http.signing_keys]] #1 key",
            "32 bytes",
        ),
        (
            minimal(http={"signing_keys": [{"key": KEY}]}),
            "[[http.signing_keys]] #1 id",
            "missing",
        ),
        (
            minimal(http={"signing_keys": [{"id": "a"}]}),
            "[[http.signing_keys]] #1 key",
            "key_file",
        ),
        (
            minimal(
                http={
                    "signing_keys": [{"id": "a", "key": KEY}, {"id": "a", "key": KEY}]
                }
            ),
            "[[http.signing_keys]] #2 id",
            "twice",
        ),
        (
            minimal(
                http={"signing_key": KEY, "signing_keys": [{"id": "b", "key": KEY}]}
            ),
            "[http] signing_key_id",
            "several signing keys (b, default)",
        ),
        (
            minimal(http={"signing_key": KEY, "signing_key_id": "new"}),
            "[http] signing_key_id",
            "no key has id 'new' (given: default)",
        ),
        (minimal(http={"signing_key_id": "x"}), "[http] signing_key_id", "none"),
        (
            minimal(http={"signing_keys": {"id": "a", "key": KEY}}),
            "[http] signing_keys",
            "[[http.signing_keys]]",
        ),
        # across tables
        (
            scaled(metadata={"backend": "sqlite", "dsn": None}),
            "[metadata] backend",
            'must be "postgresql" with [storage] backend "s3"',
        ),
        (
            minimal(node={"roles": ["component"]}, http={"signing_key": KEY}),
            "[metadata] backend",
            "share one metadata store",
        ),
        (
            scaled(http={"signing_key": None}),
            "[http] signing_key",
            '[storage] backend is "s3"',
        ),
        (
            minimal(metadata=PG),
            "[http] signing_key",
            '[metadata] backend is "postgresql"',
        ),
    ],
)
def test_bad_scale_out_values_name_their_key(
    data: dict[str, Any], key: str, words: str
) -> None:
    """Each bad storage, metadata, node or key value is one line naming its key."""
    for table in data.values():
        for name in [k for k, v in table.items() if v is None]:
            del table[name]
    error = error_for(data)
    assert error.key == key
    assert words in str(error)
    assert "\n" not in str(error)


def test_missing_key_names_every_way_to_give_one() -> None:
    """Without a key on a split node, the error lists the three ways to give one."""
    error = error_for(minimal(node={"roles": ["http"]}, metadata=PG))
    assert error.key == "[http] signing_key"
    for way in ("signing_key,", "signing_key_file", "[[http.signing_keys]]"):
        assert way in str(error)


def test_known_keys_list_the_new_tables() -> None:
    """KNOWN_KEYS (which the benchmark reads) names the new tables and keys."""
    assert KNOWN_KEYS["storage"] == ("backend", "path", "s3")
    assert KNOWN_KEYS["metadata"] == ("backend", "dsn", "dsn_file", "threads")
    assert KNOWN_KEYS["node"] == ("roles", "name")
    assert {"signing_keys", "signing_key_id"} <= set(KNOWN_KEYS["http"])


def uncommented(text: str, first: str) -> str:
    """The commented block of the example starting at ``# <first>``, uncommented."""
    lines = text.splitlines()
    start = lines.index(f"# {first}")
    block = []
    for line in lines[start:]:
        # The block ends at the first line that is not a commented key or table.
        if not line.startswith("# ") or not ("=" in line or line[2:].startswith("[")):
            break
        block.append(line[2:])
    return "\n".join(block)


def test_commented_scale_out_examples_load(tmp_path: Path) -> None:
    """The example's commented S3 and key-rotation blocks are valid once enabled."""
    example = (
        Path(__file__).parent.parent / "docs/httpupload.example.toml"
    ).read_text()
    for name in ("s3.secret", "signing-2026-05.key", "signing-2026-11.key"):
        (tmp_path / name).write_text(name * 4)
    data = tomllib.loads(example)
    s3 = uncommented(example, "[storage.s3]").replace("/etc/httpupload/", "")
    data["storage"] = {"backend": "s3", **tomllib.loads(s3)["storage"]}
    keys = "[http]\n" + uncommented(example, 'signing_key_id = "2026-11"')
    data["http"].update(tomllib.loads(keys.replace("/etc/httpupload/", ""))["http"])
    data["metadata"] = {"backend": "postgresql", "dsn": "postgresql://db/up"}
    data["node"] = {"roles": ["http"], "name": "upload-1"}
    config = parse_config(data, tmp_path)
    assert config.storage.s3 is not None
    assert config.storage.s3.bucket == "httpupload"
    ring = config.http.signing_keys
    assert ring is not None
    assert (ring.current_id, ring.ids) == ("2026-11", ("2026-05", "2026-11"))
