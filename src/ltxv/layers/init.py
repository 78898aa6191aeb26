"""Parameter initialisers that cost nothing on the meta device, where every loader builds its model."""

from __future__ import annotations

import torch
from torch import nn


def normal_parameter(*shape: int, std: float) -> nn.Parameter:
    """N(0, std^2) values, or only the shape on the meta device: a random op there imports ~500 torch modules
    and then torch._dynamo (~1.5 s of every CLI start on a laptop CPU) for values the loader replaces."""
    t = torch.empty(shape)
    return nn.Parameter(t if t.is_meta else t.normal_(0.0, std))
