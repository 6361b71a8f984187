"""Load management: pure allocation of current to bays within the site's limits.

``model`` (config), ``allocate`` (the pure function), ``controller`` (time:
ramps, anti-flapping, overcurrent, audit), ``rules`` (owner rules) and
``safeshare`` (the lease proof used by ``check-config``), ``external`` (limits from an
energy manager), ``lease`` and ``coordinate`` (several stations sharing one site limit).
"""

from controller.load.allocate import (
    Allocation,
    AllocationInput,
    BayInput,
    Decision,
    GridInput,
    Mode,
    Reason,
    allocate,
)
from controller.load.controller import AuditRecord, BayHealth, LoadController, StepInput, StepResult
from controller.load.model import (
    BayCurrentCapRule,
    BayLoadConfig,
    CircuitConfig,
    LoadConfig,
    RuleConfig,
    SiteConfig,
    SitePowerCapRule,
)
from controller.load.rules import RuleConflict, active_rules, resolve_rules
from controller.load.safeshare import check_safe_shares
from controller.load.topology import Topology

__all__ = [
    "Allocation",
    "AllocationInput",
    "AuditRecord",
    "BayCurrentCapRule",
    "BayHealth",
    "BayInput",
    "BayLoadConfig",
    "CircuitConfig",
    "Decision",
    "GridInput",
    "LoadConfig",
    "LoadController",
    "Mode",
    "Reason",
    "RuleConfig",
    "RuleConflict",
    "SiteConfig",
    "SitePowerCapRule",
    "StepInput",
    "StepResult",
    "Topology",
    "active_rules",
    "allocate",
    "check_safe_shares",
    "resolve_rules",
]
