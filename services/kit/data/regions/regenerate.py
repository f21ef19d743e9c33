#!/usr/bin/env python3
"""Regenerate the region TSV files from the npm package `idn-area-data`.

Usage:
    cd /tmp && npm pack idn-area-data && tar xzf idn-area-data-*.tgz
    python3 regenerate.py /tmp/package            # writes next to this script
    python3 regenerate.py /tmp/package --out DIR  # writes into DIR

The argument is the unpacked package (the folder holding package.json and
data/). Python 3.11 standard library only.

The conversion is a format change only: every code loses its dots
("32.75.01.1001" -> "3275011001"), every name is kept byte for byte, and each
level is written as `code<TAB>name` lines sorted by code, UTF-8, "\n" endings,
no header. The script refuses (exit status 1) when a code does not fit the
2/4/6/10-digit scheme, a code is repeated, a child's code does not start with
its parent's, a parent is missing, or a name cannot be stored on one TSV line.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path

# level, csv file, parent column, dotted code pattern, digits once the dots go
LEVELS = [
    ("provinces", None, re.compile(r"\d{2}"), 2),
    ("regencies", "province_code", re.compile(r"\d{2}\.\d{2}"), 4),
    ("districts", "regency_code", re.compile(r"\d{2}\.\d{2}\.\d{2}"), 6),
    ("villages", "district_code", re.compile(r"\d{2}\.\d{2}\.\d{2}\.\d{4}"), 10),
]


def fail(problems: list[str]) -> None:
    for problem in problems[:50]:
        print(f"error: {problem}", file=sys.stderr)
    if len(problems) > 50:
        print(f"error: ... and {len(problems) - 50} more", file=sys.stderr)
    sys.exit(1)


def convert(package: Path, out: Path) -> None:
    meta = json.loads((package / "package.json").read_text(encoding="utf-8"))
    if meta.get("name") != "idn-area-data":
        fail([f"{package} is not the idn-area-data package"])
    print(f"idn-area-data {meta.get('version')}")

    parents: set[str] | None = None
    tables: list[tuple[str, list[tuple[str, str]]]] = []
    problems: list[str] = []
    for level, parent_column, pattern, digits in LEVELS:
        path = package / "data" / f"{level}.csv"
        with path.open(encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
        seen: set[str] = set()
        lines: list[tuple[str, str]] = []
        for number, row in enumerate(rows, start=2):
            dotted, name = row["code"], row["name"]
            where = f"{path.name}:{number} {dotted!r}"
            if not pattern.fullmatch(dotted):
                problems.append(f"{where}: code does not fit the {digits}-digit scheme")
                continue
            code = dotted.replace(".", "")
            if code in seen:
                problems.append(f"{where}: repeated code")
            seen.add(code)
            if parent_column is not None:
                parent = row[parent_column]
                if not dotted.startswith(parent + "."):
                    problems.append(f"{where}: not under its parent {parent!r}")
                elif parents is not None and parent.replace(".", "") not in parents:
                    problems.append(f"{where}: parent {parent!r} is not listed")
            if not name or any(c in name for c in "\t\r\n"):
                problems.append(f"{where}: name {name!r} cannot be a TSV field")
            lines.append((code, name))
        lines.sort()
        tables.append((level, lines))
        parents = seen
    if problems:
        fail(problems)

    out.mkdir(parents=True, exist_ok=True)
    for level, lines in tables:
        target = out / f"{level}.tsv"
        with target.open("w", encoding="utf-8", newline="\n") as fh:
            for code, name in lines:
                fh.write(f"{code}\t{name}\n")
        print(f"{target}: {len(lines)} lines, {target.stat().st_size} bytes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", type=Path, help="the unpacked idn-area-data package")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent,
        help="where to write the .tsv files (default: beside this script)",
    )
    args = parser.parse_args()
    convert(args.package, args.out)


if __name__ == "__main__":
    main()
