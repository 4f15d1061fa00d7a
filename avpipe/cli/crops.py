"""``avpipe ingest-crops``: the organisers' ``cropped_aligned`` tree as the faces source.

Reading and embedding the crops is :func:`avpipe.extractors.crop_tree.ingest_crop_tree`; this
module parses and checks the flags and prints the report.
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

from avpipe.cli.errors import UsageFailure
from avpipe.cli.params import parse_weights


@click.command("ingest-crops", epilog="""Examples:

\b
  avpipe ingest-crops --crops Aff-Wild2/cropped_aligned --videos Aff-Wild2/videos \\
                      --cache /data/avcache --backbone dlib-torch
  avpipe train --fusion jca --labels "6th ABAW Annotations/VA_Estimation_Challenge" \\
               --cache /data/avcache --features visual=visual@<printed fingerprint>,audio=logmel
""")
@click.option("--crops", "crops_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="cropped_aligned root: <video>/NNNNN.jpg or <video>_left/, <video>_right/ (1-based frames).")
@click.option("--videos", "videos_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The videos the crops were cut from (probed for their frame counts).")
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              show_default="$AVPIPE_CACHE or ./cache", help="Cache root.")
@click.option("--backbone", default="dlib-torch", show_default=True,
              help="Visual backbone embedding the crops into a 'visual' entry ('none': faces entries only).")
@click.option("--crop-size", type=click.IntRange(min=16), default=None,
              help="Required crop side in pixels (default: whatever the first crop has; all must agree).")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1))
@click.option("--weights", "weights", multiple=True, metavar="NAME=PATH", help="Backbone weights file.")
def ingest_crops(crops_dir: Path, videos_dir: Path, cache_dir: Path | None, backbone: str,
                 crop_size: int | None, device: str, batch_size: int, weights: tuple[str, ...]) -> None:
    """Read an Aff-Wild2-style cropped_aligned tree into the cache as 'faces' entries (crops +
    mask, one row per video frame, fingerprint = hash of the crops' content) and embed them into
    'visual' entries. Train on them by pinning the printed visual fingerprint in --features.

    A video whose folders are bad (missing, a non-image file, a wrong size, bad numbering, more
    files than frames) is reported and skipped; the others are ingested and nothing already cached
    is touched. Exit status: 0 all ingested, 1 some videos failed, 2 usage error.
    """
    from avpipe.extractors.backbones import backbone_names
    from avpipe.extractors.crop_tree import ingest_crop_tree
    from avpipe.pipeline.runner import default_cache_root
    from avpipe.pipeline.stage import Runtime

    if not crops_dir.is_dir():
        raise UsageFailure(f"--crops {crops_dir}: not a folder", usage=True)
    name = None if backbone.lower() == "none" else backbone
    if name is not None and name not in backbone_names():
        raise UsageFailure(f"--backbone {backbone!r}: known: {', '.join(backbone_names())}, none", usage=True)
    wmap = parse_weights(weights)
    root = (cache_dir or default_cache_root()).expanduser().absolute()
    rep = ingest_crop_tree(crops_dir, videos_dir, root, backbone=name, crop_size=crop_size,
                           runtime=Runtime(device=device, batch_size=batch_size, weights=wmap),
                           log=lambda m: click.echo(m, err=True), progress=True)
    for key, why in rep.failed:
        click.echo(f"FAILED {key}: {why}", err=True)
    if rep.unused_folders:
        click.echo(f"note: {len(rep.unused_folders)} crop folder(s) match no video "
                   f"(e.g. {', '.join(rep.unused_folders[:3])})", err=True)
    click.echo(f"ingested {len(rep.ingested)} video(s), {len(rep.failed)} failed")
    if rep.faces_fingerprint:
        click.echo(f"faces fingerprint  {rep.faces_fingerprint}")
    if rep.visual_fingerprint:
        click.echo(f"visual fingerprint {rep.visual_fingerprint}")
        click.echo(f"train on them with: --features visual=visual@{rep.visual_fingerprint[:16]}")
    sys.exit(1 if rep.failed else 0)
