"""``avpipe train | evaluate | predict`` — click commands the core CLI adds with ``main.add_command``.

Heavy imports (torch, h5py, the models) happen inside the command bodies so that ``avpipe --help``
stays fast.
"""
from __future__ import annotations

import sys

import click


def _parse_features(s: str | None) -> dict[str, str]:
    from avpipe.fusion.source import FeatureSet

    return FeatureSet.parse(s or None).to_dict() if s else {}


def _fail(e: Exception) -> None:
    click.echo(f"error: {e}", err=True)
    sys.exit(2)


_threads_option = click.option(
    "--num-threads", type=click.IntRange(min=1), default=None,
    help="torch threads (default: the cores this process may use).")


def _set_threads(n: int | None) -> None:
    from avpipe.pipeline.threads import apply_torch_threads, default_num_threads

    apply_torch_threads(n or default_num_threads(), import_torch=True)


@click.command("train")
@click.option("--fusion", required=True, help="Model name: jca, rja, rjcma, iaca, maven, audio, visual, text, concat, ca.")
@click.option("--labels", type=click.Path(exists=True), help="Aff-Wild2 annotation folder or a CSV (video,frame,valence,arousal).")
@click.option("--cache", default=None, help="Cache root (default $AVPIPE_CACHE or ./cache).")
@click.option("--features", default=None, help="modality=stage[@fingerprint],... e.g. visual=visual,audio=logmel.")
@click.option("--config", "config_file", type=click.Path(exists=True), default=None, help="TrainConfig JSON/TOML; flags override it.")
@click.option("--epochs", type=int, default=None)
@click.option("--batch-size", type=int, default=None)
@click.option("--lr", type=float, default=None)
@click.option("--window", type=int, default=None, help="Window length in frames (default 300).")
@click.option("--hop", type=int, default=None, help="Training hop in frames (default 200).")
@click.option("--split-file", type=click.Path(exists=True), default=None)
@click.option("--device", default=None, help="auto | cpu | cuda | cuda:N")
@click.option("--out", default=None, help="Run folder (default runs/NAME).")
@click.option("--resume", is_flag=True, help="Continue from the run folder's last checkpoint.")
@click.option("--seed", type=int, default=None)
@click.option("--model-option", "model_options", multiple=True, help="KEY=VALUE (JSON value) passed to the model.")
@_threads_option
def train_cmd(fusion, labels, cache, features, config_file, epochs, batch_size, lr, window, hop, split_file,
              device, out, resume, seed, model_options, num_threads) -> None:
    """Train a fusion model on cached features."""
    import json

    from avpipe.fusion.config import TrainConfig
    from avpipe.pipeline.config import load_config_file

    cfg = TrainConfig.from_dict(load_config_file(config_file)) if config_file else TrainConfig()
    cfg.fusion = fusion
    if labels:
        cfg.labels = labels
    if not cfg.labels and not resume:
        _fail(ValueError("--labels is required"))
    if cache:
        cfg.cache = cache
    elif cfg.cache == "cache":
        from avpipe.pipeline.runner import default_cache_root

        cfg.cache = str(default_cache_root())
    if features:
        cfg.features = _parse_features(features)
    for k, v in (("epochs", epochs), ("batch_size", batch_size), ("lr", lr), ("window", window), ("hop", hop),
                 ("split_file", split_file), ("device", device), ("seed", seed), ("num_threads", num_threads)):
        if v is not None:
            setattr(cfg, k, v)
    for kv in model_options:
        k, _, v = kv.partition("=")
        try:
            cfg.model[k] = json.loads(v)
        except json.JSONDecodeError:
            cfg.model[k] = v
    cfg.out = out or cfg.out or f"runs/{fusion}"
    from avpipe.fusion.labels import LabelError
    from avpipe.fusion.models import MissingModalityError
    from avpipe.fusion.source import FeatureError
    from avpipe.fusion.train import train

    try:
        s = train(cfg, resume=resume, log=lambda m: click.echo(m, err=True))
    except (MissingModalityError, FeatureError, LabelError, FileNotFoundError, KeyError) as e:
        _fail(e)
    b = s["best"]
    click.echo(f"best epoch {b['epoch']}: val CCC V {b.get('val_ccc_valence', float('nan')):.4f} "
               f"A {b.get('val_ccc_arousal', float('nan')):.4f} mean {b.get('val_ccc_mean', float('nan')):.4f} "
               f"-> {s['run']}")


@click.command("evaluate")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--cache", default=None, help="Cache root (default: the run's).")
@click.option("--checkpoint", type=click.Choice(["best", "last"]), default="best")
@click.option("--device", default="auto")
@click.option("--per-video/--no-per-video", default=False, help="Print the per-video table too.")
@_threads_option
def evaluate_cmd(run, cache, checkpoint, device, per_video, num_threads) -> None:
    """Official CCC (raw and smoothed; overall and per video) of a run on its validation split."""
    from avpipe.fusion.predict import evaluate_run

    _set_threads(num_threads)
    try:
        ev = evaluate_run(run, cache=cache, device=device, which=checkpoint)
    except (FileNotFoundError, KeyError, ValueError, LookupError) as e:
        _fail(e)
    o, s = ev.overall, ev.overall_smoothed or {}
    click.echo(f"frames {ev.n_frames}, videos {len(ev.per_video)}")
    click.echo(f"raw       V {o['valence']:.4f}  A {o['arousal']:.4f}  mean {o['mean']:.4f}")
    if s:
        click.echo(f"smoothed  V {s['valence']:.4f}  A {s['arousal']:.4f}  mean {s['mean']:.4f}")
    if per_video:
        for name, r in sorted(ev.per_video.items()):
            click.echo(f"  {name}: V {r['valence']:.4f} A {r['arousal']:.4f} (n={r['n_frames']})")
    click.echo(f"written: {run}/eval/metrics.json, {run}/eval/per_video.csv")


@click.command("predict")
@click.option("--run", "run_path", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--videos", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--out", required=True, type=click.Path())
@click.option("--cache", default=None, help="Cache root (default: the run's).")
@click.option("--format", "fmt", type=click.Choice(["csv", "affwild2"]), default="csv")
@click.option("--device", default="auto")
@click.option("--jobs", type=int, default=1, help="Extraction workers.")
@_threads_option
def predict_cmd(run_path, videos, out, cache, fmt, device, jobs, num_threads) -> None:
    """Per-frame valence/arousal for a folder of videos (extracting missing features first).

    A video that cannot be predicted is reported and the others are still written; the exit
    status is then 1.
    """
    from avpipe.fusion.predict import PredictionErrors, predict_videos

    _set_threads(num_threads)
    try:
        files = predict_videos(run_path, videos, out, cache=cache, fmt=fmt, device=device, jobs=jobs,
                               log=lambda m: click.echo(m, err=True))
    except PredictionErrors as e:
        click.echo(f"wrote {len(e.written)} file(s) under {out}; {e}", err=True)
        sys.exit(1)
    except (FileNotFoundError, KeyError, ValueError, LookupError) as e:
        _fail(e)
    click.echo(f"wrote {len(files)} file(s) under {out}")


COMMANDS = (train_cmd, evaluate_cmd, predict_cmd)


@click.group()
def fusion_group() -> None:
    """Fusion trainer commands (also added to the main avpipe CLI)."""


for _c in COMMANDS:
    fusion_group.add_command(_c)

if __name__ == "__main__":  # pragma: no cover
    fusion_group()
