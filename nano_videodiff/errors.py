"""The exception types for mistakes in what the user gave us, and how the scripts report them."""
import os
import sys
import traceback


class UserError(ValueError):
    """Bad input from the user (flags, files, data), as opposed to a bug in this code.

    Raise it with a one-line message that names the offending flag or file and says what to do
    instead. Scripts catch it, print ``error: <message>`` and exit with status 2, without a traceback;
    every other exception is a bug and still raises with its full traceback. It subclasses ValueError
    so that code and tests that expect a ValueError for bad values keep working.
    """


# The same, for callers that catch the built-in kind of the problem.
class MissingFile(UserError, FileNotFoundError):
    """A file the user named (a checkpoint, a --context video) does not exist."""


class ExistingOutput(UserError, FileExistsError):
    """The output folder holds results that a run would replace without being asked to."""


class WriteFailed(UserError, OSError):
    """A file could not be written (full disk, no permission); what was there before is intact."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM, after the run saved itself; the script exits with 128 + the signal number."""

    def __init__(self, message: str, signal_number: int):
        super().__init__(message)
        self.exit_status = 128 + signal_number


DEBUG_ENV = "NANO_VIDEODIFF_DEBUG"  # =1: tracebacks for user errors too (as the --debug flag)


def run_script(main, argv=None) -> int:
    """A script's entry point: ``sys.exit(run_script(main))``.

    ``main(argv)`` runs with ``--debug`` taken out of ``argv``; the exit status is 0, or what it returns if
    that is an int (a tool's usage text: 2). A UserError becomes ``error: <message>`` on stderr and exit
    status 2, an interrupt exit status 130 (or 128 + its signal). With ``--debug`` or NANO_VIDEODIFF_DEBUG=1
    a user error also shows its traceback. Any other exception propagates: a bug.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    argv = [arg for arg in argv if arg != "--debug"]
    try:
        result = main(argv)
    except UserError as e:
        if debug:
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:  # the run has printed where it stopped and how to continue
        return e.exit_status
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return result if type(result) is int else 0  # train.py returns its models, sample.py its videos
