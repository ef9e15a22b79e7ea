"""The `ccproxyd` command line: `main` (the click commands: serve, check, route, prices, costs,
cache), `statusline` and `local` (asking a running daemon, standard library only: Claude Code runs
the status line after every message), `report` (`costs --by`), `launch` (`ccproxyd claude`).

May import every other package; only `__main__` imports it.  Kept empty here, so that the status
line's import of `cli.statusline` loads no click."""
