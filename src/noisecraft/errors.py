"""The one exception type that the CLI turns into `error: ...` and exit code 2."""


class UserError(Exception):
    """A mistake the user can fix: missing data, a bad flag value, a wrong checkpoint path.

    The CLI prints its message on one line, prefixed with `error:`, and exits with code 2.
    """


class Interrupted(Exception):
    """Training stopped by SIGINT or SIGTERM after saving its `last` checkpoint.

    The CLI prints the message (where the checkpoint is, how to resume) and exits with 128 + the signal
    number, the shell convention: 130 for SIGINT (Ctrl-C), 143 for SIGTERM.
    """

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum
