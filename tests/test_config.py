"""Config validation covers every field: unknown keys, wrong types, ranges, the GRPO pass-through."""

import pytest

from npo.config.run import RunConfig, field_docs, load_config, parse_override
from npo.errors import UserError

from conftest import ROOT


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_defaults_load():
    cfg = load_config(None)
    assert isinstance(cfg, RunConfig) and cfg.method == "grpo"


WRONG = {int: "abc", float: "abc", str: 12, bool: "maybe", dict: [1], list: {"a": 1}}


@pytest.mark.parametrize("name,default", [(n, d) for n, _, d in field_docs()])
def test_every_field_rejects_a_wrong_type(name, default):
    bad = WRONG[type(default)]
    with pytest.raises(UserError) as e:
        load_config(None, [f"{name}={bad}" if not isinstance(bad, (list, dict)) else f"{name}={bad!r}"])
    assert name in str(e.value)


def test_every_field_is_documented():
    for name, help_text, _ in field_docs():
        assert help_text, name


@pytest.mark.parametrize("setting,field", [
    ("train.steps=0", "train.steps"),
    ("train.prompts_per_step=-1", "train.prompts_per_step"),
    ("train.checkpoint_every=0", "train.checkpoint_every"),
    ("eval.n=100000", "eval.n"),
    ("eval.every=-1", "eval.every"),
    ("eval.samples=-2", "eval.samples"),
    ("eval.temperature=0", "eval.temperature"),
    ("eval.max_new_tokens=-1", "eval.max_new_tokens"),
    ("eval.batch_size=0", "eval.batch_size"),
    ("task.reward_threshold=1.5", "task.reward_threshold"),
    ("task.verifier_timeout=0", "task.verifier_timeout"),
    ("task.train_size=0", "task.train_size"),
    ("task.eval_size=0", "task.eval_size"),
    ("task.spec=", "task.spec"),
    ("model.path=", "model.path"),
    ("model.tiny.hidden_size=130", "model.tiny.hidden_size"),
    ("model.tiny.num_key_value_heads=3", "model.tiny.num_key_value_heads"),
    ("model.tiny.num_hidden_layers=0", "model.tiny.num_hidden_layers"),
    ("model.warmup.steps=-1", "model.warmup.steps"),
    ("model.warmup.lr=0", "model.warmup.lr"),
    ("model.warmup.batch_size=0", "model.warmup.batch_size"),
    ("method=ppo", "method"),
    ("seed=-1", "seed"),
])
def test_ranges(setting, field):
    with pytest.raises(UserError) as e:
        load_config(None, [setting])
    assert field in str(e.value)


def test_unknown_key_names_file_and_field(tmp_path):
    p = write(tmp_path, "train:\n  stepz: 3\n")
    with pytest.raises(UserError) as e:
        load_config(p)
    assert str(p) in str(e.value) and "train.stepz" in str(e.value) and "unknown field" in str(e.value)


def test_non_numeric_set_for_numeric_field():
    with pytest.raises(UserError) as e:
        load_config(None, ["train.steps=ten"])
    assert "train.steps" in str(e.value) and "integer" in str(e.value)


def test_int_accepted_for_float_and_set_applies():
    cfg = load_config(None, ["model.warmup.lr=1", "train.steps=7"])
    assert cfg.model.warmup.lr == 1.0 and cfg.train.steps == 7


def test_grpo_passthrough_checked_against_trl():
    with pytest.raises(UserError, match="train.grpo.not_a_field: not a field of trl.GRPOConfig"):
        load_config(None, ["train.grpo.not_a_field=1"])
    with pytest.raises(UserError, match="train.grpo.max_steps: set by npo"):
        load_config(None, ["train.grpo.max_steps=5"])
    with pytest.raises(UserError, match="train.grpo.learning_rate"):
        load_config(None, ["train.grpo.learning_rate=fast"])
    with pytest.raises(UserError, match="train.grpo"):  # TRL's own check: n must be >= 2
        load_config(None, ["train.grpo.num_generations=1"])
    cfg = load_config(None, ["train.grpo.epsilon=0.3"])
    assert cfg.train.grpo == {"epsilon": 0.3}


def test_bad_yaml_and_missing_file(tmp_path):
    with pytest.raises(UserError, match="no such config file"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(write(tmp_path, "train: [1,\n"))
    with pytest.raises(UserError, match="expected a mapping"):
        load_config(write(tmp_path, "train: 3\n"))


def test_parse_override():
    assert parse_override("a.b=3") == (["a", "b"], 3)
    assert parse_override("x=abc") == (["x"], "abc")
    with pytest.raises(UserError):
        parse_override("novalue")


def test_the_grpo_pass_through_is_resolved_once_per_config(monkeypatch):
    """`train.grpo` over npo's defaults is resolved once (RunConfig.resolved_grpo); what reads it later (the
    GRPOConfig's arguments, the precision, evaluation's length, the guide sources' sampling) does not
    resolve it again."""
    import npo.config.trl_args as trl_args
    from npo.config.trl_args import eval_max_new_tokens, grpo_kwargs, run_precision
    from npo.guides.sources import guide_sampling

    cfg = load_config(ROOT / "configs" / "tiny-npo-bootstrap.yaml")
    calls = []
    real = trl_args._hints  # the first thing every resolution (grpo_overrides) does, whoever imported it
    monkeypatch.setattr(trl_args, "_hints", lambda: calls.append(1) or real())
    fresh = load_config(ROOT / "configs" / "tiny-npo-bootstrap.yaml")
    assert len(calls) == 1  # validation resolved it
    grpo_kwargs(fresh, output_dir="x"), run_precision(fresh), eval_max_new_tokens(fresh), guide_sampling(fresh)
    assert len(calls) == 1 and fresh.resolved_grpo is fresh.resolved_grpo
    assert fresh.resolved_grpo == cfg.resolved_grpo and "num_generations" in fresh.resolved_grpo


def test_a_runs_shape_is_resolved_once_and_a_grpoconfig_built_once_to_check_and_once_to_train(monkeypatch, tmp_path):
    """Validation returns one resolved record (TRL's arguments, n, G, processes, batch, chunk steps,
    precision) that every reader takes from the config: one GRPOConfig checks the pass-through, one is the
    trainer's."""
    from trl import GRPOConfig

    from npo.api import api_arguments
    from npo.config.trl_args import eval_max_new_tokens, grpo_kwargs, run_precision
    from npo.trl_seam.setup import trainer_args

    built, real = [], GRPOConfig.__post_init__
    monkeypatch.setattr(GRPOConfig, "__post_init__", lambda self: built.append(1) or real(self))
    cfg = load_config(None, ["method=rlep", "npo.source=pool:/x.jsonl", "train.prompts_per_step=4",
                             "train.grpo.steps_per_generation=2", "train.checkpoint_every=2"])
    assert len(built) == 1
    r = cfg.resolved
    assert (r.n, r.G, r.processes, r.micro, r.accumulation, r.chunk_steps) == (10, 8, 1, 40, 1, 2)  # fill add: n + M (2)
    grpo_kwargs(cfg, "x"), run_precision(cfg), eval_max_new_tokens(cfg), api_arguments(cfg, tmp_path)
    assert len(built) == 1 + 1  # NPOConfig (the API's arguments) is a GRPOConfig of its own
    args = trainer_args(cfg, tmp_path)
    assert len(built) == 3 and args.num_generations == 10 and cfg.resolved is r
