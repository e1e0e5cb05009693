class RunError(Exception):
    """A run operation that cannot be done; the message is shown to the user."""


class InvalidTransition(RunError):
    pass


class LeaseLost(RunError):
    """Another worker holds the run now (ours expired); stop writing to it."""
