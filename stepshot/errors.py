"""The one error policy of the `stepshot` command line.

A `StepshotError` means the user's input or environment is wrong (a bad spec, a missing
file, a code that is no architecture, a stage that has not run): `stepshot.cli.main` prints
it without a traceback and exits with its `exit_code` (2: bad input; `RunFailed`: 1, a run
that failed). Any other exception is a bug of ours and keeps its traceback.
"""
from __future__ import annotations


class StepshotError(Exception):
    exit_code = 2


class RunFailed(StepshotError):
    """A stage or evaluation process of `stepshot run` exited non-zero."""

    exit_code = 1


class Preempted(StepshotError):
    """SIGTERM stopped a training stage after a mid-epoch checkpoint; the next run resumes from it."""

    exit_code = 143  # 128 + SIGTERM, what the kubelet reports for a terminated container


class ChildReported(StepshotError):
    """A child process of `stepshot run` refused its input and said why on stderr already: exit
    with its code and print nothing more (rerunning the same command cannot help)."""

    def __init__(self, exit_code: int = StepshotError.exit_code) -> None:
        super().__init__("")
        self.exit_code = exit_code
