"""Simulation: a seeded call centre that emits the PBX's webhooks (``pbx-analytics simulate``).

``config`` is one scenario; ``engine`` the discrete-event model (its records
in ``model``) that emits the webhooks of ``ingest.events.spec``; ``truth`` the
analytics expected from the engine's own records; ``outputs`` the access log
(``backfill.accesslog``'s format) and the truth file; ``sender`` the live
HTTP sender; ``command`` the CLI command. docs/simulator.md describes the model.
"""

from ingest.simulation.config import SimConfig, SimConfigError
from ingest.simulation.engine import simulate
from ingest.simulation.model import SimEvent, Simulation
from ingest.simulation.outputs import write_access_log, write_truth
from ingest.simulation.sender import send_to_target

__all__ = [
    "SimConfig",
    "SimConfigError",
    "SimEvent",
    "Simulation",
    "send_to_target",
    "simulate",
    "write_access_log",
    "write_truth",
]
