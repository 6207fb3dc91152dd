"""The error every user-facing failure raises: the CLI prints its message without a traceback."""


class MoexError(ValueError):
    """Bad input or configuration; the message names the file, line, game or key at fault."""


class Interrupted(MoexError):
    """A long job stopped by Ctrl-C (SIGINT); the message says where it stopped and how to go on."""
