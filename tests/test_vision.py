"""Vision-language policies: tiny-vl builds, saves, reloads and generates from an image prompt; the
visual tasks split disjointly and score hand-made cases; a guide for an image prompt reaches TRL's
loss with its flag and its own image (its log-prob there equals a reference forward with that image);
the VLM's in-place rollback replays exactly."""

import io

import pytest
import torch
from safetensors.torch import load_file

from npo.config.run import TinyModelConfig, TinyVisionConfig, load_config
from npo.loops.run import open_run, prepare, train
from npo.loops.segment import run_segment
from npo.models import tiny_vl
from npo.models.check import image_prompt_lengths
from npo.models.generation import Policy, prompt_ids
from npo.models.load import load_policy
from npo.rundir.layout import read_jsonl
from npo.tasks import build_split, build_task
from npo.tasks.base import Item
from npo.tasks.images import open_image
from npo.tasks.prompting import INSTRUCTION, prompt_style
from npo.trl_seam.multimodal import row_fields
from npo.trl_seam.trainer import GuidedGRPOTrainer

from conftest import ROOT

# tiny-vl at test size: a short warm start, 4 prompts x 4 samples per step
SMALL = ["model.warmup.steps=30", "model.warmup.batch_size=32", "task.train_size=400", "task.eval_size=40",
         "train.prompts_per_step=4", "train.grpo.num_generations=4", "eval.every=0", "eval.n=16", "eval.samples=0"]
QWEN_STYLE = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.content is string %}{{ m.content }}{% else %}"
              "{% for p in m.content %}{% if p.type == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
              "{% else %}{{ p.text }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
              "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
NOT_REPLAYED = {"train/step_time", "signal/generated_tokens", "verify/calls"}


def png_bytes(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_tiny_vl_builds_saves_reloads_and_generates(tmp_path):
    arch = TinyModelConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                           intermediate_size=64)
    model, processor = tiny_vl.build(arch, TinyVisionConfig(depth=1, hidden_size=16, intermediate_size=32), 0)
    tiny_vl.save(model, processor, tmp_path / "m")
    loaded, proc = load_policy(tmp_path / "m")
    assert type(loaded).__name__ == "Qwen3VLForConditionalGeneration" and prompt_style(proc) == "plain"
    items = build_task("vis-arith", {}).splits(20, 4, 0)[1]
    ids = prompt_ids(proc, items, "plain")
    assert [x.count(proc.image_token_id) for x in ids] == [12] * 4  # 48 x 16 pixels, 4-pixel patches merged 2 x 2
    processor.tokenizer.padding_side = "left"
    before = Policy(model, processor, "plain").sample(items, k=2, temperature=1.0, max_new_tokens=4, seeds=[1, 2, 3, 4])
    after = Policy(loaded, proc, "plain").sample(items, k=2, temperature=1.0, max_new_tokens=4, seeds=[1, 2, 3, 4])
    assert [[s.token_ids for s in g] for g in before] == [[s.token_ids for s in g] for g in after]
    assert all(len(s.token_ids) == 4 or s.token_ids[-1] == 2 for g in after for s in g)
    # the model sees the image: one completion scores differently under two images with the same text
    policy, completion = Policy(loaded, proc, "plain"), before[0][0].token_ids
    a, b = policy.token_logps(items[:2], [completion, completion])
    assert items[0].question == items[1].question and a != b
    # a VLM folder with a role-based chat template is an instruct model: the image, the question and the
    # \boxed{} instruction in one user message, answers read from \boxed{}
    proc.chat_template = QWEN_STYLE
    proc.save_pretrained(tmp_path / "m")
    _, chat = load_policy(tmp_path / "m")
    assert prompt_style(chat) == "chat"
    text = chat.tokenizer.decode(prompt_ids(chat, items[:1], "chat")[0])
    assert text.startswith("<|im_start|>user\n<|vision_start|><|image_pad|>") and "<|vision_end|>Compute:" in text
    assert text.endswith(INSTRUCTION.strip() + "<|im_end|>\n<|im_start|>assistant\n")  # (the character tokenizer
    # has no token for "\n\n")
    for processor, style in ((proc, "plain"), (chat, "chat")):  # the context check counts without pixels
        assert image_prompt_lengths(processor, items, style) == [len(x) for x in prompt_ids(processor, items, style)]


def test_visual_tasks_split_disjoint_and_score_hand_made_cases():
    task = build_task("vis-arith", {"terms": 2, "digits": 2, "ops": "+-"})
    train_items, eval_items = task.splits(500, 100, 7)
    assert len(eval_items) == 100 and not {it.key for it in train_items} & {it.key for it in eval_items}
    assert task.splits(500, 100, 7) == (train_items, eval_items)  # deterministic per seed
    nine_plus_four = Item("Compute:", "13", image="draw:vis-arith:9+4")
    assert [task.score(t, nine_plus_four) for t in ("13", " 13 ", "14", "", "13.0")] == [1.0, 1.0, 0.0, 0.0, 0.0]
    drawn = open_image("draw:vis-arith:9+4")
    open_image.cache_clear()
    assert png_bytes(open_image("draw:vis-arith:9+4")) == png_bytes(drawn)  # redrawn identically
    assert png_bytes(open_image("draw:vis-arith:9-4")) != png_bytes(drawn)
    counting = build_task("vis-count", {"max_count": 5})
    for x in counting.splits(50, 10, 0)[0][:20]:
        dark = sum(1 for p in open_image(x.image).convert("L").get_flattened_data() if p < 128)
        assert dark == 9 * int(x.answer) and 1 <= int(x.answer) <= 5  # one 3 x 3 square per counted object
    assert counting.score("3", Item("Count:", "3", image="draw:vis-count:0,5,9")) == 1.0


