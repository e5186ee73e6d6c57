"""`jean-memory doctor`: a black-box checker of any deployed MCP connector.

It judges a server only by what it answers over HTTP, in the order Claude meets it, and imports
nothing else from `jean_memory`. One module per job: `claude` (what Claude sends),
`discovery` (URL and header arithmetic), `fetcher` (timed requests), `context` (what checks
learn), `checks` (one module per area, one function per check), `runner`, `report` and `cli`.
"""

from jean_memory.doctor.cli import add_arguments, main, run_doctor, run_from_args
from jean_memory.doctor.results import CheckResult, Status
from jean_memory.doctor.runner import diagnose, exit_code

__all__ = ["CheckResult", "Status", "add_arguments", "diagnose", "exit_code", "main", "run_doctor", "run_from_args"]
