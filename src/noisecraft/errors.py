"""The one exception type that the CLI turns into `error: ...` and exit code 2."""


class UserError(Exception):
    """A mistake the user can fix: missing data, a bad flag value, a wrong checkpoint path.

    The CLI prints its message on one line, prefixed with `error:`, and exits with code 2.
    """
