"""Trainer callbacks: per-step metrics to `metrics.jsonl`, periodic held-out evaluation to
`eval.jsonl`, a progress bar with reward and accuracy, and a checkpoint at the final step."""

from __future__ import annotations

import time

from tqdm import tqdm
from transformers import TrainerCallback

from npo.rundir import RunDir, append_jsonl

# metrics.jsonl key <- TRL log key. Every key is documented in README "Metrics".
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
            rec[key] = float(logs[trl_key])
    for key, value in logs.items():
        if key.startswith(("signal/", "npo/", "verify/")):
            rec[key] = float(value)
    return rec


class MetricsWriter(TrainerCallback):
    def __init__(self, run: RunDir, trainer_ref):
        self.run, self.trainer_ref = run, trainer_ref

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "reward" in logs and state.is_world_process_zero:
            rec = metrics_record(state.global_step, logs)
            stats = self.trainer_ref().scorer.guard.stats
            rec["verify/errors"], rec["verify/timeouts"] = stats.errors, stats.timeouts
            append_jsonl(self.run.metrics, rec)


class Evaluator(TrainerCallback):
    """Evaluates every `every` steps (and is called directly for step 0 and the final step)."""

    def __init__(self, run: RunDir, evaluate_fn, every: int, on_result=None):
        self.run, self.evaluate_fn, self.every, self.on_result = run, evaluate_fn, every, on_result
        self.last_step = None
        self.seconds = 0.0  # evaluation time, reported apart from training time

    def evaluate(self, model, step: int) -> dict:
        t0 = time.perf_counter()
        result = {"step": step, **self.evaluate_fn(model)}
        self.seconds += time.perf_counter() - t0
        append_jsonl(self.run.evals, result)
        self.last_step = step
        if self.on_result:
            self.on_result(result)
        return result

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.every and state.global_step % self.every == 0:
            self.evaluate(model, state.global_step)


class SaveFinal(TrainerCallback):
    """Always leave a checkpoint at the last step, whatever checkpoint_every is."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps:
            control.should_save = True


class Progress(TrainerCallback):
    """A bar with the step's reward and the last held-out accuracy."""

    def __init__(self, total: int, initial: int = 0, desc: str = "train", enabled: bool = True):
        self.bar = tqdm(total=total, initial=initial, desc=desc, disable=not enabled, dynamic_ncols=True)
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
