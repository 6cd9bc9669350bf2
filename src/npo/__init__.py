"""npo: Near-Future Policy Optimization on TRL's GRPOTrainer.

The package, one folder per concept, bottom to top. A module imports only from its own folder or one
listed above it (tests/test_layers.py reads this map), so reading it needs only what lies above it here.

    errors.py   UserError: bad input, one line, exit code 2
    algo/       the paper's math, pure: the gate, injection, Q/V/S, AutoNPO's controller, replay
    config/     one run's YAML config: fields, checks, the methods and baselines, TRL's arguments
    rundir/     the run folder: layout, lock, journal, resume, retention, crash points
    tasks/      prompts and verifiers (arith, files, reasoning-gym, images), prompting, rewards
    models/     model folders, the embedded defaults, seeded sampling and scoring, evaluation
    trl_seam/   everything that reaches into TRL, transformers or accelerate (GuidedGRPOTrainer)
    guides/     guide sources, the guide bank, the measurement of Q, V and S
    loops/      a run: GRPO, NPO and the baselines, AutoNPO, the segment both loops train
    api.py      NPOConfig and NPOTrainer: TRL's GRPOConfig and GRPOTrainer, plus `guide`
    cli/        the `npo` command and its subcommands; reports read run folders
    configs/    the shipped configs (`npo demo`'s regime), data, not code
"""

# The public API, imported on first use: `import npo` stays instant (the CLI answers --help without torch).
_API = {"NPOConfig": "npo.api", "NPOTrainer": "npo.api",
        **{name: "npo.config.methods" for name in ("Method", "Guide", "NearFuture", "SelfGuide", "Teacher", "TeacherModel",
                                               "Checkpoint", "Pool", "Replay", "AutoNPO", "LUFFY", "ExGRPO", "RLEP",
                                               "Bootstrap", "Plateau")},
        "math_verify_reward": "npo.tasks.rewards", "TaskConfig": "npo.config.run", "ModelConfig": "npo.config.run",
        "WarmupConfig": "npo.config.run"}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'npo' has no attribute {name!r}")
