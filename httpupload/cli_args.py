"""The argument parser of every httpupload command: exact options, quiet secrets.

Two things stock ``argparse`` does that a command taking a password must not:

- it takes any unambiguous prefix of an option for the option
  (``--password S3cret`` became ``--password-file S3cret``): here
  ``allow_abbrev`` is off, in the parser and in every subparser;
- its error messages repeat what was typed (``unrecognized arguments:
  --password S3cret``): here a value given to a secret option is replaced by
  ``<hidden>`` in every error.  Secret options are those the command names
  (``secret_options``) and any option, known or not, whose name holds
  ``pass``, ``secret``, ``token``, ``key``, ``cred`` or ``auth``.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable, Sequence
from typing import Any, NoReturn

__all__ = ["HIDDEN", "SECRET_HINTS", "ArgumentParser", "hide_secrets", "secret_values"]

HIDDEN = "<hidden>"
SECRET_HINTS = ("pass", "secret", "token", "key", "cred", "auth")


def _is_secret_option(arg: str, declared: frozenset[str]) -> bool:
    if not arg.startswith("-") or arg in ("-", "--"):
        return False
    name = arg.split("=", 1)[0]
    return name in declared or any(hint in name.lower() for hint in SECRET_HINTS)


def secret_values(argv: Sequence[str], declared: Iterable[str] = ()) -> list[str]:
    """The values given to secret options in ``argv``, longest first.

    ``--option=value`` and ``--option value`` both count, whatever the value
    looks like (a password may start with ``-``).
    """
    names = frozenset(declared)
    values: list[str] = []
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        if not _is_secret_option(arg, names):
            continue
        if "=" in arg:
            values.append(arg.split("=", 1)[1])
        elif i + 1 < len(argv):
            values.append(argv[i + 1])
    return sorted({v for v in values if v}, key=len, reverse=True)


def hide_secrets(message: str, secrets: Iterable[str]) -> str:
    """``message`` with each secret, as a whole word or quoted, made ``<hidden>``.

    Whole words only (bounded by the start or end, spaces, quotes, ``=`` or
    ``,``), so that a one-letter password does not blank every such letter.
    """
    for secret in secrets:
        for form in dict.fromkeys((secret, repr(secret)[1:-1])):
            pattern = rf"(?<![^\s'\"=,]){re.escape(form)}(?![^\s'\",])"
            message = re.sub(pattern, HIDDEN, message)
    return message


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` without abbreviations, and whose errors
    never show a value given to a secret option.

    Subparsers made by ``add_subparsers().add_parser`` are of this class too
    (argparse makes them of the parent's class), so the same holds there.
    """

    def __init__(
        self, *args: Any, secret_options: Iterable[str] = (), **kwargs: Any
    ) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)
        self.secret_options = frozenset(secret_options)
        self._argv: tuple[str, ...] = ()
        self._outer_argv: tuple[str, ...] = ()

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: Any = None
    ) -> tuple[argparse.Namespace, list[str]]:
        self._argv = tuple(sys.argv[1:] if args is None else args)
        for parser in self._subparsers_below():
            parser._outer_argv = self._outer_argv or self._argv
            parser.secret_options |= self.secret_options
        return super().parse_known_args(args, namespace)

    def _subparsers_below(self) -> list[ArgumentParser]:
        found = []
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                choices = action.choices.values()
                found += [p for p in choices if isinstance(p, ArgumentParser)]
        return found

    def error(self, message: str) -> NoReturn:
        secrets = {
            value
            for argv in (self._argv, self._outer_argv, tuple(sys.argv[1:]))
            for value in secret_values(argv, self.secret_options)
        }
        super().error(hide_secrets(message, sorted(secrets, key=len, reverse=True)))
