"""Generative worlds whose optimal language model is known exactly."""

from simlm.worlds.base import World, WorldBase
from simlm.worlds.contexts import ContextSet, enumerate_contexts
from simlm.worlds.hmm import HMM
from simlm.worlds.loglinear import LogLinearWorld
from simlm.worlds.memory import MemoryHMM

__all__ = ["World", "WorldBase", "HMM", "LogLinearWorld", "MemoryHMM", "ContextSet", "enumerate_contexts"]
from simlm.worlds.topic import ClassedHMM, block_zipf_hmm, confusion_groups_hmm, topic_syntax_hmm  # noqa: E402
__all__ += ["ClassedHMM", "block_zipf_hmm", "confusion_groups_hmm", "topic_syntax_hmm"]
