"""The SE attention options of every claim that trains an SE-ResNet and reads its attention.

SE reduction 4 with at least 4 hidden units (min_hidden = 4): the default reduction r = 16 leaves 1-2
hidden units on the 16- and 32-channel stages of a width-16 network, and one dead ReLU unit then makes
a block's gate the same for every image, which neither a correlation of the gates nor a step
size read from them should mistake for a finding. One constant, so the claims that share it
(cross-layer-correlation, steps-follow-stiffness) study the same network.
"""

from __future__ import annotations

from types import MappingProxyType

SE_OPTIONS = MappingProxyType({"reduction": 4, "min_hidden": 4})  # read-only: spread into each run's options

__all__ = ["SE_OPTIONS"]
