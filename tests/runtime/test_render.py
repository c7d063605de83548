"""CPU mesh overlay on synthetic meshes, and the atomic mp4 writer."""

from __future__ import annotations

import numpy as np
import pytest

from hmr_trt.errors import InputSpecError
from hmr_trt.runtime.render import (
    VideoWriterAtomic,
    face_shades,
    project_weak_perspective,
    render_meshes,
)

cv2 = pytest.importorskip("cv2")

GREY = 90
BOX = (100.0, 100.0, 300.0, 300.0)  # the square crop box: 200 px, centre (200, 200)


def _cube(half: float = 0.25, z: float = 0.0):
    """A cube of side 2 * half metres centred at (0, 0, z): 8 vertices, 12 faces."""
    v = np.array([[x, y, z + d] for x in (-half, half) for y in (-half, half) for d in (-half, half)])
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    faces = np.array([f for a, b, c, d in quads for f in ((a, b, c), (a, c, d))])
    return v, faces


def _quad(x0: float, x1: float, y0: float, y1: float, z: float, tilt: float = 0.0):
    """A rectangle at depth z (tilted about the vertical axis by ``tilt`` radians: depth varies with x)."""
    xs = np.array([x0, x1, x1, x0])
    v = np.stack([xs, [y0, y0, y1, y1], z + np.tan(tilt) * (xs - (x0 + x1) / 2)], axis=1)
    return v, np.array([[0, 1, 2], [0, 2, 3]])


def _frame() -> np.ndarray:
    return np.full((400, 500, 3), GREY, dtype=np.uint8)


def test_projection_follows_the_crop_convention() -> None:
    v = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 5.0], [-1.0, -1.0, 0.0], [0.5, 0.0, 0.0]])
    px = project_weak_perspective(v, (1.0, 0.0, 0.0), BOX)
    np.testing.assert_allclose(px, [[200, 200], [300, 300], [100, 100], [250, 200]])
    px = project_weak_perspective(v[:1], (0.5, 0.4, -0.2), BOX)  # x_n = 0.5 * 0.4 = 0.2, y_n = -0.1
    np.testing.assert_allclose(px, [[220, 190]])


def test_mesh_changes_pixels_inside_its_projection_only() -> None:
    v, f = _cube(0.25)  # x_n, y_n in [-0.25, 0.25] -> frame [175, 225]
    frame = _frame()
    out = render_meshes(frame, [(v, f, (1.0, 0.0, 0.0), BOX)])
    assert out.shape == frame.shape and out.dtype == np.uint8 and out is not frame
    assert (frame == GREY).all(), "the input frame is not modified"
    changed = (out != GREY).any(axis=2)
    assert changed[178:223, 178:223].all()
    outside = np.ones_like(changed)
    outside[172:229, 172:229] = False
    assert not changed[outside].any()
    # alpha 0.6: a blend of the mesh colour and the frame, not the plain mesh colour
    assert 0 < np.abs(out[200, 200].astype(int) - GREY).max()


def test_camera_translation_moves_the_mesh() -> None:
    v, f = _cube(0.1)
    out = render_meshes(_frame(), [(v, f, (1.0, 0.5, 0.0), BOX)])  # x_n centre 0.5 -> u = 250
    changed = (out != GREY).any(axis=2)
    assert changed[200, 250] and not changed[200, 200]


def test_near_faces_cover_far_ones() -> None:
    """A far quad facing the camera behind a near tilted one: the near one's shade shows where they overlap."""
    far_v, far_f = _quad(-0.5, 0.5, -0.5, 0.5, z=2.0)
    near_v, near_f = _quad(-0.2, 0.2, -0.2, 0.2, z=-1.0, tilt=1.2)
    v = np.concatenate([near_v, far_v])  # near faces listed first: the order must come from depth
    f = np.concatenate([near_f, far_f + len(near_v)])
    colour = (200, 200, 200)
    out = render_meshes(_frame(), [(v, f, (1.0, 0.0, 0.0), BOX)], alpha=1.0, colour=colour)
    shades = face_shades(v, f)
    near_grey, far_grey = np.round(shades[0] * 200), np.round(shades[-1] * 200)
    assert abs(near_grey - far_grey) > 20
    assert abs(int(out[200, 200, 0]) - near_grey) <= 1  # centre: the near quad
    assert abs(int(out[200, 160, 0]) - far_grey) <= 1  # outside the near quad: the far one


