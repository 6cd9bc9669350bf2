"""The run folder on disk: layout (RunDir, atomic writes, markers), lock (one run per folder), journal
(what a resume continues from), resume (the folder's status and its repair), retention (which
checkpoints stay whole), faults (named crash points, for the kill tests)."""
