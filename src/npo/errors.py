"""User-facing errors: one line, exit code 2, no traceback (see `npo.cli.main.main`)."""


class UserError(Exception):
    """Bad input from the user: a config field, a file, a dataset row, a CLI flag.

    The message names the file, field or row and says what was expected; the CLI prints it on one
    line and exits with code 2 before any run directory is written.
    """


class RunFailed(Exception):
    """A run that cannot go on honestly (its verifier fails on most answers): the CLI prints one line
    naming the step and why, and exits with code 1. The run folder keeps what was complete."""