def test_meshes_off_frame_and_empty_lists() -> None:
    frame = _frame()
    assert (render_meshes(frame, []) == frame).all()
    v, f = _cube(0.25)
    off = render_meshes(frame, [(v, f, (1.0, 0.0, 0.0), (2000.0, 2000.0, 2200.0, 2200.0))])
    assert (off == frame).all()


def test_bad_meshes_are_refused() -> None:
    v, f = _cube()
    with pytest.raises(InputSpecError, match="face indices"):
        render_meshes(_frame(), [(v, f + 10, (1.0, 0.0, 0.0), BOX)])
    with pytest.raises(InputSpecError, match=r"\(V, 3\)"):
        render_meshes(_frame(), [(v[:, :2], f, (1.0, 0.0, 0.0), BOX)])
    with pytest.raises(InputSpecError, match="frame"):
        render_meshes(np.zeros((10, 10), np.uint8), [(v, f, (1.0, 0.0, 0.0), BOX)])


def _read_frames(path) -> int:
    cap = cv2.VideoCapture(str(path))
    count = 0
    while cap.read()[0]:
        count += 1
    cap.release()
    return count


def test_video_writer_renames_on_close(tmp_path) -> None:
    path = tmp_path / "out" / "render.mp4"
    with VideoWriterAtomic(path, 25.0, (64, 48)) as writer:
        for i in range(5):
            writer.write(np.full((48, 64, 3), 40 * i, dtype=np.uint8))
        assert not path.exists(), "nothing at the final name before close"
    assert path.is_file() and path.stat().st_size > 0
    assert _read_frames(path) == 5
    assert [p.name for p in path.parent.iterdir()] == ["render.mp4"]


def test_video_writer_leaves_nothing_after_an_error(tmp_path) -> None:
    path = tmp_path / "render.mp4"
    with pytest.raises(RuntimeError, match="boom"):
        with VideoWriterAtomic(path, 25.0, (64, 48)) as writer:
            writer.write(np.zeros((48, 64, 3), dtype=np.uint8))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_video_writer_refuses_frames_of_another_size(tmp_path) -> None:
    path = tmp_path / "render.mp4"
    with pytest.raises(InputSpecError, match="64x48"):
        with VideoWriterAtomic(path, 25.0, (64, 48)) as writer:
            writer.write(np.zeros((48, 65, 3), dtype=np.uint8))
    assert list(tmp_path.iterdir()) == []
    writer = VideoWriterAtomic(path, 25.0, (64, 48))
    writer.abort()
    writer.abort()
    assert list(tmp_path.iterdir()) == []


# --- the video that explains itself: caption, track ids, meshes fitted to boxes ------------------------

from hmr_trt.runtime.render import (  # noqa: E402
    PLACEMENT_BOX,
    PLACEMENT_CAMERA,
    caption_lines,
    fit_cam_to_box,
    render_tracks,
)


def test_fit_cam_to_box_fills_the_box_with_the_mesh() -> None:
    v, _ = _quad(-0.3, 0.5, -1.2, 0.6, 2.0)  # 0.8 m wide, 1.8 m tall, off-centre
    box = (280.0, 120.0, 360.0, 260.0)  # 80 x 140 px: the height binds (mesh aspect 0.44 < box aspect 0.57)
    crop = (250.0, 110.0, 390.0, 250.0)
    px = project_weak_perspective(v, fit_cam_to_box(v, box, crop), crop)
    lo, hi = px.min(axis=0), px.max(axis=0)
    np.testing.assert_allclose([lo[1], hi[1]], [120, 260], atol=1e-3)  # fills the height
    np.testing.assert_allclose((lo[0] + hi[0]) / 2, 320, atol=1e-3)  # centred
    assert hi[0] - lo[0] <= 80 + 1e-3
    wide = (100.0, 100.0, 300.0, 130.0)  # a lying person: the width binds
    px = project_weak_perspective(v, fit_cam_to_box(v, wide, crop), crop)
    assert px[:, 1].max() - px[:, 1].min() <= 30 + 1e-3


class _Frames:
    def __init__(self) -> None:
        self.frames = []

    def write(self, image: np.ndarray) -> None:
        self.frames.append(image)


