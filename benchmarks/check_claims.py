"""Check that every benchmark figure in the docs matches the result file it cites.

README.md, benchmarks/README.md and docs/**/*.md quote numbers that the scripts in benchmarks/ measured and wrote
to benchmarks/results/*.json. A figure copied by hand goes stale when its benchmark is rerun (the README once quoted
a vector-store row two runs old), and nothing but a reader noticed. So each figure names the value it was copied
from, in an HTML comment that GitHub does not render, and CI recomputes it from the file:

    0.98 s<!-- claim: startup.json validation_error_seconds -->
    31.6 min<!-- claim: defaults_transfer.json tasks[task=rotten_tomatoes].wall_seconds /60 -->
    -0.35 points<!-- claim: lora_vs_hf_trainer.json (accuracy_adaptlab - accuracy_hf_group_by_length) *100 -->

A table cites once per column (header cell) and once per row (any cell of the row) instead of once per cell:

    | strategy | test acc<!-- claim-col: test_accuracy --> | 95% CI<!-- claim-col: ci95[0]; ci95[1] --> |
    | full<!-- claim-row: compare_rotten_tomatoes.json results[strategy=full] --> | 0.815 | 0.790-0.840 |

The convention for writers is in benchmarks/README.md ("Citing a result"). A figure matches when it equals the
cited value rounded to the figure's own printed precision (0.98 matches 0.979; 124k matches 124446), so the writer
chooses the digits and the checker never guesses a format. What fails: a figure that does not match; a marker that
names no result file, a file that does not exist or a path that is not in it; a marker with no figure before it; a
row of a cited table that cites no file; and a bold figure (`**2.71x**`, the docs' way of printing a headline result)
with no marker, since a headline number is exactly the kind that must not go unchecked. Fenced code blocks and
inline code are example output and are not read.

    python benchmarks/check_claims.py              # README.md, benchmarks/README.md, docs/**/*.md
    python benchmarks/check_claims.py FILE.md ...  # only these (the tests use it)

Exit 0 when every figure matches, 1 otherwise (each failure printed as FILE:LINE: what and where).
"""

from __future__ import annotations

import ast
import itertools
import json
import operator
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

MARKER = re.compile(r"<!--\s*claim(?P<kind>-row|-col)?(?:\s+(?P<name>[\w-]+))?\s*:(?P<body>.*?)-->")
MARKER_START = re.compile(r"<!--\s*claim")
CODE_SPAN = re.compile(r"(`+).+?\1")
# A printed number: optional sign (only at a word's start, so the "-" of a range 0.790-0.840 is not one), digits
# with optional thousands commas and decimals, and an optional k/M multiplier glued to it (124k, 22.7M).
NUMBER = r"(?P<sign>(?:(?<![^\s(|/~*])[-+\u2212])?)(?<![\w.,])(?P<digits>\d{1,3}(?:,\d{3})+|\d+)(?P<decimals>\.\d+)?(?P<mult>[kM](?![A-Za-z]))?"
NUMBER_RE = re.compile(NUMBER)
# The figure a marker cites: a number, then at most `**` and one unit word (x, %, s, ms, min, tokens/s), then the marker.
FIGURE_BEFORE = re.compile(NUMBER + r"\**(?:\s?[A-Za-z%/]+)?[*\s]*$")
BOLD_FIGURE = re.compile(r"\*\*" + NUMBER + r"(?:\s?[A-Za-z%/]+)?\*\*")
PATH_PART = re.compile(r'\.?(?P<key>[^.\[\]"\s]+)|\[(?P<index>-?\d+)\]|\["(?P<quoted>[^"]+)"\]|\[(?P<where>[^\]"]+=[^\]]+)\]')
# A marker expression's pieces: an operator or parenthesis, a number, or a JSON path (quoted parts may hold spaces).
EXPR_TOKEN = re.compile(r'\s*(?:(?P<op>[-+*/()])|(?P<number>\d+(?:\.\d+)?)(?![\w.\[])'
                        r'|(?P<path>(?:[^\s"()]|"[^"]*")+))')
OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


class ClaimError(Exception):
    """A marker that cannot be checked or a figure that does not match: the message says which and why."""


def mask(line: str) -> str:
    """The line with inline code and markers blanked out (same length, so positions still match): numbers inside a
    marker's path or in code are not figures. NUL, not a space, so that "-->-0.84" does not read as a signed -0.84."""
    for pattern in (CODE_SPAN, MARKER):
        line = pattern.sub(lambda m: "\0" * len(m.group(0)), line)
    return line


def printed(match: re.Match) -> tuple[float, float, str]:
    """The value a printed number stands for and half a unit of its last digit (the rounding it allows)."""
    mult = {"k": 1e3, "M": 1e6, None: 1.0}[match.group("mult")]
    decimals = match.group("decimals") or ""
    value = float(match.group("digits").replace(",", "") + decimals) * mult
    value = -value if match.group("sign") in ("-", "\u2212") else value
    text = match.group("sign") + match.group("digits") + decimals + (match.group("mult") or "")
    return value, 0.5 * 10 ** -max(len(decimals) - 1, 0) * mult, text


