"""Trainer callbacks: per-step metrics to `metrics.jsonl`, periodic held-out evaluation to
`eval.jsonl`, a progress bar with reward and accuracy, a checkpoint where a segment ends, the
plateau rule and AutoNPO's controller fed per step, and the completion marker written last into
every checkpoint (with the run's books and what the watches had seen: a resume reads it)."""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from pathlib import Path

from accelerate import PartialState
from accelerate.utils import gather_object
from tqdm import tqdm
from transformers import TrainerCallback

from npo.algo.controller import Controller, Seen, StepRecord, Trigger
from npo.algo.interventions import plateaued
from npo.models.evaluate import EvalPlan
from npo.models.share import Share
from npo.rundir.faults import crash_point
from npo.rundir.layout import RunDir, append_jsonl, checkpoint_folder, mark_complete
from npo.tasks.rewards import VERIFIED
from npo.trl_seam.engine import generation_model, sharded

# metrics.jsonl key <- TRL log key. Every key is documented in docs/run-directory.md "Metrics".
TRL_KEYS = {
    "reward/mean": "reward",
    "reward/std": "reward_std",
    "signal/entropy": "entropy",
    "signal/frac_zero_std": "frac_reward_zero_std",
    "train/loss": "loss",
    "train/grad_norm": "grad_norm",
    "train/learning_rate": "learning_rate",
    "train/step_time": "step_time",
    "train/completion_length": "completions/mean_length",
}


def metrics_record(step: int, logs: dict) -> dict:
    rec = {"step": step}
    for key, trl_key in TRL_KEYS.items():
        if trl_key in logs:
            rec[key] = _number(logs[trl_key])
    for key, value in logs.items():
        if key.startswith(("signal/", "npo/", "verify/")):
            rec[key] = _number(value)
        elif key.startswith("rewards/") and not key.startswith(f"rewards/{VERIFIED}/"):  # a user's reward function
            rec[key] = _number(value)
    return rec


def _number(value) -> float | None:
    """A logged value as JSON can hold it: NaN and infinities (a user's reward function that returned
    None or NaN for a whole batch: TRL's nanmean) and None are null."""
    value = None if value is None else float(value)
    return value if value is not None and math.isfinite(value) else None


class MetricsWriter(TrainerCallback):
    """One line per optimizer step to `path` (rank 0 only); `verify_stats` is the run's verifier
    guard's running count (`TaskScorer.stats`)."""

    def __init__(self, path: Path, verify_stats):
        self.path, self.verify_stats = path, verify_stats

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "reward" in logs and state.is_world_process_zero:
            rec = metrics_record(state.global_step, logs)
            rec.update({f"verify/{key}": value for key, value in asdict(self.verify_stats).items()})
            append_jsonl(self.path, rec)


def evaluation(engine, plan: EvalPlan, where: str | None = None) -> dict:
    """`plan`'s summary of the engine's live policy, each process scoring its share (gathered); `where`:
    stop the run (RunFailed) when this evaluation's verifications mostly failed."""
    before = plan.scorer.snapshot()
    with generation_model(engine) as model:
        greedy, sampled = plan.score(model, Share.of(engine.accelerator), synced_gpus=True if sharded(engine) else None)
    if where is not None:
        plan.scorer.check(plan.scorer.stats.since(before), where)
    if engine.accelerator.num_processes > 1:
        parts = gather_object([(greedy, sampled)])
        greedy, sampled = [x for g, _ in parts for x in g], [x for _, s in parts for x in s]
    return plan.summarize(greedy, sampled)


class Evaluator(TrainerCallback):
    """Evaluates the live model every `every` steps (and when called for step 0 and the final step),
    through the engine's generation context; with several processes each scores its share of the
    items, and the main process writes the line."""

    def __init__(self, run: RunDir, plan: EvalPlan, every: int, engine, on_result=None):
        self.run, self.plan, self.every, self.engine, self.on_result = run, plan, every, engine, on_result
        self.last_step = None
        self.seconds = 0.0  # evaluation time, reported apart from training time

    def evaluate(self, step: int) -> dict:
        t0, acc = time.perf_counter(), self.engine.accelerator
        result = {"step": step, **evaluation(self.engine, self.plan, f"evaluation at step {step}")}
        self.seconds += time.perf_counter() - t0
        if acc.is_main_process:
            append_jsonl(self.run.evals, result)
        crash_point("evaluated")
        self.last_step = step
        if self.on_result:
            self.on_result(result)
        return result

    def on_step_end(self, args, state, control, **kwargs):
        if self.every and state.global_step % self.every == 0:
            self.evaluate(state.global_step)


