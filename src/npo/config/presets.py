"""The baselines as presets of NPO's loop: `method: luffy | exgrpo | rlep` expand to npo and replay
settings (under the user's own values, which win). They differ from NPO only in where the guide comes
from, when it is injected, how many per group, and the loss on it; everything else -- model, data,
seeds, GRPO, evaluation, accounting -- is the run's. The settings are each paper's own code settings
(docs/METHOD.md section 6); docs/baselines.md lists every departure at our scale.

| method | source | when | per group | loss |
|---|---|---|---|---|
| luffy | a teacher's traces (`teacher:reference` by default) | every prompt, no gate | replaces 1 of n | f(p) = p / (p + 0.1), no clip |
| exgrpo | the run's own past successes (`replay`) | after the solve rate passes 0.35; half the prompts replayed | replaces 1 of n in replayed groups | f(w) = w / (w + 0.1), w to the recorded log-probs |
| rlep | a finished run's verified successes (`pool:PATH`) | every prompt with pool entries | adds 2 | plain (on_policy) |
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

# The shipped configs live in the package (the repository's configs/ links here), so that `npo demo`
# finds its regime from an installed wheel too.
DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"  # the demo regime

PRESETS: dict[str, dict] = {
    "luffy": {"npo": {"source": "teacher:reference", "inject_when": "always", "gated": False, "fill": "replace",
                      "slots": 1, "guide_loss": "shaping", "shaping_gamma": 0.1}},
    "exgrpo": {"npo": {"source": "replay", "inject_when": "always", "gated": False, "start_solve_rate": 0.35,
                       "targets": "replayed", "fill": "replace", "slots": 1, "guide_loss": "shaped_importance",
                       "shaping_gamma": 0.1},
               "replay": {"share": 0.5, "prefer": "medium", "select": "lowest_entropy", "retire_solved": True}},
    "rlep": {"npo": {"source": "pool:", "inject_when": "always", "gated": False, "fill": "add", "slots": 2,
                     "guide_loss": "on_policy"}},
}


def apply_preset(data: dict) -> dict:
    """The config mapping with its method's preset filled in under the values it already has."""
    preset = PRESETS.get(data.get("method")) if isinstance(data, dict) else None
    if preset is None:
        return data
    out = copy.deepcopy(data)
    for section, values in preset.items():
        mine = out.setdefault(section, {})
        if isinstance(mine, dict):  # a non-mapping is refused by the config's own check
            for key, value in values.items():
                mine.setdefault(key, value)
    return out


def preset_overrides(method: str) -> list[str]:
    """`--set` overrides that turn a config into `method`'s preset over it, whatever its npo section
    says (npo compare and npo demo: the baselines over one base config)."""
    sets = [f"method={method}", "npo.interventions=[]"]
    for section, values in PRESETS.get(method, {}).items():
        sets += [f"{section}.{key}={json.dumps(value)}" for key, value in values.items()]
    return sets


# The methods `npo compare` and `npo demo` run by name over one base config (configs/demo.yaml): each a
# list of --set overrides. self is NPO's interventions and windows with guides from the current policy
# (Delta = 0, the same k): the control that separates a later checkpoint from more tries.
METHOD_PRESETS: dict[str, list[str]] = {
    "grpo": ["method=grpo", "npo.interventions=[]"],
    "self": ["npo.source=self"],
    "npo": [],
    "autonpo": ["method=autonpo", "npo.interventions=[]"],
    **{name: preset_overrides(name) for name in PRESETS},
}
