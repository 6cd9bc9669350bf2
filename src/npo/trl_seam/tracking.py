"""TensorBoard and W&B for an npo run: one log per run, not one per segment.

TRL's own integrations (`report_to`) start a log at every `train()` call, and npo calls `train()`
once per segment: an NPO run with one intervention became three TensorBoard runs (the look-ahead
and two final-trajectory segments) under `checkpoints/runs/`, with the look-ahead on the final
trajectory's step axis and no held-out accuracy. So npo takes over `tensorboard` and `wandb` from
`train.grpo.report_to` (the others stay TRL's) and writes, from the main process:

- one TensorBoard log in `RUN/tensorboard/` (a resumed run appends to it), one W&B run named after
  the run folder, its files in `RUN/wandb/` (a resumed run continues it: its id is `RUN/wandb/npo_run_id`);
- every step's metrics under the names of metrics.jsonl (`reward/mean`, `signal/...`, `npo/...`,
  `train/loss`, ...), a look-ahead's under `lookahead/` (its own namespace, so that its steps never
  mix with the final trajectory's), each held-out evaluation as `eval/accuracy` and `eval/mean_at_k`;
- the run's config (npo's and TRL's) as text in TensorBoard and as the W&B run's config.

AutoNPO's discarded steps were logged when they were trained, on the final trajectory: its curves
hold them beside the steps retrained after the rollback.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

from transformers import TrainerCallback

from npo.trl_seam.callbacks import metrics_record

OURS = ("tensorboard", "wandb")  # report_to values npo writes itself


def report_values(report_to) -> list[str]:
    """TRL's GRPOConfig takes a string or a list ("none": none)."""
    values = [report_to] if isinstance(report_to, str) else list(report_to or [])
    return [v for v in values if v != "none"]


def report_targets(report_to) -> list[str]:
    """The `report_to` values npo writes."""
    values = report_values(report_to)
    return list(OURS) if "all" in values else [v for v in values if v in OURS]


def trl_report_to(report_to) -> list[str] | str:
    """What is left to TRL's integrations."""
    left = [v for v in report_values(report_to) if v not in (*OURS, "all")]
    return left or "none"


class RunReport(TrainerCallback):
    """The run's TensorBoard log and W&B run (`targets`), registered once on the run's trainer."""

    def __init__(self, root: Path, targets: list[str], config: dict):
        self.root, self.targets, self.config = Path(root), targets, config
        self.namespace = ""  # "" on the final trajectory, "lookahead/" in a look-ahead
        self._tb = self._wandb = None

    def open(self) -> None:
        text = "```yaml\n" + self.config["npo"] + "\n```"
        if "tensorboard" in self.targets and self._tb is None:
            folder = self.root / "tensorboard"
            folder.mkdir(parents=True, exist_ok=True)
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                from tensorboardX import SummaryWriter
            self._tb = SummaryWriter(log_dir=str(folder))
            self._tb.add_text("npo/config", text)
            self._tb.add_text("trl/args", "```json\n" + json.dumps(self.config["trl"], indent=1) + "\n```")
        if "wandb" in self.targets and self._wandb is None:
            import wandb

            folder = self.root / "wandb"  # W&B's own files, and the id a resume continues
            folder.mkdir(parents=True, exist_ok=True)
            id_file = folder / "npo_run_id"
            run_id = id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:12]
            id_file.write_text(run_id)
            self._wandb = wandb.init(project=os.environ.get("WANDB_PROJECT", "npo"), name=self.root.name, id=run_id,
                                     resume="allow", dir=str(self.root),
                                     config={"npo": self.config["npo_dict"], "trl": self.config["trl"]})
            # its own x axis per namespace: a rollback sends the final trajectory's step back (W&B's
            # own step may only grow), and a look-ahead's steps are not the final trajectory's
            self._wandb.define_metric("step")
            self._wandb.define_metric("lookahead/step")
            for prefix in ("reward", "rewards", "signal", "npo", "train", "verify", "eval"):
                self._wandb.define_metric(f"{prefix}/*", step_metric="step")
            self._wandb.define_metric("lookahead/*", step_metric="lookahead/step")

    def segment(self, main: bool) -> None:
        """The segment about to train: the final trajectory, or a look-ahead."""
        self.namespace = "" if main else "lookahead/"

    def write(self, values: dict, step: int) -> None:
        if self._tb is None and self._wandb is None:
            self.open()
        if self._tb is not None:
            for key, value in values.items():
                self._tb.add_scalar(key, value, step)
            self._tb.flush()
        if self._wandb is not None:
            axis = "lookahead/step" if any(k.startswith("lookahead/") for k in values) else "step"
            self._wandb.log({**values, axis: step})

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "reward" not in logs or not state.is_world_process_zero:
            return
        record = metrics_record(state.global_step, logs)
        step = record.pop("step")
        self.write({f"{self.namespace}{k}": v for k, v in record.items()}, step)

    def evaluation(self, record: dict) -> None:
        """A held-out evaluation of the final trajectory (an eval.jsonl line: npo.trl_seam.callbacks.Evaluator)."""
        values = {f"eval/{k}": record[k] for k in ("accuracy", "mean_at_k") if record.get(k) is not None}
        self.write(values, record["step"])

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