class StopAt(TrainerCallback):
    """End a segment at `step` with a checkpoint there (a rollback target or the run's last step),
    whatever checkpoint_every is."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= min(self.step, state.max_steps):
            control.should_save = True
            control.should_training_stop = True


class CheckpointMarker(TrainerCallback):
    """Writes a checkpoint's completion marker (`npo.rundir.layout.mark_complete`) once HF has written its
    files: `state()` is what the run wants saved with it (books, the watch, the guidance's stats)."""

    def __init__(self, state, after_save=None):
        self.state = state
        self.after_save = after_save  # the main process, once the checkpoint is complete (npo.rundir.retention)

    def on_step_end(self, args, state, control, **kwargs):
        crash_point("step")

    def on_save(self, args, state, control, **kwargs):
        # HF calls on_save right after writing checkpoint-<global_step>, and after this step's on_log
        processes = PartialState()
        processes.wait_for_everyone()  # every process has written its share (its RNG state, shards)
        crash_point("checkpoint")
        if processes.is_main_process:
            mark_complete(checkpoint_folder(Path(args.output_dir), state.global_step), self.state())
            if self.after_save is not None:
                self.after_save()
        processes.wait_for_everyone()


class PlateauWatch(TrainerCallback):
    """Stops the final trajectory at the first step where `npo.algo.interventions.plateaued` holds on the
    on-policy group accuracy (`signal/group_accuracy`; the training reward would count guides),
    once step >= `earliest` and the look-ahead still fits in the run."""

    def __init__(self, history: list[float], window: int, min_gain: float, earliest: int, latest: int,
                 every: int = 1):
        self.history, self.window, self.min_gain = list(history), window, min_gain
        self.earliest, self.latest, self.every = earliest, latest, every  # every: fire on generation boundaries
        self.fired_at: int | None = None
        self.evidence: dict = {}

    def on_log(self, args, state, control, logs=None, **kwargs):
        # on_log, not on_step_end: HF logs a step after its on_step_end, and a save requested here
        # still happens for this step.
        if not logs or "signal/group_accuracy" not in logs:
            return
        self.history.append(float(logs["signal/group_accuracy"]))
        step = state.global_step
        if (self.earliest <= step <= self.latest and step % self.every == 0
                and plateaued(self.history, self.window, self.min_gain)):
            w = self.window
            self.fired_at = step
            self.evidence = {"signal": "signal/group_accuracy", "window": w, "min_gain": self.min_gain,
                             "mean_last": sum(self.history[-w:]) / w,
                             "mean_before": sum(self.history[-2 * w:-w]) / w}
            control.should_save = True
            control.should_training_stop = True

    @property
    def stopped(self) -> bool:
        return self.fired_at is not None

    def snapshot(self) -> dict:
        """Saved in each checkpoint: where it fired, if it did (a segment resumed there has ended)."""
        return {"fired_at": self.fired_at, "evidence": self.evidence}

    def restore(self, snapshot: dict | None, ended: bool) -> None:
        """Resuming from a checkpoint (its snapshot); `ended`: the segment got past its start. The
        history comes from metrics.jsonl, which a resume cut back to that checkpoint."""
        if ended and snapshot and snapshot["fired_at"] is not None:
            self.fired_at, self.evidence = snapshot["fired_at"], snapshot["evidence"]


class AutoWatch(TrainerCallback):
    """Feeds AutoNPO's controller one record per step of the final trajectory (the trainer's gate
    outcome through `on_gate`, the step's signals from its log); stops the segment with a checkpoint
    at the step where it triggers. What the controller had seen is saved with every checkpoint
    (`snapshot`) and restored from the checkpoint a segment starts from (`restore`): a rollback to t,
    and a resume at t, both continue from what it had seen at t (`npo.algo.controller`)."""

    def __init__(self, controller: Controller):
        self.controller = controller
        self.trigger = None
        self.gate = None  # the last `npo.algo.groups.GateOutcome`

    def on_gate(self, outcome) -> None:
        self.gate = outcome

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "signal/group_accuracy" not in logs:
            return
        rec = StepRecord(state.global_step, float(logs["signal/group_accuracy"]), float(logs.get("entropy", 0.0)),
                         list(self.gate.failed), list(self.gate.histogram))
        trigger = self.controller.observe(rec)
        if trigger is not None and state.global_step < state.max_steps:
            self.trigger = trigger
            control.should_save = True
            control.should_training_stop = True

    @property
    def stopped(self) -> bool:
        return self.trigger is not None

    def snapshot(self) -> dict:
        return {"seen": asdict(self.controller.state.seen),
                "trigger": asdict(self.trigger) if self.trigger is not None else None}

    def restore(self, snapshot: dict | None, ended: bool) -> None:
        """From the checkpoint a segment starts at (None: the base model, nothing seen yet); `ended`:
        the segment got past its start, so a trigger saved there is this segment's."""
        self.controller.rollback(Seen(**snapshot["seen"]) if snapshot else Seen())
        if ended and snapshot and snapshot["trigger"] is not None:
            self.trigger = Trigger(**snapshot["trigger"])


class Progress(TrainerCallback):
    """A bar with the step's reward and the last held-out accuracy."""

    def __init__(self, total: int, initial: int = 0, desc: str = "train", enabled: bool = True, leave: bool = True):
        self.bar = tqdm(total=total, initial=initial, desc=desc, disable=not enabled, dynamic_ncols=True,
                        leave=leave)
        self.reward = None
        self.acc = None

    def eval_result(self, result: dict) -> None:
        self.acc = result["accuracy"]
        self._postfix()

    def _postfix(self):
        post = {}
        if self.reward is not None:
            post["reward"] = f"{self.reward:.3f}"
        if self.acc is not None:
            post["acc"] = f"{self.acc:.3f}"
        self.bar.set_postfix(post, refresh=False)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "reward" in logs:
            self.reward = float(logs["reward"])

    def on_step_end(self, args, state, control, **kwargs):
        self._postfix()
        self.bar.update(state.global_step - self.bar.n)

    def close(self):
        self.bar.close()


def warmup_bar(show: bool):
    """A progress callback for the embedded default's warm start (`npo.models.tiny.train_warmup`)."""
    if not show:
        return None
    bar = {}

    def progress(step, total, loss):
        if "b" not in bar:
            bar["b"] = tqdm(total=total, desc="warmup (cached after the first run)", dynamic_ncols=True)
        bar["b"].set_postfix(loss=f"{loss:.3f}", refresh=False)
        bar["b"].update(1)
        if step == total:
            bar["b"].close()

    return progress
