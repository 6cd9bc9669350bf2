"""npo: Near-Future Policy Optimization on TRL's GRPOTrainer.

The package in layers, top to bottom. A module imports only from its own layer or below
(tests/test_layers.py), so reading it needs only what lies beneath it.

    commands and reports   cli, signal_cli, eval_cli, pool_cli, demo, compare, report
        parse arguments, validate everything, call one job, print; reports read run folders
    the Python API         api
        NPOConfig (a trl.GRPOConfig plus npo's fields) and NPOTrainer (what GRPOTrainer takes, plus
        `guide`): one run, described as the YAML config describes it (`npo train` goes through it)
    loops                  train, resume, loop, autoloop, segments
        `train` prepares a run and dispatches on the method: `loop` (GRPO, NPO's two interventions,
        the baselines' guided runs) and `autoloop` (AutoNPO), each readable top to bottom;
        `segments` is the machinery both use (a segment of TRL training from a checkpoint, the
        intervention record)
    sources and measurement  sources, guides, probe
        where guides come from (near future, self, teacher traces or model, replay, another run's
        checkpoint or pool), the guide bank and an intervention's window, and the engine that
        measures Q, V, S of a source
    the TRL seam           trainer (trainer_setup builds it), engine, vllm_sampling, callbacks, reporting
        GuidedGRPOTrainer (the one subclass of trl.GRPOTrainer, pinned by tests/test_trl_seam.py; one per
        run, rolled back in place), the engine's generation path for guides, evaluation and
        measurement, the callbacks that write metrics, evaluate, stop segments and feed the controller,
        and reporting (one TensorBoard log / W&B run per npo run)
    tasks, models, generation  tasks.*, models.*, prompting, rewards, generation, share, evaluate,
                               images, multimodal
        prompts and verifiers, model folders and the embedded defaults (tiny, tiny-vl), sampling and
        scoring, image prompts by reference and their fields in TRL's batches
    foundation             config (method_config: the methods' sections; guides_api: the same as the API's
                           `guide` objects), configfile (strict
                           YAML), checks, grpo_args, precision (what model.dtype
                           means), runlock (one run
                           per folder), rundir, journal (what a resume continues
                           from), accounting, errors, faults (crash points), order (the data
                           order), presets (the baselines as settings), retention (which checkpoints
                           stay whole), and the math: groups,
                           injection, replay, signal, autonpo, interventions
        plain records and pure functions in the paper's symbols; no model, no trainer
"""

LAYERS = (
    ("foundation", {"npo.errors", "npo.guides_api", "npo.checks", "npo.config", "npo.method_config", "npo.configfile", "npo.runlock", "npo.grpo_args",
                    "npo.rundir", "npo.journal", "npo.faults", "npo.accounting",
                    "npo.groups", "npo.injection", "npo.signal", "npo.autonpo", "npo.interventions", "npo.order",
                    "npo.presets", "npo.replay", "npo.retention", "npo.precision"}),
    ("tasks, models, generation", {"npo.tasks", "npo.tasks.base", "npo.tasks.arith", "npo.tasks.files",
                                   "npo.tasks.rg", "npo.tasks.scratch", "npo.tasks.python", "npo.tasks.visual", "npo.tasks.verify",
                                   "npo.models", "npo.models.load", "npo.models.check", "npo.models.tiny",
                                   "npo.models.tiny_vl", "npo.models.smollm2", "npo.prompting", "npo.rewards",
                                   "npo.generation", "npo.share", "npo.evaluate", "npo.images", "npo.multimodal"}),
    ("the TRL seam", {"npo.trainer", "npo.trainer_setup", "npo.engine", "npo.vllm_sampling", "npo.callbacks",
                      "npo.reporting", "npo.user_callbacks"}),
    ("sources and measurement", {"npo.sources", "npo.guides", "npo.probe"}),
    ("loops", {"npo.segments", "npo.loop", "npo.autoloop", "npo.resume", "npo.train"}),
    ("the Python API", {"npo.api"}),
    ("commands and reports", {"npo.cli", "npo.signal_cli", "npo.eval_cli", "npo.pool_cli", "npo.demo",
                              "npo.compare", "npo.report"}),
)

# The public API, imported on first use: `import npo` stays instant (the CLI answers --help without torch).
_API = {"NPOConfig": "npo.api", "NPOTrainer": "npo.api",
        **{name: "npo.guides_api" for name in ("Guide", "NearFuture", "SelfGuide", "Teacher", "TeacherModel",
                                               "Checkpoint", "Pool", "Replay", "AutoNPO", "LUFFY", "ExGRPO", "RLEP",
                                               "Bootstrap", "Plateau")},
        "math_verify_reward": "npo.rewards", "TaskConfig": "npo.config", "ModelConfig": "npo.config",
        "WarmupConfig": "npo.config"}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'npo' has no attribute {name!r}")
