"""The error a run raises when it cannot go on: one line that says what to do, which the command-line tools
print without a traceback."""


class RunError(RuntimeError):
    """A run that cannot go on, in one line that says what to do."""
