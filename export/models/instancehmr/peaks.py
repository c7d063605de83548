"""Which center-map peaks an export reads otherwise than the reference, with their margins (numpy only).

The people of a scene model are read at center-map peaks (``hmr_trt.mesh.scene_peak_cells``: the best 5x5
local maxima of each image). A peak is a discrete decision: a cell is taken when its score is at least its
neighbours' (the 5x5 max-pool test) and ranks among the best. Two FP32 runtimes can send a score within
round-off of either comparison to either side; ``peak_flips`` counts the peaks read elsewhere and, for each
cell that changed, how far the reference's score was from the comparison that decided it.
"""

from __future__ import annotations

from typing import Any, Dict

import numpy as np

from hmr_trt.mesh import SCENE_PEAKS, scene_peak_cells
from hmr_trt.runtime.scene import max_pool_5x5


def neighbour_max(maps: np.ndarray) -> np.ndarray:
    """(B, M, M) -> the maximum over each cell's 5x5 neighbourhood without the cell itself (-inf padding)."""
    return max_pool_5x5(maps, without_centre=True)


def peak_flips(own: np.ndarray, taken: np.ndarray, k: int = SCENE_PEAKS) -> Dict[str, Any]:
    """``own``: the reference's center maps (B, 1, M, M); ``taken``: the export's. Returns the peaks read,
    the peaks the export reads elsewhere (``peak_flips``) and the largest margin of a changed cell: the
    reference's |score - neighbours' max| when the local-maximum test flipped, else its distance to the
    boundary of the best k (the k-th peak kept, or the best one left out)."""
    a = np.asarray(own, np.float32)[:, 0]
    t = np.asarray(taken, np.float32)[:, 0]
    b = len(a)
    mine, theirs = scene_peak_cells(own, k), scene_peak_cells(taken, k)
    nb_a, nb_t = neighbour_max(a).reshape(b, -1), neighbour_max(t).reshape(b, -1)
    flat_a, flat_t = a.reshape(b, -1), t.reshape(b, -1)
    flips, margins = 0, []
    for i in range(b):
        changed = set(mine[i].tolist()) ^ set(theirs[i].tolist())
        flips += len(set(mine[i].tolist()) - set(theirs[i].tolist()))
        local = np.sort(flat_a[i][flat_a[i] >= nb_a[i]])[::-1]  # the reference's local maxima, best first
        for c in changed:
            if (flat_a[i, c] >= nb_a[i, c]) != (flat_t[i, c] >= nb_t[i, c]):
                margins.append(abs(float(flat_a[i, c]) - float(nb_a[i, c])))
            elif c in mine[i]:  # kept by the reference, left out by the export: vs the best peak left out
                margins.append(float(flat_a[i, c]) - float(local[k]) if len(local) > k else 0.0)
            else:  # left out by the reference: vs its k-th peak
                margins.append(float(local[k - 1]) - float(flat_a[i, c]) if len(local) >= k else 0.0)
    return {"peaks": int(b * k), "peak_flips": int(flips),
            "largest_flip_margin": float(max(margins, default=0.0))}
