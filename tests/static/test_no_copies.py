"""No logic is written twice in src/: no run of six identical lines stands in two places.

Lines are compared with white space folded; blank lines, comments, lone punctuation, import
statements (with their parenthesised name lists) and the parameters of a signature split over
lines (an adapter must repeat its port's) do not count. What two places share belongs in
one function both call (``duplicates --repo src`` lists near-copies too).
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
RUN = 6
_PUNCTUATION = re.compile(r"[\s()\[\]{},:;.]*")


def code_lines(text: str) -> list[tuple[int, str]]:
    """The lines that count, numbered, white space folded."""
    lines: list[tuple[int, str]] = []
    in_import = in_signature = False
    for number, raw in enumerate(text.splitlines(), start=1):
        line = " ".join(raw.split())
        if in_import:  # the names of a parenthesised import
            in_import = ")" not in line
            continue
        if in_signature:  # an adapter repeats its port's signature: interface, not logic
            in_signature = not (line.startswith(")") and line.endswith(":"))
            continue
        if re.match(r"(async )?def \w+\($", line):
            in_signature = True
            continue
        if not line or line.startswith("#") or _PUNCTUATION.fullmatch(line):
            continue
        if line.startswith("import ") or (line.startswith("from ") and " import " in line):
            in_import = line.endswith("(")
            continue
        lines.append((number, line))
    return lines


def repeated_runs(files: dict[str, str], run: int = RUN) -> list[list[str]]:
    """Each run of ``run`` code lines that stands in more than one place: its places."""
    places: defaultdict[tuple[str, ...], list[str]] = defaultdict(list)
    for name, text in files.items():
        lines = code_lines(text)
        for start in range(len(lines) - run + 1):
            window = lines[start : start + run]
            places[tuple(line for _, line in window)].append(
                f"{name}:{window[0][0]}-{window[-1][0]}"
            )
    return [where for where in places.values() if len(where) > 1]


def test_no_run_of_six_identical_lines_repeats_in_src() -> None:
    files = {str(p.relative_to(ROOT)): p.read_text() for p in sorted(SRC.rglob("*.py"))}
    repeated = repeated_runs(files)
    assert not repeated, "the same lines in two places (make them one function):\n" + "\n".join(
        " ~ ".join(where) for where in repeated
    )


def test_the_checker_finds_a_copy_and_passes_over_what_does_not_count() -> None:
    body = "\n".join(f"value_{i} = compute({i})" for i in range(RUN))
    assert repeated_runs({"a.py": body, "b.py": "# copied\n\n" + body.replace("\n", "\n\n")}) == [
        [f"a.py:1-{RUN}", f"b.py:3-{2 * RUN + 1}"]
    ]
    shorter = "\n".join(body.splitlines()[:-1])
    assert repeated_runs({"a.py": body, "b.py": shorter}) == []
    imports = "from x import (\n" + ",\n".join(f"    name_{i}" for i in range(RUN)) + ",\n)"
    assert repeated_runs({"a.py": imports, "b.py": imports}) == []
