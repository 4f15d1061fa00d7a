"""``avpipe sample``: write the synthetic labelled sample corpus."""
from __future__ import annotations

from pathlib import Path

import click

from avpipe.cli.errors import RuntimeFailure


@click.command("sample", epilog="""\b
Examples:
  avpipe sample --out sample/               # 12 videos: 8 train, 4 validation
  avpipe sample --out /tmp/s --videos 4
  avpipe extract --videos sample/videos --config offline --stages visual,logmel,text
  avpipe train --fusion jca --labels sample/labels

--config offline (a preset shipped with avpipe) picks models from the package index; the default
stages also need FaceNet and VGGish weights (`avpipe models list` shows what is present).

The corpus is SYNTHETIC (astronaut photo + espeak-ng speech whose prosody, words, lighting and a
drawn mouth follow per-frame valence/arousal curves). Its CCC says nothing about real affect.
""")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder to write videos/ and labels/{Train_Set,Validation_Set}/ into.")
@click.option("--videos", "n_videos", type=click.IntRange(1, 1000), default=12, show_default=True,
              help="Number of videos (about a third go to the validation split).")
@click.option("--seed", type=int, default=0, show_default=True, help="Generation seed.")
def sample(out: Path, n_videos: int, seed: int) -> None:
    """Make a small labelled talking-head corpus offline (needs the 'sample' extra)."""
    try:
        from avpipe.sample.corpus import make_corpus
    except ImportError as e:  # pragma: no cover
        raise RuntimeFailure(f"{e}. Install the sample extra: pip install 'avpipe[sample]'") from e
    vids = make_corpus(out, n_videos, seed=seed)
    n_train = sum(v.split == "Train_Set" for v in vids)
    click.echo(f"wrote {len(vids)} videos ({n_train} train, {len(vids) - n_train} validation) "
               f"to {out}/videos and labels to {out}/labels")
