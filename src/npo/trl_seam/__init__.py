"""Everything that subclasses or reaches into TRL, transformers or accelerate: trainer (GuidedGRPOTrainer,
the one subclass of trl.GRPOTrainer; its private surface is listed in its header and pinned by
tests/test_trl_seam.py), setup (builds it), engine (the live policy through the trainer's generation
path), vllm (guides through TRL's vLLM), callbacks (metrics, evaluation, segment stops), user_callbacks
(a user's TRL callbacks seeing one run), tracking (one TensorBoard log / W&B run per npo run),
multimodal (image fields in TRL's batches)."""
