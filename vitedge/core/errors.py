"""The one exception type for mistakes a user can fix; the CLI turns it into one red line.

The board bundle ships this file byte for byte (its runner shortens a runtime's error with
`first_line`), so it imports nothing outside the standard library and keeps to what the
board's own Python (3.9 and up) reads."""

from __future__ import annotations

import re


class VitedgeError(Exception):
    """A user error: what is wrong (message) and how to fix it (hint)."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


def printable(text: str) -> str:
    """`text` with what a terminal would not print as itself escaped: a file named with a line
    break (or undecodable bytes) kept in one line, so an error or a skipped-files note stays one."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode() for c in text)


# OpenVINO's errors open with where they were raised ("Exception from src/…/core.cpp:84:",
# "Check '…' failed at src/…:900:"); the reason is the line after them.
_SOURCE_LOCATION = re.compile(r"(Exception from |Check '.*' failed at )\S*:\d+:?")


def first_line(exc: BaseException, limit: int | None = None) -> str:
    """The first non-empty line of an exception's message that says what went wrong (a
    library's multi-line error in one line), or its type's name when the message is empty;
    `shortened` to `limit` characters where one is given."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reasons = [line for line in lines if not _SOURCE_LOCATION.fullmatch(line)]
    line = (reasons or lines or [type(exc).__name__])[0]
    return line if limit is None else shortened(line, limit)


def shortened(text: str, limit: int) -> str:
    """`text` in at most `limit` characters, giving up its middle ("...") rather than its end: a
    library's reason often names the user's path first and what is wrong with it last ("Expecting
    value in '/a/deep/folder/preprocessor_config.json': is not a valid JSON file"), so a long
    path must not cut off the words that say what is wrong."""
    if len(text) <= limit:
        return text
    head = (limit - 3) // 2
    return f"{text[:head]}...{text[len(text) - (limit - 3 - head) :]}"
