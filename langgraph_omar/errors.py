"""The one error type the command line turns into a one-line message."""

import traceback


class OmarError(ValueError):
    """A user-facing problem with input: a model name, a file, a config key. The message is one line."""


class ConfigError(OmarError):
    """A configuration value or key that is not accepted; the message names the key and what was expected."""


class UserCodeError(OmarError):
    """The user's own code (a graph factory) raised: the message (one line) says which, `detail` is the
    user's exception in full, its traceback from the user's first frame on, every line of its message."""

    def __init__(self, message: str, error: BaseException) -> None:
        super().__init__(message)
        tb = error.__traceback__
        own = tb.tb_next if tb is not None else None  # the first frame is the caller's, in langgraph_omar
        self.detail = "".join(traceback.format_exception(type(error), error, own)).rstrip()


def first_line(error: BaseException, limit: int | None = None, *, with_type: bool = False) -> str:
    """The first non-blank line of `error`'s message, cut to `limit` characters; the type's name when the
    message is empty. with_type: "TypeName: first line"."""
    text = str(error).strip()
    line = text.splitlines()[0][:limit] if text else ""
    if not line:
        return type(error).__name__
    return f"{type(error).__name__}: {line}" if with_type else line
