"""The measurement engine: Q, V and S = Q/V of guide sources for a policy of a run, on prompts it fails.

Two users, one estimate (`score`: verify each source candidate, score it under the current policy,
`npo.algo.estimators.estimate`):
- `Probe`, for `npo signal` on a run folder (`Probe.from_run`): policies are the run's checkpoints
  (step 0 = the model it started from) or model folders, loaded once per probe, offline.
- `measure_lookbacks`, for AutoNPO at a trigger at T, inside the run: pi_T is the live engine; it is
  sampled once on the mistake pool, and each candidate pi_{T-Delta} is loaded into the live engine
  in place (model only) to score those samples. No second copy of the model.
Sources are `npo.guides.sources` objects, the same kinds training injects from.

Seeds, one per prompt, so that every source of one policy is paired (common random numbers): F of
the policy at step t is measured with base `seed * 7919 + t`; every source proposes for the policy at
t with base `seed * 104729 + t` (`npo.models.generation.prompt_seeds`).
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import torch

from npo.algo.estimators import Trajectory, estimate, failed_set
from npo.algo.groups import p_hat
from npo.algo.replay import Entry, ReplayBuffer, question_index
from npo.config.run import RunConfig, load_config
from npo.errors import UserError
from npo.guides.sources import GuideSource
from npo.models.generation import Policy, Sample, Sampling, prompt_seeds, text_tokenizer
from npo.models.load import check_model_folder, load_policy
from npo.rundir.layout import RunDir, checkpoint_state
from npo.tasks import build_split
from npo.tasks.prompting import prompt_style
from npo.tasks.rewards import TaskScorer


class Probe:
    def __init__(self, cfg: RunConfig, run: RunDir, train_items: list, scorer: TaskScorer, style: str, *, k: int,
                 seed: int, boot: int, prompts: int = 0, tau: float | None = None):
        """k: tries per prompt of a source; prompts: training prompts drawn (with `seed`) for F by fresh
        rollouts; boot: bootstrap resamples; tau: the gate that defines F (default: the run's)."""
        self.cfg, self.run, self.scorer, self.style = cfg, run, scorer, style
        g = cfg.resolved_grpo
        self.n, self.temperature, self.max_new = g["num_generations"], g["temperature"], g["max_completion_length"]
        self.sampling, self.budget = Sampling.of(g), cfg.model.score_memory_mb << 20  # as the run sampled and scored
        self.train_items = train_items
        self.items = random.Random(seed).sample(train_items, min(prompts, len(train_items)))
        self.k, self.boot, self.seed, self.tau = k, boot, seed, cfg.npo.tau if tau is None else tau
        self._policies: dict = {}
        self._failed: dict = {}
        self._groups: dict = {}  # step -> (its n samples per probe prompt, their rewards)
        self.generated_tokens = 0

    @classmethod
    def from_run(cls, run_root: str | Path, *, prompts: int, seed: int, k: int, boot: int,
                 tau: float | None = None) -> "Probe":
        """A probe over a finished (or running) run folder, with its own verifier (close it)."""
        run = RunDir(run_root)
        if not run.config.is_file():
            raise UserError(f"{run_root}: not a run directory (no config.yaml)")
        cfg = load_config(run.config)
        task, train_items, _ = build_split(cfg)
        style = json.loads(run.model_json.read_text())["prompt_style"] if run.model_json.exists() else "plain"
        scorer = TaskScorer.for_run(task, style, cfg, warm=train_items[0])
        return cls(cfg, run, train_items, scorer, style, k=k, seed=seed, boot=boot, prompts=prompts, tau=tau)

    def policy(self, ref: int | str, kind: str = "checkpoint") -> Policy:
        """A checkpoint step of the run (0: the model it started from), or a model folder (kind
        `teacher_model`: its own tokenizer and prompt style allowed)."""
        if ref not in self._policies:
            if ref == 0:
                path = Path(json.loads(self.run.model_json.read_text())["model_path"])
            elif isinstance(ref, int):
                path = self.run.checkpoint(ref)
                if checkpoint_state(path) is None:  # absent, or cut short by a crash: never loaded
                    have = ", ".join(map(str, self.run.checkpoint_steps())) or "none"
                    what = "an incomplete" if path.is_dir() else "no"
                    raise UserError(f"--step/--deltas: {what} checkpoint at step {ref} in {self.run.root} "
                                    f"(complete checkpoints: {have})")
            else:
                path = check_model_folder(ref, "--source checkpoint")
            model, tok = load_policy(path)
            if kind == "teacher_model":
                self._policies[ref] = Policy(model, tok, prompt_style(tok), self.sampling, self.budget)
                return self._policies[ref]
            if self._policies and (text_tokenizer(tok).get_vocab()
                                   != text_tokenizer(next(iter(self._policies.values())).tokenizer).get_vocab()):
                raise UserError(f"--source checkpoint:{ref}: its tokenizer differs from the run's")
            self._policies[ref] = Policy(model, tok, self.style, self.sampling, self.budget)
        return self._policies[ref]

    def replay_buffer(self, step: int, earlier: list[int]) -> ReplayBuffer:
        """The run's replay buffer at `step`: the one its checkpoint saved (source replay), else rebuilt
        as training collects it, from the groups of n fresh samples each earlier checkpoint (steps
        `earlier` that exist) wrote on the probe's prompts, oldest first."""
        buffer = ReplayBuffer.from_config(self.cfg.replay)
        saved = ((checkpoint_state(self.run.checkpoint(step)) or {}).get("injection") or {}).get("replay")
        if saved is not None:
            buffer.load_json(saved)
            return buffer
        index = question_index(self.train_items)
        have = set(self.run.checkpoint_steps()) | {0}
        for s in sorted(x for x in set(earlier) if 0 <= x < step and x in have):
            self.failed(s)
            for it, group, rewards in zip(self.items, *self._groups[s]):
                keep = [Entry(x.token_ids, x.text, x.logps, s, -sum(x.logps) / max(len(x.logps), 1))
                        for x, r in zip(group, rewards) if r == 1.0]
                buffer.observe(index[it.key], int(sum(rewards)), self.n, keep)
        return buffer

    def failed(self, step: int) -> list[int]:
        """F of the policy at `step`: prompts with p_hat < tau over n fresh samples."""
        if step not in self._failed:
            seeds = prompt_seeds(self.seed * 7919 + step, list(range(len(self.items))))
            groups = self.policy(step).sample(self.items, k=self.n, temperature=self.temperature,
                                              max_new_tokens=self.max_new, seeds=seeds)
            self.generated_tokens += sum(len(x.token_ids) for g in groups for x in g)
            rewards = torch.tensor([self.scorer.reward(x.text, it) for it, g in zip(self.items, groups) for x in g])
            self._groups[step] = (groups, rewards.view(-1, self.n).tolist())
            self._failed[step] = failed_set(p_hat(rewards, self.n), self.tau)
        return self._failed[step]

    def measure(self, current: int, source: GuideSource, label: str, delta: int | None) -> dict:
        """Q, V, S of `source` for the policy at step `current`, on its F measured by fresh rollouts."""
        t0 = time.perf_counter()
        live = self.policy(current)
        keys = self.failed(current)
        items = [self.items[i] for i in keys]
        cands = source.sample(items, prompt_seeds(self.seed * 104729 + current, keys), live)
        if source.generates:
            self.generated_tokens += sum(len(x.token_ids) for g in cands for x in g)
        row = {"source": label, "delta": delta, "current_step": current,
               "source_name": source.name, "source_step": current if source.kind == "self" else source.step,
               **score(items, cands, self.scorer, live, self.temperature, boot=self.boot, seed=self.seed)}
        row["seconds"] = round(time.perf_counter() - t0, 2)
        return row


def score(items: list, cands: list[list[Sample]], scorer, current: Policy, temperature: float, *, boot: int,
          seed: int) -> dict:
    """Q, V, S of candidates (per prompt of F) for the `current` policy: each candidate verified, and
    scored under `current` (a policy's samples keep their source log-probs; fixed traces only count
    when correct). Adds `found`, the per-prompt outcome behind Q."""
    found, keep = [], []  # keep: (prompt in F, candidate, verified correct)
    for f, (it, cand) in enumerate(zip(items, cands)):
        ok = [scorer.reward(c.text, it) == 1.0 for c in cand]
        found.append(any(ok))
        keep += [(f, c, r) for c, r in zip(cand, ok) if r or c.logps is not None]
    current_logps = current.token_logps([items[f] for f, _, _ in keep], [c.token_ids for _, c, _ in keep],
                                        temperature=temperature)
    trajs = [Trajectory(f, lp, c.logps, r) for (f, c, r), lp in zip(keep, current_logps)]
    return {**estimate(found, trajs, boot=boot, seed=seed), "found": found}


def measure_lookbacks(live: Policy, load, T: int, pools: dict[int, list[int]], train_items: list, scorer, *, k: int,
                      temperature: float, max_new_tokens: int, seed: int, boot: int) -> tuple[list[dict], int]:
    """AutoNPO's table at a trigger at T: for each candidate Delta (with its pool of failed prompts),
    Q, V, S of pi_T as the source for pi_{T-Delta}. `live` holds pi_T when called; `load(step)` puts
    that checkpoint's weights into it in place (it holds the last candidate's on return).
    Returns the table and the completion tokens generated."""
    union = list(dict.fromkeys(i for pool in pools.values() for i in pool))
    samples = dict(zip(union, live.sample([train_items[i] for i in union], k=k, temperature=temperature,
                                          max_new_tokens=max_new_tokens, seeds=prompt_seeds(seed * 104729 + T, union))))
    table = []
    for delta, pool in pools.items():
        load(T - delta)
        row = score([train_items[i] for i in pool], [samples[i] for i in pool], scorer, live, temperature,
                    boot=boot, seed=seed)
        table.append({"delta": delta, **{key: row[key] for key in ("Q", "V", "S", "Q_ci", "V_ci", "S_ci", "n_failed",
                                                                   "n_found")}})
    return table, sum(len(x.token_ids) for group in samples.values() for x in group)
