"""`marketdata config show`: effective settings, where each came from, secrets masked."""

from __future__ import annotations

import typer

from marketdata.cli import render
from marketdata.cli.options import Json
from marketdata.cli.state import build_app

app = typer.Typer(help="Inspect configuration.", no_args_is_help=True)


@app.command()
def show(json: Json = False) -> None:
    """Print every setting, its source (flag, env, file, default) and value, secrets masked."""
    ctx = build_app()
    settings, sources = ctx.settings, ctx.loaded.sources
    rows = [
        {"name": name.upper(), "value": settings.masked(name), "source": sources[name]}
        for name in type(settings).model_fields
    ]
    if json:
        render.emit_json(
            {
                "settings": rows,
                "env_files": [str(p) for p in ctx.loaded.env_files],
                "database": ctx.target.shown,
            }
        )
        return
    render.table(None, ["name", "value", "source"], [tuple(r.values()) for r in rows])
    files = ", ".join(str(p) for p in ctx.loaded.env_files) or "none"
    render.note(f"env files read: {files}; database: {ctx.target.shown}")


@app.command()
def example() -> None:
    """Print an env file with every setting, its meaning and default (all commented out)."""
    from marketdata.env_example import env_example

    print(env_example(), end="")
