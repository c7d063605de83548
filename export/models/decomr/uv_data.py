"""DecoMR's UV data: the boundary-free UV layout, its vertex resampler and the reference UV map.

DecoMR ships three files derived from SMPL (licence: never shipped with hmr-trt); users who hold them
pass their ``data/`` folder (``--decomr-data DIR``):
- ``uv_sampler/paras_h0128_w0128_BF.npz``: ``texcoords`` (NVT, 2) in [0, 1] (u = column, v = row),
  ``vt2v`` (NVT,) the mesh vertex of each texture vertex, ``vt_count`` (V,) texture vertices per
  mesh vertex (7405 texture vertices, 6890 vertices for SMPL);
- ``BF_ref_map_64.npy``: the reference mesh drawn into the 64x64 UV grid, (1, 64, 64, 3).

Without that folder, ``decomr_data(None)`` makes hmr-trt's own layout for the synthetic body model
(``hmr_trt.export.synthetic_smpl``), deterministically, so tests and the demo run without SMPL:
front-facing vertices go to the left half of the UV square and back-facing ones to the right half
(orthographic x-y projection); vertices near the silhouette get a texture vertex in each half (a
seam, so the vertex averaging is exercised). numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np

from hmr_trt.errors import CheckpointError

SAMPLER_FILE = "paras_h{res:04d}_w{res:04d}_BF.npz"
REF_MAP_FILE = "BF_ref_map_{res}.npy"


@dataclass(frozen=True)
class DecomrUVData:
    texcoords: np.ndarray  # (NVT, 2) float32 in [0, 1]: u (column), v (row)
    vt2v: np.ndarray  # (NVT,) int64 in [0, V)
    vt_count: np.ndarray  # (V,) float32 >= 1: texture vertices per mesh vertex
    ref_map: np.ndarray  # (R, R, 3) float32: the reference mesh in the warp_res UV grid
    source: str  # "synthetic" or the folder the files came from

    @property
    def num_vertices(self) -> int:
        return int(self.vt_count.shape[0])

    @property
    def num_texcoords(self) -> int:
        return int(self.texcoords.shape[0])

    def vertex_table(self) -> np.ndarray:
        """(V, K) texture-vertex ids of each vertex, padded with NVT (an all-zero row): the static gather
        that replaces the official ``index_add_`` over ``vt2v``."""
        order = np.argsort(self.vt2v, kind="stable")
        counts = np.bincount(self.vt2v, minlength=self.num_vertices)
        table = np.full((self.num_vertices, int(counts.max())), self.num_texcoords, dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        for k in range(int(counts.max())):
            has = counts > k
            table[has, k] = order[starts[has] + k]
        return table


def check_uv_data(data: DecomrUVData, warp_res: int, num_vertices: Optional[int] = None) -> DecomrUVData:
    """Shapes and consistency, every problem in one CheckpointError naming the source."""
    p = []
    tc, vt2v, cnt, ref = data.texcoords, data.vt2v, data.vt_count, data.ref_map
    if tc.ndim != 2 or tc.shape[1] != 2:
        p.append(f"texcoords has shape {tc.shape}, expected (NVT, 2)")
    elif not np.isfinite(tc).all() or tc.min() < 0 or tc.max() > 1:
        p.append("texcoords must be finite and within [0, 1]")
    if vt2v.ndim != 1 or vt2v.shape[0] != tc.shape[0]:
        p.append(f"vt2v has shape {vt2v.shape}, expected ({tc.shape[0]},) like texcoords")
    if cnt.ndim != 1:
        p.append(f"vt_count has shape {cnt.shape}, expected (V,)")
    elif vt2v.ndim == 1 and vt2v.size:
        if vt2v.min() < 0 or vt2v.max() >= cnt.shape[0]:
            p.append(f"vt2v holds vertex ids {vt2v.min()}..{vt2v.max()}, expected 0..{cnt.shape[0] - 1}")
        elif not np.array_equal(np.bincount(vt2v, minlength=cnt.shape[0]), cnt.astype(np.int64)):
            p.append("vt_count does not count vt2v's texture vertices per vertex (files from different layouts?)")
    if num_vertices is not None and cnt.ndim == 1 and cnt.shape[0] != num_vertices:
        p.append(f"the layout has {cnt.shape[0]} vertices, the body model {num_vertices}")
    if ref.shape != (warp_res, warp_res, 3):
        p.append(f"reference map has shape {ref.shape}, expected (1, {warp_res}, {warp_res}, 3)")
    elif not np.isfinite(ref).all():
        p.append("reference map holds NaN or inf")
    if p:
        raise CheckpointError(f"decomr UV data from {data.source}: " + "; ".join(p)
                              + "; pass the data/ folder DecoMR distributes (uv_sampler/ and BF_ref_map_64.npy)")
    return data


def _find(directory: Path, name: str) -> Path:
    for candidate in (directory / name, directory / "uv_sampler" / name, directory / "data" / name,
                      directory / "data" / "uv_sampler" / name):
        if candidate.is_file():
            return candidate
    raise CheckpointError(f"decomr UV data: {name} not found in {directory} (looked in ., uv_sampler/, data/, "
                          "data/uv_sampler/); pass the data/ folder DecoMR distributes")


def uv_data_from_dir(directory: Union[str, Path], uv_res: int = 128, warp_res: int = 64) -> DecomrUVData:
    """The user's DecoMR files (as the official repository distributes them), checked."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"decomr UV data: {directory} is not a directory; pass DecoMR's data/ folder")
    sampler_path = _find(directory, SAMPLER_FILE.format(res=uv_res))
    ref_path = _find(directory, REF_MAP_FILE.format(res=warp_res))
    try:
        with np.load(sampler_path, allow_pickle=False) as para:
            missing = [k for k in ("texcoords", "vt2v", "vt_count") if k not in para.files]
            if missing:
                raise CheckpointError(f"decomr UV data: {sampler_path} lacks {', '.join(missing)} "
                                      f"(has {', '.join(para.files)})")
            texcoords, vt2v, vt_count = para["texcoords"], para["vt2v"], para["vt_count"]
        ref_map = np.load(ref_path, allow_pickle=False)
    except CheckpointError:
        raise
    except Exception as exc:  # truncated or non-numpy file
        raise CheckpointError(f"decomr UV data: cannot read {sampler_path} / {ref_path}: "
                              f"{type(exc).__name__}: {exc}") from exc
    if ref_map.ndim == 4 and ref_map.shape[0] == 1:
        ref_map = ref_map[0]
    data = DecomrUVData(texcoords.astype(np.float32), vt2v.astype(np.int64), vt_count.astype(np.float32),
                        ref_map.astype(np.float32), str(directory))
    return check_uv_data(data, warp_res)


