"""The one error type the command line turns into a one-line message."""


class OmarError(ValueError):
    """A user-facing problem with input: a model name, a file, a config key. The message is one line."""
