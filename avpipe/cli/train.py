"""``avpipe train``: train a fusion model on cached features (scoring and predicting with a run:
:mod:`avpipe.cli.predict`).

Multi-GPU training runs the same command under torchrun: ``torchrun ... -m avpipe train ...``.

Heavy imports (torch, h5py, the models) happen inside the command bodies so that ``avpipe --help``
stays fast and a bad flag (``--fusion bogus``) is refused before torch loads. Errors follow the
one standard of :mod:`avpipe.cli.errors` (0 ok, 1 runtime failure, 2 usage error, no traceback
unless ``--debug``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from avpipe.cli.errors import UsageFailure
from avpipe.cli.params import DEVICE, FusionChoice, parse_cli_value, threads_option
from avpipe.cli.train_list import TrainCommand, list_option
from avpipe.display import safe_name, safe_text
from avpipe.registry import closest_name

TRAIN_EPILOG = """Examples:

\b
  avpipe train --fusion jca --labels sample/labels --out runs/jca
  avpipe train --fusion rja --labels annotations/VA_Estimation_Challenge --features visual=visual,audio=vggish
  avpipe train --fusion jca --config train.toml --epochs 50      # flags override the file
  avpipe train --fusion jca --out runs/jca --resume              # continue after a crash or kill
  avpipe train --fusion maven --labels labels.csv --model-option hidden=256 --device cuda:1
  avpipe train --fusion rja --labels labels.csv --recipe avpipe   # avpipe's recipe, not the authors'

\b
Recipes: jca, rja, dca, rjcma and maven train by default as their authors' released code does
(--recipe authors: windows, batch order, lr per epoch and step, scheduler, init, loss, selection,
normalisation); --recipe avpipe takes avpipe's own choices (z-scored inputs, gradient clipping,
early stopping, per-epoch shuffle, the official CCC loss). docs/recipes.md has one table per
model: each item, the authors' file and line, avpipe's default, equal or named deviation.

\b
The run folder (--out) is never replaced silently: an existing run needs --resume (same
--fusion and --features as the run) or --overwrite. Labels longer or shorter than their video by
more than --label-tolerance frames, and label values outside [-1, 1] other than -5, are errors
(--clip-labels clips such values instead). Exit status: 0 trained, 1 failed (labels,
features, checkpoint), 2 usage error (flag, config file, run folder conflict).

The run folder records how it was made: run.log (every message, with time and level;
--quiet/--verbose change only the console) and run.json (run id, versions of every
installed package, avpipe's git commit, command line, host, device, threads)."""

def _parse_features(s: str | None) -> dict[str, str]:
    from avpipe.fusion.source import FeatureSet

    try:
        return FeatureSet.parse(s or None).to_dict() if s else {}
    except (ValueError, KeyError) as e:
        raise UsageFailure(f"--features {s!r}: {safe_text(e.args[0] if e.args else e)}") from e


def _check_feature_stages(features: dict[str, str], cache: str) -> None:
    """``--features visual=visuals``: a usage error naming the known stages, before any loading.

    Known: every registered stage and every stage the cache holds (ingested or plugin stages)."""
    from avpipe.pipeline.stage import stage_registry

    known = set(stage_registry())
    try:
        from avpipe.pipeline.store import Cache

        with Cache(cache) as c:
            known |= {f.stage for f in c.fingerprints()}
    except Exception:  # noqa: BLE001 - no cache yet: the registry alone
        pass
    for modality, ref in features.items():
        stage = str(ref).partition("@")[0]
        if stage not in known:
            near = closest_name(stage, sorted(known), typo=True)
            raise UsageFailure(f"--features {modality}={ref}: no stage {stage!r}"
                               + (f"; did you mean {near!r}?" if near else "")
                               + f" (known stages: {', '.join(sorted(known))})")


def _parse_model_options(items: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in items:
        k, sep, v = kv.partition("=")
        if not sep or not k.strip():
            raise UsageFailure(f"--model-option {kv!r}: expected KEY=VALUE (VALUE in JSON, e.g. hidden=256)")
        out[k.strip()] = parse_cli_value(v)
    return out


def _load_train_config(path: Path | None) -> Any:
    """The ``--config`` file as a TrainConfig; any problem with it is a one-line usage error."""
    from avpipe.fusion.config import TrainConfig
    from avpipe.pipeline.config_schema import ConfigError, load_config_file

    if path is None:
        return TrainConfig()
    try:
        return TrainConfig.from_dict(load_config_file(path))
    except ConfigError as e:  # one line per bad key/value, exit 2
        raise UsageFailure(e) from None
    except (ValueError, TypeError, OSError) as e:  # bad TOML/JSON (ValueError subclasses), unknown keys, types
        raise UsageFailure(f"--config {safe_name(str(path))}: {safe_text(e)}") from e


@click.command("train", cls=TrainCommand, epilog=TRAIN_EPILOG)
@list_option
@click.option("--fusion", required=True, type=FusionChoice(), help="Fusion model (listed below; --list for details).")
@click.option("--labels", type=click.Path(exists=True, path_type=Path),
              help="Aff-Wild2 annotation folder or a CSV (video,frame,valence,arousal).")
@click.option("--cache", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="Cache root (default $AVPIPE_CACHE or ./cache). Stored in the run as an absolute path.")
@click.option("--features", default=None, help="modality=stage[@fingerprint],... e.g. visual=visual,audio=logmel.")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="TrainConfig JSON/TOML; flags override it.")
@click.option("--recipe", type=click.Choice(["authors", "avpipe"]), default=None,
              help="Training recipe: authors (default for jca, rja, dca, rjcma, maven: their released code's "
                   "windows, lr schedule, loss, init, selection) or avpipe (avpipe's own; the default for the "
                   "other names). See docs/recipes.md.")
@click.option("--epochs", type=int, default=None)
@click.option("--batch-size", type=int, default=None)
@click.option("--lr", type=float, default=None)
@click.option("--window", type=int, default=None, help="Window length in frames (default: the model's).")
@click.option("--hop", type=int, default=None, help="Training hop in frames (default: the model's).")
@click.option("--clip-len", type=int, default=None,
              help="Frames pooled to one token (default: the model's; 1 = per frame).")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default=None,
              help="Autocast: auto (fp16 on CUDA, fp32 on CPU), bf16 (CUDA or CPU), fp16 (CUDA).")
