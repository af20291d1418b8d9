"""Simulation: a seeded call centre that emits the PBX's webhooks (``pbx-analytics simulate``).

``config`` is one scenario; ``engine`` the discrete-event model (its records
in ``model``) that emits the webhooks of ``ingest.events.spec``; ``truth`` the
analytics expected from the engine's own records; ``outputs`` the access log
(``backfill.accesslog``'s format) and the truth file; ``sender`` the live
HTTP sender (real time, concurrent, jittered); ``command`` the CLI command (events
already due go through the import path with their own times, the rest live). docs/simulator.md describes the model.
"""

from ingest.simulation.config import SimConfig, SimConfigError
from ingest.simulation.engine import simulate
from ingest.simulation.model import SimEvent, Simulation
from ingest.simulation.outputs import write_access_log, write_truth
from ingest.simulation.sender import LiveReport, plan_live, send_live, send_now, send_planned

__all__ = [
    "LiveReport",
    "SimConfig",
    "SimConfigError",
    "SimEvent",
    "Simulation",
    "plan_live",
    "send_live",
    "send_now",
    "send_planned",
    "simulate",
    "write_access_log",
    "write_truth",
]
