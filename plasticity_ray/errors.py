"""The one error type a user sees: bad input or a state they can fix. Its message names the
field, file, language or address and says what to do; the CLI prints it once (exit 2), never a
traceback. Modules raise their own subclasses (SpecError, DataError, CheckpointError, ...)."""


class UserError(Exception):
    pass


def first_line(err: BaseException) -> str:
    """An error's first line, for a one-line message (a Ray task's error: the task's own error's)."""
    cause = getattr(err, "cause", None) or err
    text = str(cause).strip()
    return text.splitlines()[0] if text else type(cause).__name__


class ResourceError(UserError):
    """What a spec asks for cannot be had: resources the local Ray can never offer, memory a device lacks."""
