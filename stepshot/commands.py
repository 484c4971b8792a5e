"""The stage command lines: one definition for the operator's pods and `stepshot run`.

A pod runs `python` of the trainer image with the spec from its ConfigMap; `stepshot run`
runs this interpreter with the user's file. Everything after the interpreter is the same.
Training goes through `stepshot_trainer.launch`, torchrun that exits with its worker's own
exit code (torchrun's is 1 for any failure), so a bad input exits 2 from the container too.
"""
from __future__ import annotations

from dataclasses import dataclass

LAUNCHER = "stepshot_trainer.launch"
CLI = "stepshot.cli"


@dataclass(frozen=True)
class StageCommands:
    python: str       # "python" in the trainer image, sys.executable on this machine
    spec_file: str
    workdir: str

    def _cli(self, command: str, *args: str) -> list[str]:
        return [self.python, "-m", CLI, command, self.spec_file, *args]

    def train(self, stage: str, launcher: tuple[str, ...] = ()) -> list[str]:
        """`launcher`: torchrun options (the pods set theirs as PET_* environment variables)."""
        return [self.python, "-m", LAUNCHER, *launcher,
                "-m", CLI, "train", self.spec_file, "--stage", stage, "--workdir", self.workdir]

    def snapshot(self, stage: str) -> list[str]:
        return self._cli("snapshot", "--stage", stage, "--workdir", self.workdir)

    def evaluate(self, processes: int, threads: int | None = None, stages: tuple[str, ...] = (),
                 out: str | None = None, shard: str | None = None, shards: int = 1,
                 checkpoint_every: int | None = None) -> list[str]:
        """Default stages: the plan's leaves; default out: <workdir>/eval/predictions.json.
        `shard` of `shards` (a string: a pod passes "$(STEPSHOT_SHARD)"): that slice only, its
        parts written for `merge`; one shard evaluates and merges."""
        args = ["--workdir", self.workdir]
        args += ["--stages", ",".join(stages)] if stages else []
        args += ["--out", out] if out else []
        args += ["--threads", str(threads)] if threads else []
        args += ["--shard", shard, "--shards", str(shards)] if shards > 1 else []
        args += ["--checkpoint-every", str(checkpoint_every)] if checkpoint_every else []
        return self._cli("evaluate", *args, "--processes", str(processes))

    def merge(self, stages: tuple[str, ...] = (), out: str | None = None) -> list[str]:
        """Merge a sharded evaluation's parts into the predictions file and score it."""
        args = ["--workdir", self.workdir]
        args += ["--stages", ",".join(stages)] if stages else []
        args += ["--out", out] if out else []
        return self._cli("evaluate", *args, "--merge")
