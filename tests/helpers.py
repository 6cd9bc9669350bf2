"""Shared test helpers: a trainer on the embedded default without a run."""

from npo.algo.injection import Trajectory
from npo.config.run import load_config
from npo.guides.bank import GuideBank
from npo.guides.sources import GuideSource
from npo.models.load import load_policy, resolve_model_path
from npo.tasks import build_split
from npo.tasks.rewards import TaskScorer
from npo.trl_seam.setup import build_trainer, trainer_args

from conftest import ROOT


def tiny_trainer(tmp_path, *sets, config="tiny-grpo.yaml", guidance=None, callbacks=()):
    cfg = load_config(ROOT / "configs" / config, list(sets))
    task, train_items, _ = build_split(cfg)
    args = trainer_args(cfg, tmp_path / "checkpoints")
    model, tokenizer = load_policy(resolve_model_path(cfg, train_items))
    scorer = TaskScorer(task, "plain")
    trainer = build_trainer(cfg, args, model, tokenizer, scorer, "plain", train_items,
                            list(callbacks), guidance=guidance)
    return cfg, trainer


def answer_bank(trainer) -> GuideBank:
    """A verified-correct guide (the reference answer) for every training prompt."""
    tok, bank = trainer.processing_class, GuideBank()
    for i, item in enumerate(trainer.items):
        ids = tok.encode(item.answer, add_special_tokens=False) + [tok.eos_token_id]
        bank.add(i, [Trajectory(ids, item.answer, "reference", 0, [-1.0] * len(ids))])
    return bank


class NeverAsked(GuideSource):
    """A source for a bank that already holds every prompt: the trainer must not ask it."""

    kind, name, step, k = "near_future", "prefilled", 0, 4

    def sample(self, items, seed, live):
        raise AssertionError("the bank had a guide; the source must not be asked")


def generation_batch(trainer, prompts: int):
    n = trainer.num_generations
    return [trainer.train_dataset[i] for i in range(prompts) for _ in range(n)]

