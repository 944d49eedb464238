"""The `seqlab` command: train, compare and prepare (Hydra), eval, report, plugins, info, export, tokenizer
train, data prepare/merge/stats."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from seqlab import __version__
from seqlab.errors import SeqlabError

TRAIN_HELP = """\
usage: seqlab train [-m] [KEY=VALUE ...] [HYDRA OPTIONS]

Compose an experiment from experiments/ and train it. Examples:
  seqlab train                                  the embedded default: a tiny model on CPU
  seqlab train experiment=NAME optim.lr=3e-4    an experiment file, plus overrides
  seqlab train -m architecture=a,b seed=0,1     a Hydra multirun sweep
  seqlab train plugins_dir=./my_plugins         import extra plugin modules first
  seqlab train hydra.run.dir=DIR resume=auto    start, or continue DIR's run from its newest valid checkpoint
  seqlab train hydra.run.dir=DIR resume=auto optim.lr=5e-4 resume_allow=[optim.lr]   continue with a change
  seqlab train --cfg job                        print the composed config and exit
Config groups: objective, architecture, strategy, data, trainer, experiment (see `seqlab plugins`).
Each run writes its resolved config, checkpoints and metrics under its output directory. On SIGTERM or SIGUSR1
it finishes the step, checkpoints it and exits 75 (trainer.preemption; relaunch with resume=auto).
"""


COMPARE_HELP = """\
usage: seqlab compare [-m] [KEY=VALUE ...] [HYDRA OPTIONS]

Train the model under study (`architecture`, default seq2seq_tiny) and a matched baseline to the same budget
(compare.budget: flops, tokens or steps) at every size of compare.sizes, on the same data, tokenizer, objective
mixture and seed; evaluate both; write a report (intervals, paired verdicts, fits, plots, results.json).
  seqlab compare                                   the embedded default, a few minutes on CPU
  seqlab compare compare.budget=tokens             equal tokens instead of equal training FLOPs
  seqlab compare compare.match=flops               baseline sized by training FLOPs instead of parameters
  seqlab compare compare.baseline=PRESET           a named baseline instead of a derived one
  seqlab compare 'compare.sizes=[{width: 0.5},{},{width: 2, steps: 600}]'     a size ladder
  seqlab compare -m 'compare.size=range(3)' seed=0,1,2    every (size, seed) one job of a multirun
  seqlab compare -m experiment=study               the default study on ../shared/data (see the README)
Every key of `seqlab train` applies (objective=, data=, trainer=, optim.*, experiment=).
`seqlab report DIR` renders the report again from finished jobs.
"""


PREPARE_HELP = """\
usage: seqlab prepare [-m] KEY=VALUE ... [HYDRA OPTIONS]

