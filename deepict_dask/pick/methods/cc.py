"""``cc``: connected components, DeePiCt's clustering (one cluster per touching foreground region)."""

from __future__ import annotations

from typing import Literal

import numpy as np

from deepict_dask.pick.label import BlockContext, ClusterMethod
from deepict_dask.pick.methods import MethodParams, register_method


class CCParams(MethodParams):
    """Connected components take no parameters beyond the pick's connectivity."""

    name: Literal["cc"] = "cc"


def label_block(fg: np.ndarray, prob: np.ndarray, votes: np.ndarray | None, ctx: BlockContext):
    """Connected components of one block (``cc3d``); keys are the block offset + local label."""
    import cc3d

    labels = cc3d.connected_components(np.ascontiguousarray(fg[ctx.core]), connectivity=ctx.spec.connectivity)
    return labels.astype(np.uint32, copy=False), None


register_method(ClusterMethod("cc", label_block, merge_touching=True, params=CCParams))