def test_render_tracks_draws_caption_ids_and_meshes_in_their_boxes() -> None:
    v, f = _quad(-0.2, 0.2, -0.9, 0.9, 2.0)  # a person-shaped panel, 0.4 x 1.8 m
    track = {"frames": np.array([0, 1]), "boxes": np.array([[200, 150, 260, 330]] * 2, dtype=np.float32),
             "crop_boxes": np.array([[122, 132, 338, 348]] * 2, dtype=np.float32),
             "vertices": np.stack([v, v]), "cam": np.array([[0.5, 5.0, 5.0]] * 2)}  # a camera that misses
    caption = caption_lines("coseg", "seeded defaults (untrained)", "synthetic (not SMPL)", "onnxruntime CPU",
                            "fp32", "SSDLite", PLACEMENT_BOX)
    assert "fitted to the detection boxes" in caption[-1] and "seeded" in caption[0]
    frames = [(i, _frame()) for i in range(3)]
    for placement in (PLACEMENT_BOX, PLACEMENT_CAMERA):
        out = _Frames()
        render_tracks(iter(frames), out, {7: track}, f, caption, placement)
        assert len(out.frames) == 3
        first = out.frames[0].astype(int)
        changed = np.abs(first - GREY).sum(axis=2) > 0
        assert changed[:40, :200].any(), "caption drawn at the top"
        in_box = changed[160:320, 205:255].mean()
        if placement == PLACEMENT_BOX:
            assert in_box > 0.5, "mesh fitted into the person's box"
        else:
            assert in_box < 0.05, "mesh where its (wild) camera puts it, not in the box"
        assert changed[130:150, 200:240].any(), "track id just above the box"
        assert (np.abs(out.frames[2].astype(int) - GREY).sum(axis=2)[100:, :] == 0).all(), "no people in frame 2"
    with pytest.raises(InputSpecError, match="placement"):
        render_tracks(iter(frames), _Frames(), {}, f, caption, "nowhere")


def test_labels_of_people_close_together_do_not_overlap_and_stay_in_the_frame() -> None:
    from hmr_trt.runtime.render import place_labels

    texts = ["#12", "#49", "#7", "#103", "#5"]
    boxes = [(400, 200, 430, 280), (405, 198, 436, 282), (410, 205, 440, 285),  # three walkers side by side
             (772, 100, 800, 180),  # at the right edge
             (20, 30, 50, 110)]  # at the top, under the caption
    corners = place_labels(texts, boxes, (800, 600), top=40)
    from hmr_trt.runtime.render import LABEL_SCALE, _text_size

    rects = []
    for text, (x, y) in zip(texts, corners):
        w, h = _text_size(text, LABEL_SCALE)
        rect = (x - 3, y - 3, x - 3 + w, y - 3 + h)
        assert 0 <= rect[0] and rect[2] <= 800 and 40 <= rect[1] and rect[3] <= 600, (text, rect)
        rects.append(rect)
    for i in range(len(rects)):
        for j in range(i + 1, len(rects)):
            a, b = rects[i], rects[j]
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (texts[i], texts[j])
    assert rects[3][3] == 99 and rects[3][2] == 800  # room above: just above its box, pulled in from the edge


def test_caption_is_compact_and_says_the_placement_once() -> None:
    caption = caption_lines("coseg", "seeded defaults (untrained)", "SYNTHETIC, NOT SMPL (3624 vertices)",
                            "onnxruntime CPU", "fp32", "SSDLite", PLACEMENT_CAMERA)
    assert len(caption) == 2 and "predicted camera" in caption[1]
    image = np.zeros((576, 768, 3), np.uint8)
    from hmr_trt.runtime.render import draw_caption

    bottom = draw_caption(image, caption)
    assert bottom < 0.08 * 576  # the band, at most 8% of the sample video's height
    assert image[bottom + 2:].max() == 0 and image[:bottom].max() > 0
    assert image[:, -3:].max() == 0  # no line runs past the right edge
    narrow = np.zeros((240, 320, 3), np.uint8)  # a small video: the lines wrap at their separators
    bottom = draw_caption(narrow, caption)
    assert narrow[:, -3:].max() == 0 and narrow[:bottom].max() > 0 and bottom < 120