@pytest.fixture(scope="module")
def guided_vl(tmp_path_factory):
    """A tiny-vl run guided by the task's reference answers in every group below the gate, with a spy
    on the rows that reach TRL's loss: for each guide row, the question its pixels show, its text, its
    log-probs as the loss computes them and under a reference forward of that question's prompt."""
    root = tmp_path_factory.mktemp("guided-vl")
    cfg = load_config(ROOT / "configs" / "demo-vl.yaml", [*SMALL, "train.steps=2", "train.checkpoint_every=2",
                                                          "npo.source=teacher:reference", "npo.inject_when=always",
                                                          "npo.interventions=[]"])
    _, items, _ = build_split(cfg)
    rows_seen, pixels = [], {}
    compute_loss = GuidedGRPOTrainer._compute_loss

    def item_of(processor, row_pixels):
        """The training item whose image the processor turns into exactly these pixels."""
        if not pixels:
            for it in items:
                enc = processor.image_processor(images=[open_image(it.image)], return_tensors="pt")
                pixels.setdefault(png_bytes(open_image(it.image)), (it, enc["pixel_values"]))
        (item,) = [it for it, px in pixels.values() if px.shape == row_pixels.shape and torch.equal(px, row_pixels)]
        return item

    def spy_loss(self, model, inputs):
        rows = torch.nonzero(inputs["npo_guide"]).flatten().tolist()
        assert list(inputs["num_images"]) == [1] * len(inputs["npo_guide"])
        if rows:
            ids = torch.cat([inputs["prompt_ids"][rows], inputs["completion_ids"][rows]], 1)
            mask = torch.cat([inputs["prompt_mask"][rows], inputs["completion_mask"][rows]], 1)
            fields = row_fields(inputs, rows)
            with torch.no_grad():
                logps = self._get_per_token_logps_and_entropies(model, ids, mask, inputs["completion_ids"].size(1),
                                                                **fields)[0]
            offsets = [0] + fields["image_grid_thw"].prod(-1).cumsum(0).tolist()
            policy = Policy(self.model, self.processing_class, "plain")
            for j, r in enumerate(rows):
                completion = inputs["completion_ids"][r][inputs["completion_mask"][r].bool()].tolist()
                item = item_of(self.processing_class, fields["pixel_values"][offsets[j]:offsets[j + 1]])
                (reference,) = policy.token_logps([item], [completion])
                rows_seen.append({"item": item, "text": self.processing_class.tokenizer.decode(completion),
                                  "loss_logps": logps[j, :len(completion)].tolist(), "reference": reference})
        return compute_loss(self, model, inputs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(GuidedGRPOTrainer, "_compute_loss", spy_loss)
        summary = train(prepare(cfg, root / "run"), show_progress=False)
    return summary, rows_seen


def test_a_guide_for_an_image_prompt_reaches_the_loss_with_its_image(guided_vl):
    summary, rows = guided_vl
    assert rows and summary["final_steps"] == 2
    for row in rows:
        assert row["text"] == row["item"].answer + "<eos>"  # the reference answer of the question in its own image
        assert torch.allclose(torch.tensor(row["loss_logps"]), torch.tensor(row["reference"]), atol=1e-5), row


def test_vlm_rollback_replays_exactly(tmp_path):
    cfg = load_config(ROOT / "configs" / "demo-vl.yaml", [*SMALL, "method=grpo", "npo.interventions=[]",
                                                          "train.steps=4", "train.checkpoint_every=2"])
    ctx = open_run(prepare(cfg, tmp_path / "run"), show_progress=False)
    run_segment(ctx, 0, 4, out_dir=ctx.run.checkpoints)
    run_segment(ctx, 2, 4, out_dir=tmp_path / "replay", main=False)
    first, again = read_jsonl(ctx.run.metrics)[2:], read_jsonl(tmp_path / "replay" / "metrics.jsonl")
    strip = [{k: v for k, v in r.items() if k not in NOT_REPLAYED} for r in first]
    assert strip == [{k: v for k, v in r.items() if k not in NOT_REPLAYED} for r in again] and len(again) == 2
    a = load_file(ctx.run.checkpoint(4) / "model.safetensors")
    b = load_file(tmp_path / "replay" / "checkpoint-4" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], load_file(ctx.run.checkpoint(2) / "model.safetensors")[k]) for k in a)
