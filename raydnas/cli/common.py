"""What every ``raydnas`` subcommand's parser shares: the ``--set`` option. No torch, no Ray."""

from __future__ import annotations

import argparse


def add_set_option(parser: argparse.ArgumentParser, help: str,
                   metavar: str = "KEY.PATH=VALUE") -> None:
    """``--set KEY=VALUE``, repeatable, several values after one ``--set`` too: the values are
    the words with ``=`` that follow it (:func:`split_set_values`), so a positional argument
    after them stays positional (``raydnas validate --set epochs=2 configs/quickstart.yaml``)."""
    parser.add_argument("--set", action="append", default=[], metavar=metavar, help=help)


def split_set_values(argv: list[str]) -> list[str]:
    """``--set a=1 b=2 PATH`` → ``--set a=1 --set b=2 PATH``: each word with ``=`` right after a
    ``--set`` becomes its own ``--set`` value, the first word without one ends the list."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        out.append(word)
        i += 1
        if word == "--":
            out += argv[i:]
            break
        if word != "--set":
            continue
        if i < len(argv):  # the first value, whatever it is (a bad one gets its own error)
            out.append(argv[i])
            i += 1
        while i < len(argv) and "=" in argv[i] and not argv[i].startswith("-"):
            out += ["--set", argv[i]]
            i += 1
    return out


def plural(n: int, word: str) -> str:
    """``1 group``, ``2 groups``, ``0 groups``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"
