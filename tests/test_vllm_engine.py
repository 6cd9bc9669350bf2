"""NPO through TRL's `use_vllm` path (colocate), with the vLLM library replaced by a CPU stand-in
(tests/fake_vllm.py) that keeps its own copy of the weights: TRL's own weight sync, generation and
importance-sampling correction run unchanged. A bootstrap intervention: the scout (0 -> 2), the bank
from the live policy at step 2, the in-place rollback to 0, two guided steps."""

import json

import fake_vllm
import pytest
import torch
from safetensors.torch import load_file

from npo.config.run import load_config
from npo.loops.npo import train_npo
from npo.loops.run import close_run, open_run, prepare
from npo.models.generation import prompt_seeds

from conftest import ROOT

SETS = ["train.steps=4", "train.checkpoint_every=2", "train.prompts_per_step=4", "eval.every=0", "eval.n=20",
        "eval.samples=0", "npo.interventions=[{kind: bootstrap, lookahead: 2, window: 2}]", "npo.k=2",
        "train.grpo.use_vllm=true", "train.grpo.vllm_mode=colocate"]


@pytest.fixture(scope="module")
def vllm_run(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        fake_vllm.install(mp)
        cfg = load_config(ROOT / "configs" / "tiny-npo-bootstrap.yaml", SETS)
        out = tmp_path_factory.mktemp("vllm") / "run"
        ctx = open_run(prepare(cfg, out), show_progress=False)
        trainer = ctx.trainer
        llm = trainer.vllm_generation.llm
        live = {}  # generate call index -> the policy's weights at that moment
        generate = llm.generate

        def watched(prompts, sampling_params=None, use_tqdm=False):
            live[len(llm.calls)] = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
            return generate(prompts, sampling_params=sampling_params, use_tqdm=use_tqdm)

        llm.generate = watched
        seen = []
        compute_loss = trainer._compute_loss

        def spy(model, inputs):
            seen.append({k: inputs[k].detach().clone() for k in ("npo_guide", "importance_sampling_ratio")})
            return compute_loss(model, inputs)

        trainer._compute_loss = spy
        train_npo(ctx)
        summary = close_run(ctx, out)
    return out, ctx, llm, live, seen, summary


def training_calls(llm):
    return [i for i, c in enumerate(llm.calls) if all(p.seed is None for p in c["params"])]


def guide_calls(llm):
    return [i for i, c in enumerate(llm.calls) if all(p.seed is not None for p in c["params"])]


def test_the_engine_holds_the_policy_at_every_training_generation(vllm_run):
    _, _, llm, live, _, _ = vllm_run
    calls = training_calls(llm)
    assert len(calls) == 2 + 4  # the scout's 2 steps, then the final trajectory's 4 (TRL: one call per step)
    for i in calls:
        assert all(torch.equal(llm.calls[i]["weights"][k], live[i][k]) for k in live[i]), i
    # the rollback to 0 changed the weights without changing the step: the next generation re-synced
    restart = calls[2]
    assert not all(torch.equal(llm.calls[restart]["weights"][k], llm.calls[calls[1]]["weights"][k]) for k in live[0])
    assert llm.prefix_resets == llm.loads / len(live[0]) >= 5  # one cache reset per sync


def test_the_bank_comes_from_the_policy_at_t_plus_delta_with_one_seed_per_prompt(vllm_run):
    out, ctx, llm, _, _, _ = vllm_run
    (bank_call,) = guide_calls(llm)
    guide = load_file(out / "lookahead" / "0-bootstrap" / "checkpoint-2" / "model.safetensors")
    engine = llm.calls[bank_call]["weights"]
    assert all(torch.equal(engine[k], guide[k]) for k in guide if k in engine)  # pi_2, not pi_1
    before = llm.calls[training_calls(llm)[1]]["weights"]  # the scout's last training generation: pi_1
    assert not all(torch.equal(engine[k], before[k]) for k in guide if k in engine)
    order = ctx.trainer.data_order()
    window = list(dict.fromkeys(x for s in range(0, 2) for x in order.prompts_at(s)))
    seeds = [p.seed for p in llm.calls[bank_call]["params"]]
    assert seeds == prompt_seeds(ctx.cfg.seed * 1_000_003 + 0, window)  # stable: a function of the prompt
    assert len(set(seeds)) == len(seeds) == len(window)  # and different for every prompt


def test_guide_rows_have_an_importance_ratio_of_exactly_one(vllm_run):
    _, _, _, _, seen, summary = vllm_run
    flagged = [b for b in seen if b["npo_guide"].any()]
    assert flagged and summary["interventions"] == 1
    for b in flagged:
        ratio = b["importance_sampling_ratio"]
        assert torch.equal(ratio[b["npo_guide"]], torch.ones_like(ratio[b["npo_guide"]]))


def test_after_an_in_place_swap_at_the_same_step_the_next_generation_resyncs(vllm_run):
    """AutoNPO scores candidates by loading their weights in place, without moving the step: TRL's own
    'synced at this step' tag must not let the engine keep the previous weights."""
    from npo.trl_seam.engine import load_weights

    out, ctx, llm, _, _, _ = vllm_run
    trainer = ctx.trainer
    with pytest.MonkeyPatch.context() as mp:
        fake_vllm.install(mp)
        trainer._last_loaded_step = trainer.state.global_step  # the engine holds the final policy's weights
        load_weights(trainer, out / "checkpoints" / "checkpoint-0")
        trainer.live_policy().sample(ctx.train_items[:2], k=1, temperature=1.0, max_new_tokens=4, seeds=[1, 2])
    start = load_file(out / "checkpoints" / "checkpoint-0" / "model.safetensors")
    engine = llm.calls[-1]["weights"]
    assert all(torch.equal(engine[k], start[k]) for k in start if k in engine)


def short_run(tmp_path, *sets, server=None):
    """An NPO run through TRL's vLLM path with the stand-in installed; returns (ctx, engine or client)."""
    with pytest.MonkeyPatch.context() as mp:
        fake_vllm.install(mp, server=server)
        cfg = load_config(ROOT / "configs" / "tiny-npo-bootstrap.yaml", SETS + list(sets))
        ctx = open_run(prepare(cfg, tmp_path / "run"), show_progress=False)
        vg = ctx.trainer.vllm_generation
        engine = vg.vllm_client if server else vg.llm
        trainer_weights = []  # at every guide call: what the trainer held
        calls = engine.requests if server else engine.calls
        ask = engine.generate

        def watched(*args, **kwargs):
            trainer_weights.append({k: v.detach().clone() for k, v in ctx.trainer.model.named_parameters()})
            return ask(*args, **kwargs)

        engine.generate = watched
        train_npo(ctx)
        close_run(ctx, tmp_path / "run")
    return ctx, calls, trainer_weights


def seeded(params) -> bool:
    return all(p.seed is not None for p in params)


def test_self_guides_after_trl_slept_the_engine_come_from_the_current_weights(tmp_path):
    """Sleep mode: TRL sleeps the engine at level 2 (weights discarded) after each generation; the `self`
    source asks it at that same step. The stand-in's discarded weights are noise, so guides sampled
    without pushing the weights again would come from noise."""
    _, calls, trainer_weights = short_run(tmp_path, "npo.source=self", "train.grpo.vllm_enable_sleep_mode=true",
                                          "train.grpo.top_k=5")
    guides = [i for i, c in enumerate(calls) if seeded(c["params"])]
    assert guides  # the self source asked in the window
    for i in guides:
        assert not calls[i]["discarded"]
        assert all(torch.equal(calls[i]["weights"][k], trainer_weights[i][k]) for k in calls[i]["weights"]), i
        assert all(p.top_k == 5 for p in calls[i]["params"])  # TRL's sampling fields, as its rollouts


def test_server_mode_asks_for_the_bank_in_one_batched_request(tmp_path, tiny_model_path):
    ctx, requests, trainer_weights = short_run(tmp_path, "train.grpo.vllm_mode=server", server=tiny_model_path)
    guides = [i for i, r in enumerate(requests) if r["seed"] is not None]
    order = ctx.trainer.data_order()
    window = list(dict.fromkeys(x for s in range(0, 2) for x in order.prompts_at(s)))
    assert len(guides) == 1 and requests[guides[0]]["n"] == ctx.cfg.npo.k  # one request for the whole bank
    assert len(requests[guides[0]]["prompts"]) == len(window)
    guide = load_file(tmp_path / "run" / "lookahead" / "0-bootstrap" / "checkpoint-2" / "model.safetensors")
    sent = requests[guides[0]]["weights"]
    assert all(torch.equal(sent[k], guide[k]) for k in guide if k in sent)  # the server held pi_2
    bank = json.loads((tmp_path / "run" / "guides" / "0-bootstrap.json").read_text())
    assert len(bank["tried"]) == len(window) and bank["guides"]


def test_server_mode_sends_image_prompts_with_their_images(tiny_model_path):
    """Image prompts reach `trl vllm-serve` as TRL sends its own: images made into server-side features,
    placed on the prompt's image tokens (`VLLMGeneration._place_features`), beside the token ids."""
    import types

    from PIL import Image

    from npo.models.load import load_policy
    from npo.trl_seam.vllm import _server

    _, tok = load_policy(tiny_model_path)
    with pytest.MonkeyPatch.context() as mp:
        fake_vllm.install(mp, server=tiny_model_path)
        client = fake_vllm.VLLMClient()
        placed = []
        vg = types.SimpleNamespace(vllm_client=client, _place_features=lambda f, ids: placed.append(ids) or f)
        trainer = types.SimpleNamespace(accelerator=types.SimpleNamespace(is_main_process=True, process_index=0))
        image = Image.new("RGB", (8, 8))
        ids = [tok(q)["input_ids"] for q in ("1+1=", "2+2=")]  # an image prompt, then a text prompt
        out = _server(trainer, vg, ids, [[image], None], [7, 8], 2, dict(temperature=1.0, max_tokens=3), {})
    (request,) = client.requests
    assert request["features"][0]["images"] == [image] and request["features"][1] is None
    assert placed == ids  # each prompt's features placed on its own token ids (TRL's: None stays None)
    assert request["prompts"] == ids and request["n"] == 2 and request["seed"] == 7  # the first prompt's seed
    assert len(out) == 2 and all(len(group) == 2 for group in out)