def _vertex_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    tri = verts[faces]  # (F, 3, 3)
    fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    vn = np.zeros_like(verts)
    for k in range(3):
        np.add.at(vn, faces[:, k], fn)
    return vn / np.maximum(np.linalg.norm(vn, axis=1, keepdims=True), 1e-12)


def synthetic_uv_data(smpl: Optional[dict] = None, warp_res: int = 64, seam: float = 0.25) -> DecomrUVData:
    """hmr-trt's own UV layout for the synthetic body model (deterministic; no SMPL involved)."""
    if smpl is None:
        from hmr_trt.export.synthetic_smpl import make_synthetic_smpl

        smpl = make_synthetic_smpl()
    verts = np.asarray(smpl["v_template"], dtype=np.float64)  # (V, 3), y up, facing +z
    faces = np.asarray(smpl["f"], dtype=np.int64)
    nz = _vertex_normals(verts, faces)[:, 2]
    lo, hi = verts[:, :2].min(0), verts[:, :2].max(0)
    side = (hi - lo).max() * 1.02
    xy = (verts[:, :2] - (lo + hi) / 2) / side + 0.5  # (V, 2) in (0, 1), aspect kept
    u = xy[:, 0] * 0.5  # front half: u in [0, 0.5)
    v = 1.0 - xy[:, 1]  # row 0 at the top of the body
    front = np.nonzero(nz >= -seam)[0]
    back = np.nonzero(nz < seam)[0]  # both sets hold the silhouette band: seam vertices
    vt2v = np.concatenate([front, back])
    texcoords = np.stack([np.concatenate([u[front], 1.0 - u[back]]),
                          np.concatenate([v[front], v[back]])], axis=1)  # back half mirrored
    vt_count = np.bincount(vt2v, minlength=verts.shape[0]).astype(np.float32)
    # reference map: each UV cell takes the rest position of the nearest texture vertex
    cells = np.stack(np.meshgrid(np.arange(warp_res), np.arange(warp_res), indexing="xy"), -1).reshape(-1, 2)
    cells = cells / (warp_res - 1)  # (R*R, 2) as (u, v)
    d2 = ((cells[:, None, :] - texcoords[None, :, :]) ** 2).sum(-1)  # (R*R, NVT)
    ref_map = verts[vt2v[d2.argmin(1)]].reshape(warp_res, warp_res, 3)
    data = DecomrUVData(texcoords.astype(np.float32), vt2v.astype(np.int64), vt_count,
                        ref_map.astype(np.float32), "synthetic")
    return check_uv_data(data, warp_res, num_vertices=verts.shape[0])


def decomr_data(directory: Optional[Union[str, Path]] = None, uv_res: int = 128, warp_res: int = 64) -> DecomrUVData:
    """``--decomr-data DIR``: the user's DecoMR files, or (None) hmr-trt's synthetic layout."""
    if directory is None:
        return synthetic_uv_data(warp_res=warp_res)
    return uv_data_from_dir(directory, uv_res=uv_res, warp_res=warp_res)
