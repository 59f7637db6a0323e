"""A weight-sharing supernet over a search space (Once-for-All / BigNAS): one network holding every
architecture of the space, sub-networks scored in about a second after batch-norm re-estimation."""

from evaluators.supernet.network import SuperNet
from evaluators.supernet.rundir import describe_space, load_supernet, save_supernet
from evaluators.supernet.scoring import SubnetScore, reestimate_batchnorm, score_subnet

__all__ = ["SubnetScore", "SuperNet", "describe_space", "load_supernet", "reestimate_batchnorm",
           "save_supernet", "score_subnet"]
