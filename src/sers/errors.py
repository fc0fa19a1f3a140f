"""The one error type users see: a message that names the file:line or config key at fault."""


class SersError(Exception):
    """A user-facing error; the command-line adapters print it without a traceback."""
