"""Thin Keras callbacks: each calls a function it is given and writes flat keys into `logs`."""

from callbacks.evaluation import EvaluationCallback
from callbacks.gem import GeMPowerLogger
from callbacks.history import HistoryLogger

__all__ = ["EvaluationCallback", "GeMPowerLogger", "HistoryLogger"]
