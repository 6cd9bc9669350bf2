"""The user's TRL callbacks (`NPOTrainer(callbacks=...)`), seeing one run as TRL users expect.

An npo run is several `Trainer.train()` calls of one engine (segments: a look-ahead, a rollback, the
guided window, ...). `RunCallbacks` stands between them and the user's callbacks:
- `on_train_begin` once, when the run's first segment starts; `on_train_end` once, when the run ends
  (`end_run`, called by `npo.loops.run.close_run`);
- a look-ahead's steps (a trajectory the run discards) are not the run's: its step events are not
  passed on, and its `on_log` records arrive with every key under `lookahead/`;
- `control.should_training_stop` set by a user's callback (early stopping, a time budget) ends the run
  at that step: the step is checkpointed (`should_save`), the segment ends, and the run closes with a
  summary that says where it stopped (`StopRequested`, caught by `npo.loops.run.train`).
AutoNPO's discarded steps (T - Delta*, T] are trained on the final trajectory before its decision, so
callbacks see them as steps, then `state.global_step` going back to the rollback point.
"""

from __future__ import annotations

from transformers import TrainerCallback

STEP_EVENTS = ("on_step_begin", "on_substep_end", "on_pre_optimizer_step", "on_optimizer_step", "on_step_end",
               "on_epoch_begin", "on_epoch_end", "on_evaluate", "on_save", "on_prediction_step")


class StopRequested(Exception):
    """A user's callback asked the run to stop at `step` (a checkpoint is there)."""

    def __init__(self, step: int):
        super().__init__(step)
        self.step = step


class RunCallbacks(TrainerCallback):
    def __init__(self, callbacks: list):
        self.callbacks = [cb() if isinstance(cb, type) else cb for cb in callbacks]  # TRL takes classes too
        self.final = True  # the segment under way is on the run's final trajectory (not a look-ahead)
        self.begun = False
        self.stop_at: int | None = None

    def _each(self, event: str, args, state, control, **kwargs):
        for cb in self.callbacks:
            result = getattr(cb, event, lambda *a, **k: None)(args, state, control, **kwargs)
            control = result if result is not None else control
        return control

    def on_init_end(self, args, state, control, **kwargs):
        return self._each("on_init_end", args, state, control, **kwargs)

    def on_train_begin(self, args, state, control, **kwargs):
        if self.begun:
            return control
        self.begun = True
        return self._each("on_train_begin", args, state, control, **kwargs)

    def on_train_end(self, args, state, control, **kwargs):
        return control  # a segment's end; the run's is end_run

    def end_run(self, args, state, control, **kwargs) -> None:
        self._each("on_train_end", args, state, control, **kwargs)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not self.final:
            logs = {f"lookahead/{k}": v for k, v in (logs or {}).items()}
        return self._each("on_log", args, state, control, logs=logs, **kwargs)

    def step_event(self, event: str, args, state, control, **kwargs):
        if not self.final:
            return control
        asked = control.should_training_stop  # npo's own stop (a segment's end) comes first
        control = self._each(event, args, state, control, **kwargs)
        if control.should_training_stop and not asked and self.stop_at is None:
            self.stop_at = state.global_step
            control.should_save = True  # the stopped run ends on a checkpoint
        return control


def _forward(event: str):
    def handler(self, args, state, control, **kwargs):
        return self.step_event(event, args, state, control, **kwargs)

    handler.__name__ = event
    return handler


for _event in STEP_EVENTS:
    setattr(RunCallbacks, _event, _forward(_event))
