"""`python -m ccproxyd` and the `ccproxyd` command.  `statusline` is answered before the command
line framework loads: Claude Code runs it after every message and wants it within 300 ms."""

import sys


def entry() -> None:
    if sys.argv[1:2] == ["statusline"]:
        from .cli.statusline import main as statusline

        sys.exit(statusline(sys.argv[2:]))
    from .cli.main import main

    main()


if __name__ == "__main__":
    entry()
