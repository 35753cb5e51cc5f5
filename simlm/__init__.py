"""simlm: synthetic worlds with an exact optimal language model, and the theory of pretrained LMs
checked against them."""

from simlm import errors
from simlm.worlds import HMM, LogLinearWorld, MemoryHMM, World

__version__ = "0.1.0"
__all__ = ["errors", "HMM", "LogLinearWorld", "MemoryHMM", "World", "__version__"]
