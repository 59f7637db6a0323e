"""Accuracy evaluators for the search: proxy training and training-free scores, one interface."""

from evaluators.accuracy.base import AccuracyResult, Report, SpecEvaluator
from evaluators.accuracy.config import KINDS, ProxyConfig
from evaluators.accuracy.factory import accuracy_evaluator, proxy_data_config
from evaluators.accuracy.proxy import ProxyTrainEvaluator
from evaluators.accuracy.zero_cost import NaswotEvaluator, SynflowEvaluator, naswot_score, synflow_score
from evaluators.protocols import AccuracyEvaluator

__all__ = ["KINDS", "AccuracyEvaluator", "AccuracyResult", "NaswotEvaluator", "ProxyConfig",
           "ProxyTrainEvaluator", "Report", "SpecEvaluator", "SynflowEvaluator", "accuracy_evaluator",
           "naswot_score", "proxy_data_config", "synflow_score"]
