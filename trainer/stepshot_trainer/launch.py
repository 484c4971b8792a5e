"""`python -m stepshot_trainer.launch [torchrun options] -m stepshot.cli train ...`: torchrun
that exits with its worker's own exit code.

torchrun (torch.distributed.run) ends every failed worker group with exit code 1 and a
traceback of its own, so a worker's `StepshotError` exit 2 (bad input) never reached the
container: the Job's podFailurePolicy rule "FailJob on exit code 2" could not match, and
`stepshot run` could not tell a bad input from a crash. This is torchrun with the same
options (and PET_* variables), the same agent and rendezvous, and another ending:

- a failed worker group: the exit code of the first worker that failed (the root cause;
  the others were stopped by the agent), 128 + N for a worker killed by signal N;
- the agent itself stopped by a signal (a pod's SIGTERM, which it forwards to the workers,
  which checkpoint and exit 143): 128 + N, what a shell and the kubelet report.

A worker's bad-input error (exit 2) is already one line on stderr: nothing is added to it.
"""
from __future__ import annotations

import logging
import sys

from torch.distributed import run as torchrun
from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

from stepshot.errors import StepshotError


def worker_exit_code(error: ChildFailedError) -> int:
    """The root cause's exit code (a signal's as the shell reports it: 128 + N)."""
    _, failure = error.get_first_failure()
    return 128 - failure.exitcode if failure.exitcode < 0 else failure.exitcode


class _QuietBadInput(logging.Filter):
    """Drop the agent's "failed (exitcode: 2) local_rank: ..." record (the worker said why) and
    its "Sending process N closing signal SIGTERM" to the other workers (the group's end is
    said by the worker that failed, or by this launcher's line)."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = str(record.msg)
        bad_input = msg.startswith("failed (exitcode") and record.args and record.args[0] == StepshotError.exit_code
        return not (bad_input or msg.startswith("Sending process"))


def main(argv: list[str] | None = None) -> int:
    args = torchrun.parse_args(argv)
    logging.getLogger("torch.distributed.elastic.multiprocessing.api").addFilter(_QuietBadInput())
    try:
        torchrun.run(args)
    except ChildFailedError as exc:
        code = worker_exit_code(exc)
        if code != StepshotError.exit_code:
            rank, failure = exc.get_first_failure()
            print(f"stepshot: training worker rank {rank} exited with code {failure.exitcode}", file=sys.stderr)
        return code
    except SignalException as exc:
        return 128 + int(exc.sigval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