@click.option("--label-tolerance", type=int, default=None,
              help="Frames a label file may differ from its video's length (padded/truncated; default 10).")
@click.option("--clip-labels", is_flag=True,
              help="Clip label values outside [-1, 1] (other than -5) instead of refusing the file.")
@click.option("--split-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="name,split lines or JSON {train: [...], val: [...]}.")
@click.option("--device", type=DEVICE, default=None, help="Device (default auto: a GPU when there is one).")
@click.option("--out", default=None, type=click.Path(path_type=Path), help="Run folder (default runs/FUSION).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--overwrite", is_flag=True, help="Replace the run in --out (its checkpoints and metrics are deleted).")
@click.option("--seed", type=int, default=None)
@click.option("--model-option", "model_options", multiple=True, metavar="KEY=VALUE",
              help="Model constructor option (VALUE in JSON), repeatable.")
@threads_option
@click.option("--quiet", "-q", is_flag=True, help="Console: warnings and errors only (run.log keeps everything).")
@click.option("--verbose", "-v", is_flag=True, help="Console: debug lines too (environment, resume details).")
def train_cmd(fusion: str, labels: Path | None, cache: Path | None, features: str | None, config_file: Path | None,
              epochs: int | None, batch_size: int | None, lr: float | None, window: int | None, hop: int | None,
              clip_len: int | None, precision: str | None, recipe: str | None,
              label_tolerance: int | None, clip_labels: bool, split_file: str | None, device: str | None,
              out: Path | None, resume: bool, overwrite: bool, seed: int | None, model_options: tuple[str, ...],
              num_threads: int | None, quiet: bool = False, verbose: bool = False) -> None:
    """Train a fusion model on cached features.

    Numeric flags are checked by the TrainConfig (one line naming the flag, exit 2), exactly like
    the same keys in a --config file."""
    from avpipe.pipeline.config_schema import ConfigError

    if resume and overwrite:
        raise UsageFailure("use either --resume (continue the run) or --overwrite (replace it), not both")
    if quiet and verbose:
        raise UsageFailure("use either --quiet or --verbose, not both")
    cfg = _load_train_config(config_file)
    cfg.fusion = fusion
    if labels:
        cfg.labels = str(labels)
    if not cfg.labels and not resume:
        raise UsageFailure("--labels is required (or 'labels' in --config)")
    if cache:
        cfg.cache = str(cache)
    elif cfg.cache == "cache":
        from avpipe.pipeline.runner import default_cache_root

        cfg.cache = str(default_cache_root())
    if features:
        cfg.features = _parse_features(features)
    for k, v in (("recipe", recipe), ("epochs", epochs), ("batch_size", batch_size), ("lr", lr), ("window", window), ("hop", hop),
                 ("clip_len", clip_len), ("precision", {"fp32": "off"}.get(precision, precision)),
                 ("label_tolerance", label_tolerance), ("clip_labels", clip_labels or None),
                 ("split_file", split_file), ("device", device), ("seed", seed),
                 ("num_threads", num_threads)):
        if v is not None:
            try:
                setattr(cfg, k, v)  # checked like a file value; the message names the flag
            except ConfigError as e:
                raise UsageFailure(e.from_flags({k: "--" + k.replace("_", "-")})) from None
    if cfg.features:
        _check_feature_stages(dict(cfg.features), cfg.cache)
    cfg.model.update(_parse_model_options(model_options))
    cfg.out = str(out) if out else (cfg.out or f"runs/{fusion}")
    try:
        cfg.resolved()  # window not a multiple of clip_len: a usage error, before loading anything
    except (KeyError, ValueError) as e:
        raise UsageFailure(safe_text(e.args[0] if e.args else e)) from None

    from avpipe.fusion.train import train

    from avpipe.fusion.runlog import RunLog, set_console_level

    from avpipe.fusion.train import dist_info

    set_console_level(quiet=quiet, verbose=verbose)
    rank0 = dist_info()[0] == 0  # under torchrun only rank 0 speaks; every rank writes nothing else
    s = train(cfg, resume=resume, overwrite=overwrite,
              log=RunLog((lambda m: click.echo(m, err=True)) if rank0 else None))
    if not rank0:
        return
    b = s["best"]
    click.echo(f"best epoch {b['epoch']}: val CCC V {b.get('val_ccc_valence', float('nan')):.4f} "
               f"A {b.get('val_ccc_arousal', float('nan')):.4f} mean {b.get('val_ccc_mean', float('nan')):.4f} "
               f"-> {safe_name(s['run'])}")