def resolve(data, path: str, where: str):
    """Follow a path such as `results[chunks=100000].lancedb_ivf_pq_ms.p50` or `same["a key"][0]` into JSON."""
    position = 0
    while position < len(path):
        part = PATH_PART.match(path, position)
        if part is None or part.end() == position:
            raise ClaimError(f"cannot read path {path!r} at {path[position:]!r}")
        position = part.end()
        try:
            if part.group("where"):
                tests = re.findall(r'\s*([^,=]+?)\s*=\s*("[^"]*"|[^,]*)', part.group("where"))
                found = [item for item in data if all(str(item.get(k)) == v.strip().strip('"') for k, v in tests)]
                if len(found) != 1:
                    raise ClaimError(f"{len(found)} elements match [{part.group('where')}] in {where} {path}")
                data = found[0]
            elif part.group("index"):
                data = data[int(part.group("index"))]
            else:
                data = data[part.group("key") or part.group("quoted")]
        except (KeyError, IndexError, TypeError, AttributeError):
            raise ClaimError(f"{where} has no {path!r} (stopped at {part.group(0)!r})") from None
    return data


def load(name: str, cache: dict) -> dict:
    """A result file by its bare name, read once however many figures cite it."""
    if not re.fullmatch(r"[\w.-]+\.json", name):
        raise ClaimError(f"cites no result file (the first word must be a file in benchmarks/results/, got {name!r})")
    if name not in cache:
        path = RESULTS / name
        if not path.is_file():
            raise ClaimError(f"cites {name}, which does not exist in benchmarks/results/")
        cache[name] = json.loads(path.read_text())
    return cache[name]


def evaluate(expression: str, data, where: str) -> float:
    """Arithmetic over JSON paths: `+ - * /`, parentheses and plain numbers, operators between spaces (a path may
    hold a hyphen: `strategy=last-k`). `*100` prints a fraction as a percentage, `/60` seconds as minutes,
    `(a - b) / b *100` a relative difference: whatever the printed figure is, the marker says how it was derived."""
    source, values = [], {}
    tokens = list(EXPR_TOKEN.finditer(expression))
    if "".join(token.group(0) for token in tokens) != expression.rstrip():
        raise ClaimError(f"cannot read {expression.strip()!r} (write PATH, or arithmetic over paths: (a - b) / b *100)")
    for token in tokens:
        if token.group("path"):
            value = resolve(data, token.group("path"), where)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ClaimError(f"{where} {token.group('path')} is {value!r}, not a number")
            values[f"v{len(values)}"] = value
            source.append(f"v{len(values) - 1}")
        else:
            source.append(token.group("op") or token.group("number"))
    try:
        return arithmetic(ast.parse(" ".join(source), mode="eval").body, values)
    except (SyntaxError, ZeroDivisionError) as error:
        raise ClaimError(f"cannot compute {expression.strip()!r} from {where}: {error}") from None


