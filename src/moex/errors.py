"""The error every user-facing failure raises: the CLI prints its message without a traceback."""


class MoexError(ValueError):
    """Bad input or configuration; the message names the file, line, game or key at fault."""


class Interrupted(MoexError):
    """A long job stopped by Ctrl-C (SIGINT): ``where`` it stopped and the command that goes on from there."""

    def __init__(self, where: str, resume: str):
        super().__init__(f"{where}; resume with: {resume}")
        self.where, self.resume = where, resume
