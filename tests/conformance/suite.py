"""Running the MCP conformance suite (npm `@modelcontextprotocol/conformance`) and judging it.

The suite is a Node 22 program installed at the repo root by `npm ci` (package.json pins it
and Node 22 itself; scripts/install-ci-deps.sh does that). Each run writes one
`checks.json` per scenario under its `--output-dir`; we read those rather than the pretty
console output, and compare the failures with an expected-failures file in the suite's own
baseline format (`server:` then `- scenario` or `- scenario:check-id` lines), applying the
suite's rules: a listed failure (or warning: the suite counts both) is excused, an unlisted
one is a regression, and a listed entry that now passes is stale and must be removed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "@modelcontextprotocol/conformance"
VERSION = "0.2.0-alpha.12"
PACKAGE_DIR = REPO / "node_modules" / "@modelcontextprotocol" / "conformance"
ENTRY = PACKAGE_DIR / "dist" / "index.js"
HERE = Path(__file__).resolve().parent
ARTIFACTS = REPO / "test-artifacts" / "conformance"
TIMESTAMP = re.compile(r"-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z$")
SEVERITY = {"FAILURE": 4, "WARNING": 3, "SKIPPED": 2, "SUCCESS": 1}


def _node_major(binary: str) -> int | None:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.match(r"v(\d+)\.", out.stdout.strip())
    return int(match.group(1)) if match else None


def find_node() -> str | None:
    """Node 22 or newer: $JEAN_MEMORY_TEST_NODE, the npm-installed `node@22` under node_modules,
    or `node` on PATH."""
    candidates = [os.environ.get("JEAN_MEMORY_TEST_NODE"), str(REPO / "node_modules" / ".bin" / "node"), "node"]
    for candidate in filter(None, candidates):
        path = candidate if os.path.sep in candidate else shutil.which(candidate)
        if path and os.path.exists(path) and (_node_major(path) or 0) >= 22:
            return path
    return None


def missing() -> str | None:
    """Why the suite cannot run here, or None when it can."""
    if find_node() is None:
        return "Node 22 is not installed (npm ci at the repo root installs it; see scripts/install-ci-deps.sh)"
    try:
        installed = json.loads((PACKAGE_DIR / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return f"{PACKAGE} is not installed (run npm ci at the repo root; see scripts/install-ci-deps.sh)"
    if installed != VERSION or not ENTRY.exists():
        return f"{PACKAGE} {installed} is installed; the tests pin {VERSION} (run npm ci)"
    return None


def command(*args: str) -> list[str]:
    node = find_node()
    assert node is not None, missing()
    return [node, str(ENTRY), *args]


# --- results -----------------------------------------------------------------------------------


@dataclass
class SuiteRun:
    """One invocation: its console output, exit code and the checks of every scenario it ran."""

    name: str
    returncode: int
    output: str
    scenarios: dict[str, list[dict[str, Any]]]
    announced: list[str]  # scenarios the console said it started, in order

    def save_log(self) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{self.name}.log"
        path.write_text(self.output)
        return path

    def status(self, scenario: str) -> str:
        checks = self.scenarios.get(scenario)
        if checks is None:
            return "NOT RUN"
        worst = max((SEVERITY.get(c["status"], 0) for c in checks), default=0)
        return {4: "FAILURE", 3: "WARNING", 2: "SKIPPED"}.get(worst, "SUCCESS")

    def table(self) -> str:
        return "\n".join(f"  {self.status(s):8} {s}" for s in sorted(self.scenarios))


def read_results(output_dir: Path, prefix: str, output: str, returncode: int, name: str) -> SuiteRun:
    """`prefix` is the folder prefix the suite uses: `server-` or `authorization-server-`."""
    scenarios: dict[str, list[dict[str, Any]]] = {}
    for checks_file in sorted(output_dir.glob("*/checks.json")):
        folder = checks_file.parent.name
        assert folder.startswith(prefix) and TIMESTAMP.search(folder), f"unexpected result folder {folder}"
        scenario = TIMESTAMP.sub("", folder[len(prefix) :])
        scenarios[scenario] = json.loads(checks_file.read_text())
    announced = re.findall(r"^=== Running scenario: (\S+) ===$", output, flags=re.MULTILINE)
    return SuiteRun(name, returncode, output, scenarios, announced)


# --- expected failures -------------------------------------------------------------------------


def load_expected_failures(path: Path, section: str = "server") -> list[str]:
    """The entries of one section of a baseline file in the suite's format (a YAML subset:
    `section:` followed by `  - entry  # comment` lines)."""
    entries: list[str] = []
    current: str | None = None
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        if not line.startswith((" ", "-")):
            assert line.endswith(":"), f"{path}: cannot read {raw!r}"
            current = line[:-1].strip()
            continue
        item = line.strip()
        assert item.startswith("- "), f"{path}: cannot read {raw!r}"
        if current == section:
            entries.append(item[2:].strip())
    return entries


@dataclass
class Verdict:
    unexpected: list[str] = field(default_factory=list)  # failures nobody expected
    stale: list[str] = field(default_factory=list)  # expected failures that no longer fail
    excused: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.unexpected and not self.stale


def _describe(scenario: str, check: dict[str, Any]) -> str:
    message = (check.get("errorMessage") or check.get("description") or "").strip().replace("\n", " ")
    return f"{scenario}:{check.get('id')} - {message[:300]}"


def judge(run: SuiteRun, expected: Iterable[str] = ()) -> Verdict:
    """The suite's baseline rules (its `--expected-failures`), over every scenario that ran,
    scored or not: a check that ends FAILURE or WARNING (the suite counts both) must be listed,
    and a listed one must not pass. Occurrences of one check id collapse to the most severe."""
    verdict = Verdict()
    whole = {e for e in expected if ":" not in e}
    per_check: dict[str, set[str]] = {}
    for entry in expected:
        if ":" in entry:
            scenario, check_id = entry.split(":", 1)
            assert scenario not in whole, f"{scenario} is baselined both wholesale and per check"
            per_check.setdefault(scenario, set()).add(check_id)

    for scenario in run.announced:
        if scenario not in run.scenarios:
            verdict.unexpected.append(f"{scenario}: the scenario crashed or wrote no checks.json")
    for scenario, checks in sorted(run.scenarios.items()):
        worst: dict[str, dict[str, Any]] = {}
        for check in checks:
            if check.get("status") == "INFO":
                continue
            current = worst.get(check.get("id", ""))
            if current is None or SEVERITY.get(check["status"], 0) > SEVERITY.get(current["status"], 0):
                worst[check.get("id", "")] = check
        not_passing = [c for c in worst.values() if c["status"] in ("FAILURE", "WARNING")]
        for check in not_passing:
            listed = scenario in whole or check.get("id") in per_check.get(scenario, set())
            if listed:
                verdict.excused.append(_describe(scenario, check))
            elif check["status"] == "WARNING":
                verdict.unexpected.append("(warning) " + _describe(scenario, check))
            else:
                verdict.unexpected.append(_describe(scenario, check))
            if check["status"] == "WARNING":
                verdict.warnings.append(_describe(scenario, check))
        if scenario in whole and not not_passing:
            verdict.stale.append(f"{scenario}: expected to fail, but every check passed")
        for check_id in sorted(per_check.get(scenario, set())):
            if check_id in worst and worst[check_id]["status"] == "SUCCESS":
                verdict.stale.append(f"{scenario}:{check_id}: expected to fail, but it passed")
    for scenario in sorted((whole | per_check.keys()) - run.scenarios.keys()):
        verdict.stale.append(f"{scenario}: listed as an expected failure, but the suite did not run it")
    return verdict


def report(run: SuiteRun, verdict: Verdict) -> str:
    parts = [f"conformance run {run.name!r} (exit {run.returncode}); log: {run.save_log()}"]
    if verdict.unexpected:
        parts.append("UNEXPECTED FAILURES:\n" + "\n".join(f"  - {u}" for u in verdict.unexpected))
    if verdict.stale:
        parts.append(
            "STALE EXPECTED FAILURES (they pass now: remove them from the expected-failures file):\n"
            + "\n".join(f"  - {s}" for s in verdict.stale)
        )
    parts.append("scenarios:\n" + run.table())
    if verdict.warnings:
        parts.append(
            "warnings (the suite counts them as failures unless listed):\n"
            + "\n".join(f"  - {w}" for w in verdict.warnings)
        )
    return "\n\n".join(parts)
