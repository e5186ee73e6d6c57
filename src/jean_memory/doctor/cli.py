"""`jean-memory doctor URL`: the command-line face of the checks."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TextIO

from jean_memory.doctor.claude import BUDGET_SECONDS
from jean_memory.doctor.discovery import validate_url
from jean_memory.doctor.report import can_print_marks, render_json, render_text
from jean_memory.doctor.runner import diagnose, exit_code

DESCRIPTION = (
    "Check a deployed MCP connector (ours or any other) the way Claude meets it: the 401 probe, "
    "OAuth discovery, registration, the authorization request, CORS, TLS and timing. "
    "Registers one OAuth client on the server, as Claude does."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the doctor's arguments to `parser` (e.g. a `doctor` subparser of the main CLI)."""
    parser.add_argument("url", help="the connector URL you would paste into Claude, e.g. https://host/mcp")
    parser.add_argument("--json", action="store_true", help="print a JSON list of {name, ok, detail, fix, ms}")
    parser.add_argument(
        "--timeout",
        type=float,
        default=BUDGET_SECONDS,
        help=f"seconds allowed for each answer (default and maximum budget: Claude's {BUDGET_SECONDS:g})",
    )
    parser.add_argument("--ca-file", help="trust this CA bundle instead of the public roots (default: SSL_CERT_FILE)")


def run_doctor(
    url: str,
    *,
    json_output: bool = False,
    timeout: float = BUDGET_SECONDS,
    ca_file: str | None = None,
    out: TextIO | None = None,
) -> int:
    """Check `url`, print the report, and return the exit code (0 all required checks pass,
    1 something fails, 2 the URL or options are unusable)."""
    out = out or sys.stdout
    problem = (
        validate_url(url)
        or (None if 0 < timeout <= BUDGET_SECONDS else f"--timeout must be more than 0 and at most {BUDGET_SECONDS:g}")
        or (None if not ca_file or os.path.isfile(ca_file) else f"--ca-file {ca_file} is not a readable file")
    )
    if problem:
        print(f"jean-memory doctor: {problem}", file=sys.stderr)
        return 2
    results = diagnose(url, timeout=timeout, ca_file=ca_file)
    if json_output:
        out.write(render_json(results))
    else:
        out.write(render_text(url, results, unicode=can_print_marks(getattr(out, "encoding", "utf-8"))))
    out.flush()
    return exit_code(results)


def run_from_args(args: argparse.Namespace) -> int:
    """Entry point for a parser built with `add_arguments`."""
    return run_doctor(args.url, json_output=args.json, timeout=args.timeout, ca_file=args.ca_file)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jean-memory doctor", description=DESCRIPTION)
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))
