"""The one exception type for mistakes a user can fix; the CLI turns it into one red line."""


class VitedgeError(Exception):
    """A user error: what is wrong (message) and how to fix it (hint)."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (a library's multi-line error in
    one line), or its type's name when the message is empty."""
    return next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
