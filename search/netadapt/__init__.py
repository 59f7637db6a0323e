"""NetAdapt refinement (MobileNetV3 paper, section 4.2): shrink a seed network step by step,
with inherited weights, until it meets a latency target.

- :mod:`~search.netadapt.config`: its options, checked when built.
- :mod:`~search.netadapt.proposals`: which narrower networks to try (pure spec logic).
- :mod:`~search.netadapt.inherit`: start each from its parent's most important channels.
- :mod:`~search.netadapt.history`: what each iteration tried and kept, as values.
- :mod:`~search.netadapt.loop`: the iteration, checkpoint and resume.
"""

from search.netadapt.config import METRICS, NetAdaptConfig
from search.netadapt.history import CandidateRecord, IterationRecord
from search.netadapt.inherit import inherit_weights, kept_channels
from search.netadapt.loop import NetAdaptResult, netadapt
from search.netadapt.proposals import KINDS, BottleneckGroup, Proposal, bottleneck_groups, propose

__all__ = [
    "KINDS", "METRICS", "BottleneckGroup", "CandidateRecord", "IterationRecord", "NetAdaptConfig",
    "NetAdaptResult", "Proposal", "bottleneck_groups", "inherit_weights", "kept_channels", "netadapt",
    "propose",
]
