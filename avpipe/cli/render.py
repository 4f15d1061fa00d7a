"""``avpipe render``: the annotated MP4 and contact sheet of one cached video.

The drawing is :mod:`avpipe.render` (a library: no click there); this module only parses the
flags and maps its errors to the exit status (2 for a video or run the user named wrongly, 1
when reading or writing failed). Importing it is cheap: the renderer and numpy load in the body.
"""
from __future__ import annotations

from pathlib import Path

import click

from avpipe.cli.errors import RuntimeFailure, UsageFailure
from avpipe.display import safe_name, safe_text


@click.command("render", epilog="""Examples:

\b
  avpipe render clips/a.mp4 --cache cache/ --out renders/
  avpipe render a.mp4 --cache /data/cache --videos /mnt/clips --run runs/jca --out renders/
  avpipe render 3fa2c1 --cache cache/ --videos clips/ --out renders/ --no-mp4

\b
VIDEO is a path to the video file, or a key / content id known to the cache
(then the file is looked up under --videos). Writes <name>.mp4, <name>_sheet.png
and <name>_sheet.json (where each frame's picture is on the sheet) under --out.""")
@click.argument("video")
@click.option("--cache", "cache_dir", required=True, type=click.Path(file_okay=False), help="Cache root.")
@click.option("--videos", "videos_dir", default=None, type=click.Path(exists=True, file_okay=False),
              help="Folder holding the video when the cache was built from another path or machine.")
@click.option("--run", "run_path", default=None, type=click.Path(exists=True, file_okay=False),
              help="A training run: draw its predicted and the labelled valence/arousal.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--frames", default=8, show_default=True, type=click.IntRange(1, 64), help="Frames on the sheet.")
@click.option("--max-frames", default=None, type=click.IntRange(min=1), help="MP4: only the first N frames.")
@click.option("--mp4/--no-mp4", default=True, help="Write the annotated MP4 (every frame).")
def render_cmd(video, cache_dir, videos_dir, run_path, out, frames, max_frames, mp4) -> None:
    """Annotated MP4 and PNG contact sheet of what the cache holds for one VIDEO."""
    from avpipe.render import RenderError, RenderInputError, attach_run, load_cached, render

    try:
        cv = load_cached(cache_dir, video, Path(videos_dir) if videos_dir else None)
        if run_path:
            attach_run(cv, run_path, cache_dir)
        res = render(cv, out, sheet_frames=frames, mp4=mp4, max_frames=max_frames)
    except RenderInputError as e:
        raise UsageFailure(safe_text(e)) from None
    except RenderError as e:
        raise RuntimeFailure(safe_text(e)) from None
    except (OSError, ValueError) as e:
        raise RuntimeFailure(f"rendering {safe_name(video)} failed: {safe_text(e)}") from None
    for k, p in res.items():
        click.echo(f"{k}: {p}")