`seqlab data prepare` as a Hydra app (experiments/prepare.yaml): the same options as config keys, so that a
multirun over shard_index is one preparation job per shard on any Hydra launcher.
  seqlab prepare inputs=[corpus/] tokenizer=tok.model output=prepared/web workers=8
  seqlab prepare -m inputs=[corpus/] tokenizer=tok.model num_shards=4 'shard_index=range(4)' \\
    'output=parts/${shard_index}' hydra/launcher=submitit_slurm     then: seqlab data merge parts/* --output DIR
Keys: inputs tokenizer output source lang text_field lang_field workers overwrite max_document_bytes dedup
decontaminate ngram eval_data_root part_bytes num_shards shard_index progress (see `seqlab data prepare --help`).
"""


def _hydra_command(command: str, overrides: list[str], config_name: str, help_text: str, task) -> int:
    """Run `task(config, output_dir)` under Hydra's own `main`, so `-m` sweeps, `--cfg` and hydra.* work."""
    if any(arg in ("-h", "--help") for arg in overrides):
        print(help_text)
        return 0
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import DictConfig

    from seqlab.experiment import check_experiment, composition_errors, experiments_dir, plugins_dir_override, setup
    from pytorch_lightning.utilities import rank_zero_only

    from seqlab.preemption import Preempted

    setup(plugins_dir_override(overrides))
    check_experiment(overrides)
    command_line = [sys.argv[0], command, *overrides]

    def job(cfg: DictConfig) -> None:
        # Hydra has parsed the overrides; put the full command back so that Lightning's DDP launcher starts
        # the other ranks with the same command line.
        sys.argv = command_line
        try:
            task(cfg, HydraConfig.get())
        except Preempted as err:  # not an error: the checkpoint is written, and the same command continues
            if rank_zero_only.rank == 0:  # every rank stops on the same agreed signal: say it once
                print(f"seqlab {command}: {err}", file=sys.stderr)
            raise SystemExit(err.exit_code) from None
        except SeqlabError as err:
            # A user error: one clear message, not a traceback from inside the library. An error every rank
            # raised alike (a divergence verdict) is said by rank 0 alone; others can be one rank's own (its disk).
            rank = rank_zero_only.rank
            if rank == 0 or not err.agreed:
                print(f"seqlab {command}: error: " + (f"[rank {rank}] " if rank else "") + str(err), file=sys.stderr)
            raise SystemExit(2) from None

    app = hydra.main(version_base=None, config_path=str(experiments_dir()), config_name=config_name)(job)
    sys.argv = [command_line[0], *overrides]  # what Hydra's own argument parser expects
    try:
        with composition_errors(hydra_raises=True):  # a bad override: one message naming the field and value
            app()
    finally:
        sys.argv = command_line
    return 0


def _train(overrides: list[str]) -> int:
    from seqlab.experiment import CONFIG_NAME, to_run_config
    from seqlab.train import train

    def task(cfg, hydra_cfg) -> None:
        train(to_run_config(cfg), Path(hydra_cfg.runtime.output_dir))

    return _hydra_command("train", overrides, CONFIG_NAME, TRAIN_HELP, task)


def _compare(overrides: list[str]) -> int:
    from hydra.types import RunMode

    from seqlab.evaluation.compare import COMPARE_CONFIG, compare, register_compare_schema
    from seqlab.experiment import to_run_config

    register_compare_schema()

    def task(cfg, hydra_cfg) -> None:
        sweep = Path(hydra_cfg.sweep.dir) if hydra_cfg.mode == RunMode.MULTIRUN else None
        report = compare(to_run_config(cfg), Path(hydra_cfg.runtime.output_dir), sweep)
        print(f"seqlab compare: report written to {report}")

    return _hydra_command("compare", overrides, COMPARE_CONFIG, COMPARE_HELP, task)


def _prepare_job(overrides: list[str]) -> int:
    from seqlab.data.cli import print_prepared
    from seqlab.data.prepare_job import PREPARE_CONFIG, register_prepare_schema, run_prepare_job, to_prepare_config
    from seqlab.data.store import PreparedCorpus

    register_prepare_schema()

    def task(cfg, hydra_cfg) -> None:
        job = to_prepare_config(cfg)
        result = run_prepare_job(job)
        if isinstance(result, PreparedCorpus):
            print_prepared(result)
        else:
            print(f"part {job.shard_index} of {job.num_shards} written to {result}")

    return _hydra_command("prepare", overrides, PREPARE_CONFIG, PREPARE_HELP, task)


def _report(args: argparse.Namespace) -> int:
    from seqlab.errors import DataError
    from seqlab.evaluation.report import write_report
    from seqlab.evaluation.runs import RESULTS, load_jobs
    from seqlab.registry import load_plugins

    root = Path(args.dir)
    if not root.is_dir() or not load_jobs(root):
        raise DataError(f"{root}: no {RESULTS} of a finished `seqlab compare` job here or in its subfolders")
    load_plugins(None)
    print(f"seqlab report: report written to {write_report(root, args.bootstrap)}")
    return 0


def _plugins(args: argparse.Namespace) -> int:
    from seqlab.registry import REGISTRIES, load_plugins

    load_plugins(args.plugins_dir)
    rows = [(p.kind, p.name, p.description, p.module) for registry in REGISTRIES for p in registry]
    # Presets are named configs of a plugin: selectable the same way (architecture=seq2seq_base).
    rows += [(registry.kind, name, f"{description} (preset of {cfg.name})", registry.get(cfg.name).module)
             for registry in REGISTRIES for name, (cfg, description) in registry.presets().items()]
    width = max((len(r[1]) for r in rows), default=4)
    for kind, name, description, module in rows:
        print(f"{kind:13} {name:{width}}  {description}" + (f"  [{module}]" if args.verbose else ""))
    return 0


def _info(args: argparse.Namespace) -> int:
    from seqlab.info import describe
    from seqlab.registry import load_plugins

    load_plugins(args.plugins_dir)
    print(describe(args.preset, args.vocab_size, args.input_length, args.target_length))
    return 0


def _export(args: argparse.Namespace) -> int:
    from seqlab.checkpoints import load_model
    from seqlab.interfaces import capability

    loaded = load_model(args.checkpoint, args.tokenizer)
    export = capability(loaded.model, "export_hf", "export to Hugging Face layouts")
    out = export(loaded.tokenizer, args.output,
                 source=f"checkpoint {Path(args.checkpoint).resolve()} (step {loaded.step})")
    print(f"exported {loaded.architecture.name} (step {loaded.step}) to {out}; load it with "
          f"transformers' AutoModel*.from_pretrained and AutoTokenizer.from_pretrained")
    return 0


def _tokenizer_train(args: argparse.Namespace) -> int:
    from seqlab.data.corpus import CorpusReport, read_corpus
    from seqlab.tokenizer import TokenizerTrainConfig, train_tokenizer

    cfg = TokenizerTrainConfig(vocab_size=args.vocab_size, num_sentinels=args.num_sentinels,
                               num_reserved=args.num_reserved, character_coverage=args.character_coverage,
                               seed=args.seed)
    report = CorpusReport()
    texts = (doc.text for path in args.inputs for doc in read_corpus(path, report, lang=args.lang))
    output = train_tokenizer(texts, args.output, cfg)
    print(report.summary())
    print(f"tokenizer written to {output} (vocab_size={cfg.vocab_size})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from seqlab.data.cli import add_data_commands

    parser = argparse.ArgumentParser(prog="seqlab", description="Plugin-based LLM pre-training studies: "
                                     "seq2seq against decoder-only, AlexaTM-style objective mixtures.")
    parser.add_argument("--version", action="version", version=f"seqlab {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("train", help="compose an experiment (Hydra overrides) and train it", add_help=False)
    commands.add_parser("compare", help="train a seq2seq and a matched decoder-only baseline, evaluate both, "
                        "write a report (Hydra overrides)", add_help=False)
    commands.add_parser("prepare", help="`seqlab data prepare` with Hydra overrides, so multiruns over shard_index "
                        "run on any Hydra launcher", add_help=False)
    commands.add_parser("eval", help="evaluate a checkpoint or a Hugging Face model on eval tasks (KEY=VALUE ...)",
                        add_help=False)
    commands.add_parser("lm-eval", help="lm-evaluation-harness's command line with the `seqlab` model type "
                        "(--model seqlab --model_args checkpoint=PATH,mode=clm|denoising)", add_help=False)

    plugins = commands.add_parser("plugins", help="list registered plugins with kind and description")
    plugins.add_argument("--plugins-dir", help="also import the plugin modules in this folder")
    plugins.add_argument("-v", "--verbose", action="store_true", help="show the module of each plugin")
    plugins.set_defaults(func=_plugins)

    info = commands.add_parser("info", help="parameters and training FLOPs of an architecture preset, "
                               "counted without building it")
    info.add_argument("preset", metavar="PRESET", help="an architecture preset, e.g. alexatm_20b")
    info.add_argument("--vocab-size", type=int, metavar="N", help="count with this vocabulary (default: the preset's)")
    info.add_argument("--input-length", type=int, metavar="N", help="input tokens per example (default: the preset's)")
    info.add_argument("--target-length", type=int, metavar="N",
                      help="target tokens per example (default: the preset's)")
    info.add_argument("--plugins-dir", help="also import the plugin modules in this folder")
    info.set_defaults(func=_info)

    export = commands.add_parser("export", help="write a checkpoint in a Hugging Face layout (seq2seq: MBart, "
                                 "decoder-only: GPT-2) with its tokenizer; needs transformers")
    export.add_argument("checkpoint", help="a .ckpt written by `seqlab train`")
    export.add_argument("--output", required=True, help="the folder to write")
    export.add_argument("--tokenizer", help="the tokenizer .model, if not at the path the run used")
    export.set_defaults(func=_export)

    tokenizer = commands.add_parser("tokenizer", help="tokenizer tools").add_subparsers(dest="action",
                                                                                       metavar="ACTION")
    tok_train = tokenizer.add_parser("train", help="train a SentencePiece unigram model with seqlab's special tokens")
    tok_train.add_argument("inputs", nargs="+", metavar="INPUT",
                           help="corpus files or folders, in any format `seqlab data prepare` reads")
    tok_train.add_argument("--output", required=True, help="the .model file to write")
    tok_train.add_argument("--vocab-size", type=int, default=32000)
    tok_train.add_argument("--num-sentinels", type=int, default=100)
    tok_train.add_argument("--num-reserved", type=int, default=0, help="unused tags kept for downstream tasks")
    tok_train.add_argument("--character-coverage", type=float, default=0.9995)
    tok_train.add_argument("--lang", help="language of files that do not say (default: und)")
    tok_train.add_argument("--seed", type=int, default=0)
    tok_train.set_defaults(func=_tokenizer_train)

    report = commands.add_parser("report", help="render a `seqlab compare` report again from finished jobs, "
                                 "without training")
    report.add_argument("dir", metavar="DIR", help="a compare job folder, or a multirun sweep folder of jobs")
    report.add_argument("--bootstrap", type=int, default=2000, metavar="N", help="resamples per interval")
    report.set_defaults(func=_report)

    add_data_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "eval":
        from seqlab.evaluation.cli import eval_command

        try:
            return eval_command(argv[1:])
        except SeqlabError as err:
            print(f"seqlab eval: error: {err}", file=sys.stderr)
            return 2
    if argv and argv[0] == "lm-eval":
        try:
            from seqlab.evaluation.lm_harness import main as lm_eval_main
        except ImportError as err:
            print(f"seqlab lm-eval: needs lm-evaluation-harness ({err}); pip install -e '.[lm-eval]'", file=sys.stderr)
            return 2
        return lm_eval_main(argv[1:])
    if argv and argv[0] in ("train", "compare", "prepare"):
        # Hydra owns the rest of the command line (overrides, -m, --cfg, hydra.* keys).
        try:
            return {"train": _train, "compare": _compare, "prepare": _prepare_job}[argv[0]](argv[1:])
        except SeqlabError as err:
            print(f"seqlab {argv[0]}: error: {err}", file=sys.stderr)
            return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 0 if not argv else 2
    try:
        return int(args.func(args) or 0)
    except SeqlabError as err:
        print(f"seqlab {args.command}: error: {err}", file=sys.stderr)
        return 2
