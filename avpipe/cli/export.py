"""``avpipe export``: cached features to NumPy, Parquet/Arrow or a Hugging Face dataset.

Kept apart from :mod:`avpipe.export` so that ``avpipe --help`` imports neither torch nor pyarrow.
"""
from __future__ import annotations

from pathlib import Path

import click

from avpipe.cli.errors import RuntimeFailure, UsageFailure
from avpipe.display import safe_text

EPILOG = """Examples:

\b
  avpipe export --features visual=visual,audio=logmel --labels labels/ --format npz --out export/npz
  avpipe export --features visual,logmel --labels labels/ --split train --format memmap --out export/train
  avpipe export --features visual=visual --videos two.mp4 --person left --format parquet --out export/pq
  avpipe export --features visual=visual,audio=logmel --labels labels/ --format hf --out export/hf

\b
The selection is train's: --features (modality=stage[@fingerprint]; a stage name means its
fingerprint under --config, never "the newest"), --labels with its splits (--split,
--split-file, --val-fraction, --seed; X_left/X_right labels bound to their person), or, without
labels, --videos (default every cached video) read for --person. Formats: npz (one file per
track), memmap (one .npy per array over all tracks + index.csv), parquet (one row per frame),
hf (a datasets.Dataset, save_to_disk). Every export writes avpipe_export.json with the exact
fingerprints and stage configs its values came from (docs/data.md#exports).

\b
parquet and hf need: pip install 'avpipe[export]'. Exit status: 0 exported, 1 some tracks
could not be read (the others are exported) or the export failed, 2 usage error."""


@click.command("export", epilog=EPILOG)
@click.option("--cache", required=True, type=click.Path(file_okay=False, path_type=Path), help="Cache folder.")
@click.option("--features", required=True,
              help="modality=stage[@fingerprint],... or stage names (visual,logmel); the first is the frame reference.")
@click.option("--format", "fmt", type=click.Choice(["npz", "memmap", "parquet", "hf"]), required=True,
              help="npz per track, memmap arrays + index, parquet rows per frame, or a Hugging Face dataset.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Output folder (written whole, then renamed).")
@click.option("--labels", type=click.Path(exists=True), default=None,
              help="Label folder or CSV, as for train: exports its labelled tracks with their labels.")
@click.option("--split", default=None, help="Only these splits, comma-separated (train,val,test).")
@click.option("--split-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Lines 'name,split', as for train.")
@click.option("--val-fraction", type=click.FloatRange(0, 1), default=0.15, show_default=True,
              help="Hash split of unassigned labelled videos, as for train.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of that hash split.")
@click.option("--videos", default=None, help="Without --labels: comma-separated video keys (default: all cached).")
@click.option("--person", default=None,
              help="Without --labels: left, right or a face track id (default: the main face).")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Pipeline config whose stage configs the stage names mean (default: every stage's defaults).")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out folder.")
def export_cmd(cache: Path, features: str, fmt: str, out: Path, labels: str | None, split: str | None,
               split_file: str | None, val_fraction: float, seed: int, videos: str | None, person: str | None,
               config_file: str | None, overwrite: bool) -> None:
    """Export cached features (and labels) for other tools: NumPy, Parquet/Arrow, Hugging Face."""
    from avpipe.data import DataError, parse_features
    from avpipe.export import ExportError, Selection, export

    if labels and (videos or person):
        raise UsageFailure("--videos/--person select unlabelled videos; with --labels the tracks come from the labels")
    try:
        feats = parse_features(features)
    except DataError as e:
        raise UsageFailure(f"--features {features!r}: {safe_text(e)}") from e
    sel = Selection(feats, labels=labels, split=[s.strip() for s in split.split(",")] if split else None,
                    split_file=split_file, val_fraction=val_fraction, seed=seed,
                    videos=[v.strip() for v in videos.split(",") if v.strip()] if videos else None,
                    person=person, config=config_file)
    try:
        res = export(cache, sel, out, fmt, overwrite=overwrite, log=lambda m: click.echo(safe_text(m), err=True))
    except (DataError, ExportError) as e:
        raise RuntimeFailure(safe_text(e)) from e
    click.echo(f"exported {res.n_tracks} track(s), {res.n_rows} rows to {safe_text(str(res.out))} ({fmt}); "
               f"features: {', '.join(f'{m}={f[:40]}' for m, f in res.fingerprints.items())}")
    if res.failed:
        raise RuntimeFailure(f"{len(res.failed)} track(s) could not be read and were left out: "
                             f"{', '.join(map(safe_text, res.failed[:5]))}")
