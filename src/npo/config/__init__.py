"""One run's YAML config: run (RunConfig, load and validate), sections (npo, replay, autonpo), methods
(the Python API's guide objects), presets (the baselines as settings), trl_args (the GRPOConfig a run
hands TRL), precision (what model.dtype means), yamlfile (strict YAML), checks (the shared checks and
their one-line messages)."""
