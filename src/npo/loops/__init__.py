"""The runs, readable top to bottom: run (prepare a run, dispatch on the method), npo (GRPO, NPO's two
interventions, the baselines' guided runs), autonpo (AutoNPO), segment (a segment of TRL training from a
checkpoint, and the intervention record both loops write)."""