def arithmetic(node: ast.AST, values: dict) -> float:
    """Evaluate the parsed expression by hand: numbers, paths and + - * / only, so a marker can never run code."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return values[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -arithmetic(node.operand, values)
    if isinstance(node, ast.BinOp) and type(node.op) in OPERATORS:
        return OPERATORS[type(node.op)](arithmetic(node.left, values), arithmetic(node.right, values))
    raise SyntaxError(f"unexpected {ast.unparse(node)!r}")


def compare(number: re.Match, expression: str, data, where: str) -> None:
    """Half a unit of the last printed digit either way, so both of a writer's roundings of a tie (2.955 as 2.95
    or 2.96) pass and nothing further off does."""
    value, half_unit, text = printed(number)
    actual = evaluate(expression, data, where)
    if abs(actual - value) > half_unit * (1 + 1e-9) + 1e-12:
        raise ClaimError(f"figure {text} does not match {where} {expression.strip()} = {actual:.6g}")


class Checker:
    """Reads one markdown file line by line, remembering the cited columns of the table it is in."""

    def __init__(self, path: Path, cache: dict):
        self.path, self.cache = path, cache
        self.checked, self.errors = 0, []
        self.columns: dict[int, list[str]] | None = None  # the current table's cited columns; None outside a table

    def fail(self, lineno: int, message: str) -> None:
        self.errors.append(f"{self.path}:{lineno}: {message}")

    def run(self) -> None:
        in_fence = False
        for lineno, raw in enumerate(self.path.read_text().splitlines(), 1):
            if raw.lstrip().startswith("```"):
                in_fence, self.columns = not in_fence, None
            elif not in_fence:
                self.line(lineno, CODE_SPAN.sub(lambda m: "\0" * len(m.group(0)), raw), mask(raw))

    def line(self, lineno: int, line: str, masked: str) -> None:
        """Inline markers, then (on a table row) the cited columns, then the bold figures, which one of those two
        must have covered."""
        starts = {m.start() for m in MARKER.finditer(line)}
        for start in (m.start() for m in MARKER_START.finditer(line)):
            if start not in starts:
                self.fail(lineno, "a claim marker that cannot be read (write <!-- claim: FILE PATH --> on one line)")
        covered = set()
        for marker in MARKER.finditer(line):
            if marker.group("kind"):
                continue
            figure = FIGURE_BEFORE.search(masked[: marker.start()])
            try:
                if figure is None:
                    raise ClaimError("a claim marker with no figure right before it")
                covered.add(figure.start("digits"))
                name, _, expression = marker.group("body").strip().partition(" ")
                compare(figure, expression, load(name, self.cache), name)
                self.checked += 1
            except ClaimError as error:
                self.fail(lineno, f"{error} [{marker.group(0)}]")
        if line.lstrip().startswith("|"):
            covered |= self.table_row(lineno, line, masked, covered)
        else:
            self.columns = None
        for bold in BOLD_FIGURE.finditer(masked):
            if bold.start("digits") not in covered:
                self.fail(lineno, f"bold figure {bold.group(0)} cites no result file (add <!-- claim: FILE PATH -->)")

    def table_row(self, lineno: int, line: str, masked: str, inline: set[int]) -> set[int]:
        """A table's first row declares its cited columns (claim-col); every later row with figures in those
        columns names the object they come from (claim-row), or several objects by name (`claim-row tuned:`,
        read as `tuned.PATH` in the columns) when one row draws on two. A figure with its own inline marker is
        left to it. Returns where the figures this row checked start."""
        bars = [m.start() for m in re.finditer(r"(?<!\\)\|", line)]
        cells = list(itertools.pairwise(bars))
        markers = [list(MARKER.finditer(line, a, b)) for a, b in cells]
        if self.columns is None:
            self.columns = {i: [e for m in ms if m.group("kind") == "-col" for e in m.group("body").split(";")]
                            for i, ms in enumerate(markers)}
            self.columns = {i: exprs for i, exprs in self.columns.items() if exprs}
            return set()
        if any(m.group("kind") == "-col" for ms in markers for m in ms):
            self.fail(lineno, "claim-col belongs in a table's header row")
        rows = [m for ms in markers for m in ms if m.group("kind") == "-row"]
        figures = {i: [n for n in NUMBER_RE.finditer(masked, a + 1, b) if n.start("digits") not in inline]
                   for i, (a, b) in enumerate(cells) if i in self.columns}
        figures = {i: numbers for i, numbers in figures.items() if numbers}
        if not figures:
            if rows and not self.columns:
                self.fail(lineno, "claim-row in a table whose header cites no column (claim-col)")
            return set()
        covered = {number.start("digits") for numbers in figures.values() for number in numbers}
        try:
            row, where = self.row_object(rows)
        except ClaimError as error:
            self.fail(lineno, str(error))
            return covered
        for i, numbers in figures.items():
            expressions = self.columns[i]
            if len(numbers) > len(expressions):  # fewer is fine: "0" where others print "74,498 (0.327%)"
                cell = line[cells[i][0] + 1 : cells[i][1]].strip()
                self.fail(lineno, f"cell {cell!r} has {len(numbers)} figures, its column cites {len(expressions)}")
                continue
            for number, expression in zip(numbers, expressions):
                if expression.strip() == "-":  # a number in the cell that is not a result (a target, a count)
                    continue
                try:
                    compare(number, expression, row, where)
                    self.checked += 1
                except ClaimError as error:
                    self.fail(lineno, str(error))
        return covered

    def row_object(self, rows: list[re.Match]) -> tuple[object, str]:
        """The JSON a row's columns read: one unnamed claim-row's object, or {name: object} for named ones."""
        if not rows:
            raise ClaimError("a row of a cited table cites no result file (add <!-- claim-row: FILE PATH -->)")
        named = {m.group("name"): m for m in rows}
        if (None in named and len(rows) > 1) or len(named) != len(rows):
            raise ClaimError("a row cites one object (claim-row) or several with distinct names (claim-row NAME)")
        objects, where = {}, []
        for name, marker in named.items():
            file, _, path = marker.group("body").strip().partition(" ")
            objects[name] = resolve(load(file, self.cache), path.strip(), file)
            where.append(f"{file} {path.strip()}")
        return objects.pop(None) if None in objects else objects, " and ".join(where)


def main(argv: list[str]) -> int:
    files = [Path(a) for a in argv] or [ROOT / "README.md", ROOT / "benchmarks" / "README.md",
                                        *sorted((ROOT / "docs").glob("**/*.md"))]
    cache: dict = {}
    checked, errors = 0, []
    for path in files:
        checker = Checker(path, cache)
        checker.run()
        checked, errors = checked + checker.checked, errors + checker.errors
    for error in errors:
        print(error)
    print(f"{checked} figures checked in {len(files)} files: "
          + (f"{len(errors)} failures" if errors else "all match their result files"))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
