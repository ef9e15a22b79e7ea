"""A YAML syntax error in plain words, at the line where the fix goes.

PyYAML reports where its parser gave up, which for the common slips is often the line after the
mistake ("mapping values are not allowed here" under a key that lost its colon) and always in
parser terms (`<block end>`, `<block mapping start>`).  `explain` looks at the text around that
point and names the slip: a tab used to indent, a key indented more or less than its neighbours,
a missing colon, a value with `: ` in it, an unclosed quote or bracket.  What it cannot name keeps
the parser's words, at the parser's position.
"""

from __future__ import annotations

import re

import yaml

_KEY = re.compile(r"^(\s*)((?:-\s+)*)([^\s#'\"{\[][^:#]*?|\"[^\"]*\"|'[^']*'):(?:\s|$)")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _significant(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


def _key(line: str) -> tuple[int, str] | None:
    """(column of the key, the key) when the line is `key:` or `- key:` (0-based column)."""
    m = _KEY.match(line)
    if not m:
        return None
    return len(m.group(1)) + len(m.group(2)), m.group(3).strip()


def _spaces(n: int) -> str:
    return f"{n} space" + ("" if n == 1 else "s")


def _above(lines: list[str], row: int) -> int | None:
    """The last significant line before `row` (0-based), or None."""
    for i in range(row - 1, -1, -1):
        if _significant(lines[i]):
            return i
    return None


def _enclosing(lines: list[str], row: int) -> list[tuple[int, str, int]]:
    """The keys (and list dashes) a line at `row` could line up with: walking up, each line that
    is indented less than every line met so far; as (column, what, 1-based line)."""
    out: list[tuple[int, str, int]] = []
    limit = None
    for i in range(row - 1, -1, -1):
        line = lines[i]
        if not _significant(line):
            continue
        key = _key(line)
        column = key[0] if key else _indent(line)
        if limit is None or column < limit:
            out.append((column, f"{key[1]}:" if key else _named(line.strip()).strip("`"), i + 1))
            limit = column
        dash = _indent(line)
        if line.lstrip().startswith("- ") and (not out or out[-1][0] != dash) and dash < (limit if limit is not None else dash + 1):
            out.append((dash, "-", i + 1))
            limit = dash
        if column == 0 and _indent(line) == 0:
            break
    return out


def explain(text: str, exc: yaml.MarkedYAMLError) -> tuple[int, int, str]:
    """(line, column, message), 1-based, for a syntax error PyYAML raised on `text`."""
    lines = text.splitlines()
    mark = exc.problem_mark or exc.context_mark
    row, col = (mark.line, mark.column) if mark else (0, 0)
    problem, context = exc.problem or "", exc.context or ""
    for i, line in enumerate(lines[:row + 1]):
        if line[:len(line) - len(line.lstrip())].count("\t"):
            return i + 1, 1, "this line is indented with a tab; YAML indents with spaces only: replace the tab with spaces"
    if "\\t" in problem or "'\\t'" in problem:
        return row + 1, col + 1, "a tab character is not allowed here; use spaces (or put the value in quotes)"
    if "quoted scalar" in context and exc.context_mark is not None:
        start = exc.context_mark
        quote = lines[start.line][start.column] if start.line < len(lines) and start.column < len(lines[start.line]) else '"'
        if "escape" in problem:
            return row + 1, col + 1, ("a backslash in a double-quoted value starts an escape, and this one is not "
                                      "valid: write \\\\ for a backslash, or use single quotes")
        return start.line + 1, start.column + 1, f"the {quote} opened here is never closed: add the closing {quote}"
    if context.startswith("while parsing a flow") and exc.context_mark is not None:
        start = exc.context_mark
        opened = lines[start.line][start.column] if start.line < len(lines) else "["
        closing = "]" if opened == "[" else "}"
        line = lines[start.line] if start.line < len(lines) else ""
        if line.count(opened) > line.count(closing) or row != start.line:
            return start.line + 1, start.column + 1, f"the {opened} opened here is not closed: add {closing}"
    if "<stream end>" in problem or "end of stream" in problem:
        opened = _unclosed(lines)
        if opened is not None:
            closing = "]" if opened[2] == "[" else "}"
            return opened[0] + 1, opened[1] + 1, f"the {opened[2]} opened here is not closed: add {closing}"
    if "could not find expected ':'" in problem and exc.context_mark is not None:
        start = exc.context_mark
        return start.line + 1, start.column + 1, _no_colon(lines[start.line].strip())
    if problem == "mapping values are not allowed here" and row < len(lines):
        return _mapping_values(lines, row, col)
    if problem.startswith("expected <block end>") and row < len(lines):
        return _misaligned(lines, row)
    return row + 1, col + 1, f"YAML syntax: {problem or context}"


KEYLIKE = re.compile(r"[A-Za-z_][\w.-]{0,23}")
TOKENLIKE = re.compile(r"(?=[A-Za-z]*\d)[A-Za-z0-9]{8,}")     # a run of 8+ letters and digits, digits included


def _named(text: str) -> str:
    """A line's first word, quoted, when it looks like a key (short, no long run of letters and
    digits); never the rest of the line, nor a word that could be a secret: the message reaches
    /health, which needs no client key, and the log."""
    word = text.lstrip("- ").split(" ", 1)[0]
    return f"`{word}`" if KEYLIKE.fullmatch(word) and not TOKENLIKE.search(word) else "this line"


def _no_colon(text: str) -> str:
    named = _named(text)
    key = named.strip("`") if named.startswith("`") else "key"
    if " " in text.lstrip("- ").strip():
        return f"{named} has no colon: a key and its value are written `{key}: <value>`"
    return f"{named} has no colon after it: write `{key}:` for it to hold the indented lines below"


def _mapping_values(lines: list[str], row: int, col: int) -> tuple[int, int, str]:
    line = lines[row]
    key = _key(line)
    if key is not None and line.index(":", key[0]) < col:                 # a second `: ` on one line
        return row + 1, col + 1, (f"the value of `{key[1]}` contains `: `, which YAML reads as another key: "
                                  f"put the value in quotes")
    above = _above(lines, row)
    if above is None:
        return row + 1, col + 1, "YAML syntax: mapping values are not allowed here"
    previous = lines[above]
    if _key(previous) is None and not previous.strip().startswith("-"):
        return above + 1, _indent(previous) + 1, _no_colon(previous.strip())
    over = _over_indented(lines, row, above)
    return over or (row + 1, col + 1, "YAML syntax: mapping values are not allowed here")


def _over_indented(lines: list[str], row: int, above: int | None) -> tuple[int, int, str] | None:
    """A key indented past the key on the line above, which has a value of its own."""
    key = _key(lines[row])
    parent = _key(lines[above]) if above is not None else None
    if lines[row].lstrip().startswith("-") or key is None or parent is None or key[0] <= parent[0]:
        return None
    value = lines[above].split(":", 1)[1].split(" #", 1)[0].strip() if ":" in lines[above] else ""
    if not value:
        return None
    return row + 1, key[0] + 1, (f"`{key[1]}:` is indented more than `{parent[1]}:` on line {above + 1}, which "
                                 f"already has a value: indent it {_spaces(parent[0])}, as `{parent[1]}:` is "
                                 f"(or give `{parent[1]}:` no value on its line to nest `{key[1]}:` under it)")


def _unclosed(lines: list[str]) -> tuple[int, int, str] | None:
    """The first `[` or `{` (outside quotes and comments) that is never closed."""
    stack: list[tuple[int, int, str]] = []
    for row, line in enumerate(lines):
        quote = None
        for col, ch in enumerate(line):
            if quote:
                quote = None if ch == quote else quote
            elif ch in "'\"" and (col == 0 or line[col - 1] in " [{,:"):
                quote = ch
            elif ch == "#" and (col == 0 or line[col - 1] == " "):
                break
            elif ch in "[{":
                stack.append((row, col, ch))
            elif ch in "]}" and stack:
                stack.pop()
    return stack[0] if stack else None


def _misaligned(lines: list[str], row: int) -> tuple[int, int, str]:
    over = _over_indented(lines, row, _above(lines, row))
    if over:
        return over
    line = lines[row]
    key = _key(line)
    item = line.lstrip().startswith("-")
    what = f"`{'- ' if item else ''}{key[1]}:`" if key else _named(line.strip())
    column = key[0] if key else _indent(line)
    candidates = _enclosing(lines, row)
    if item:                                   # a list item lines up with the other items' `-`
        candidates = [c for c in candidates if c[1] == "-"] or candidates
    for dash_column, kind, at in candidates:
        if kind == "-" and dash_column == _indent(line) and not line.lstrip().startswith("-"):
            inner = next((c for c, k, _ in candidates if k != "-" and c > dash_column), dash_column + 2)
            return row + 1, _indent(line) + 1, (f"{what} is at the indentation of the list items (the `-` on line "
                                                f"{at}) without a `-` of its own: write `- {key[1] + ': …' if key else '…'}` to start "
                                                f"a new item, or indent it {_spaces(inner)} to add it to the item above")
    options = [(f"the `-` on line {at}" if k == "-" else f"`{k}` on line {at}") + f" ({_spaces(c)})"
               for c, k, at in candidates if k != "-" or item]
    options = options[:3]
    choice = ", ".join(options[:-1]) + (" or " if len(options) > 1 else "") + (options[-1] if options else "")
    return row + 1, _indent(line) + 1, (f"{what} is indented {_spaces(_indent(line))}, which lines up with nothing "
                                        f"above it: line it up with {choice}" if options else
                                        f"{what} is indented {_spaces(column)}, which lines up with nothing above it")
