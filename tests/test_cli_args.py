"""Every command's arguments: options spelt out in full, secrets never echoed."""

from __future__ import annotations

import argparse
import re
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import httpupload
from httpupload import admin
from httpupload.cli_args import HIDDEN, ArgumentParser, hide_secrets, secret_values
from httpupload.client import arguments, send

PACKAGE = Path(httpupload.__file__).resolve().parent
SECRET = "S3cret-Pa55!"


def parsers_of(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The parser and every subparser below it."""
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += parsers_of(sub)
    return found


def send_argv(*extra: str) -> list[str]:
    return ["notes.txt", "--jid", "me@example.org", *extra]


def test_send_does_not_take_password_for_password_file(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--password S3cret`` is an unknown option (not ``--password-file``), and
    the error hides its value."""
    argv = send_argv("--password-file", "pw.txt", "--password", SECRET)
    with pytest.raises(SystemExit) as exited:
        arguments.build_parser().parse_args(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"unrecognized arguments: --password {HIDDEN}" in err
    assert SECRET not in err


def test_send_main_never_echoes_a_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """However the password is typed (as the file too), no error repeats it."""
    upload = tmp_path / "notes.txt"
    upload.write_text("hello")
    for extra in (
        ["--password", SECRET],
        [f"--password={SECRET}"],
        ["--pass", SECRET, "--password-file", "pw.txt"],
        ["--password-file", SECRET],  # the password given as the file
    ):
        argv = [str(upload), "--jid", "me@example.org", *extra]
        with pytest.raises(SystemExit) as exited:
            send.main(argv)
        assert exited.value.code == send.EXIT_USAGE
        err = capsys.readouterr().err
        assert SECRET not in err, argv


def test_a_password_file_that_exists_is_named_in_errors(tmp_path: Path) -> None:
    """An empty password file is named: a path that exists is not the password."""
    path = tmp_path / "pw.txt"
    path.write_text("")
    with pytest.raises(arguments.UsageError, match=re.escape(str(path))):
        arguments.read_password(str(path))


def test_admin_takes_no_abbreviations(capsys: pytest.CaptureFixture[str]) -> None:
    """A prefix is not an option: ``--conf`` is not ``--config``, nor ``--js`` json."""
    parser = admin.build_parser()
    assert parser.parse_args(["--config", "c.toml", "list", "a@b", "--json"]).json
    for argv in (
        ["--conf", "c.toml", "usage"],
        ["--config", "c.toml", "list", "a@b", "--js"],
        ["--config", "c.toml", "delete-user", "a@b", "--ye"],
        ["--config", "c.toml", "purge-expired", "--bat", "5"],
    ):
        with pytest.raises(SystemExit) as exited:
            admin.build_parser().parse_args(argv)
        assert exited.value.code == 2
        assert "error:" in capsys.readouterr().err, argv


def test_admin_errors_hide_secret_looking_values(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A password or token typed to the operator command is not repeated."""
    for argv in (
        ["--config", "c.toml", "usage", "--password", SECRET],
        ["--config", "c.toml", "--token", SECRET, "usage"],
        ["--config", "c.toml", "take-down", "--secret=" + SECRET],
    ):
        with pytest.raises(SystemExit):
            admin.build_parser().parse_args(argv)
        assert SECRET not in capsys.readouterr().err, argv


def test_every_parser_of_every_command_takes_no_abbreviations() -> None:
    """The commands' parsers and subparsers all have ``allow_abbrev`` off."""
    for parser in (
        *parsers_of(admin.build_parser()),
        *parsers_of(arguments.build_parser()),
    ):
        assert isinstance(parser, ArgumentParser)
        assert parser.allow_abbrev is False


def test_no_module_builds_a_stock_argument_parser() -> None:
    """Only ``cli_args`` subclasses argparse's parser; commands use its class."""
    for path in PACKAGE.rglob("*.py"):
        if path.name == "cli_args.py":
            continue
        assert "argparse.ArgumentParser(" not in path.read_text(), path


def test_hide_secrets_hides_whole_words_only() -> None:
    """A one-letter password hides that word, not every such letter."""
    argv = ["--password", "e", "--password-file=ee", "--token", "it's"]
    assert secret_values(argv, ()) == ["it's", "ee", "e"]
    secrets = secret_values(argv)
    message = "unrecognized arguments: --password e --password-file=ee --token it's"
    assert hide_secrets(message, secrets) == (
        f"unrecognized arguments: --password {HIDDEN} --password-file={HIDDEN} "
        f"--token {HIDDEN}"
    )
    message = "argument --timeout: invalid float value: 'e'"
    assert hide_secrets(message, secrets) == (
        f"argument --timeout: invalid float value: '{HIDDEN}'"
    )


PASSWORD_CHARS = string.ascii_letters + string.digits + "!$%&*+,.:;=@^_~'\"\\é "


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    secret=st.text(PASSWORD_CHARS, min_size=8, max_size=30).filter(
        lambda s: s.strip() == s
    ),
    shape=st.sampled_from(
        [
            ["--password", "{}"],
            ["--password={}"],
            ["--passwd", "{}"],
            ["--password-file", "pw", "--password", "{}"],
            ["--password", "{}", "--password-file", "pw"],
            ["--api-key", "{}", "--password-file", "pw"],
            ["--timeout", "x", "--password", "{}"],
        ]
    ),
    command=st.sampled_from(["send", "admin"]),
)
def test_no_error_repeats_a_secret(
    secret: str, shape: list[str], command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Whatever the secret and wherever it is typed, argparse's error omits it."""
    given_args = [part.format(secret) for part in shape]
    if command == "send":
        parser = arguments.build_parser()
        argv = send_argv(*given_args)
    else:
        parser = admin.build_parser()
        argv = ["--config", "c.toml", "usage", *given_args]
    help_text = parser.format_help()
    capsys.readouterr()
    with pytest.raises(SystemExit):
        parser.parse_args(argv)
    err = capsys.readouterr().err
    if secret not in help_text:
        assert secret not in err


def test_send_says_a_servers_text_in_one_short_escaped_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A hostile error text (terminal escapes, line breaks, megabytes) becomes
    one line of at most MAX_ERROR_LINE characters, escapes visible."""
    send._say("refused: \x1b]0;pwned\x07\u202e" + "x\n" * 100_000)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.endswith("…\n")
    assert "\x1b" not in err and "\u202e" not in err and "\\x1b]0;pwned" in err
    assert len(err) <= len("httpupload-send: ") + send.MAX_ERROR_LINE + 2
