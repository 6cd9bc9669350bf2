"""The `npo` command (main) and its subcommands' jobs: eval, signal, pool, compare, demo, report."""
