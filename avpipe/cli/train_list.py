"""Click glue for the model names: ``avpipe train --list`` and the model list in ``train --help``.

Kept apart from :mod:`avpipe.cli.train` so that the command module stays about options; the
listing itself is :func:`avpipe.fusion.models.model_listing` (one source for both). The models
(and torch) are imported only when the list is shown, so ``avpipe --help`` stays fast.
"""
from __future__ import annotations

import click


class TrainCommand(click.Command):
    """A command whose help ends with one line per registered fusion model."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)
        from avpipe.fusion.models import model_listing

        formatter.write_paragraph()
        formatter.write_text("Models (--fusion NAME; name, modalities a/v/t, default window, batch, lr; "
                             "`avpipe train --list` says what matches the authors' code):")
        formatter.write_paragraph()
        for line in model_listing():
            formatter.write(f"  {line}\n")


def list_models_callback(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """Eager ``--list``: print every model with its paper, code match and reconstruction, exit 0."""
    if not value or ctx.resilient_parsing:
        return
    from avpipe.fusion.models import model_listing

    click.echo("\n".join(model_listing(verbose=True)))
    click.echo("\nTraining recipes: jca, rja, dca, rjcma and maven train as their authors' code by default "
               "(--recipe authors); --recipe avpipe takes avpipe's own. Every item, with the authors' file "
               "and line and each named deviation: docs/recipes.md")
    ctx.exit(0)


list_option = click.option("--list", "list_models", is_flag=True, is_eager=True, expose_value=False,
                           callback=list_models_callback,
                           help="List the fusion models (paper, what matches the authors' code, what is "
                                "reconstructed, default window/batch/lr) and exit.")
