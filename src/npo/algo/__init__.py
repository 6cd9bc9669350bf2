"""The paper's math, pure: plain records and functions in the paper's symbols, no model and no trainer.
groups (group accuracy, the gate), injection (which slot a guide replaces), estimators (Q, V, S = Q/V),
controller (AutoNPO's decisions), interventions (the manual ones' windows), replay (the replay buffer),
order (the data order), accounting (what a run cost)."""
