import numpy as np
import pytest

from pipeline.vision.geometry import Letterbox, angles_from_matrix, letterbox_image, rotation_matrix


@pytest.mark.parametrize(("w", "h", "canvas"), [(320, 240, 320), (1280, 720, 256), (480, 640, 320), (100, 100, 64)])
def test_letterbox_point_maps_back_to_source_pixel(w, h, canvas):
    box = Letterbox.fit(w, h, canvas)
    rng = np.random.default_rng(0)
    src = rng.uniform([0, 0], [w, h], size=(50, 2))
    np.testing.assert_allclose(box.to_source(box.to_canvas(src)), src, atol=1e-9)
    # the scaled image fits and is centred, one axis touching the canvas edges
    iw, ih = box.inner_size
    assert iw <= canvas and ih <= canvas and canvas in (iw, ih)
    assert abs(box.pad_x * 2 + iw - canvas) <= 1 and abs(box.pad_y * 2 + ih - canvas) <= 1


def test_letterbox_image_preserves_aspect_and_marks_map_back():
    import cv2

    img = np.zeros((240, 400, 3), np.uint8)
    cv2.circle(img, (300, 60), 30, (255, 255, 255), -1)  # a round spot, off centre
    box = Letterbox.fit(400, 240, 224)
    out = letterbox_image(img, box)
    ys, xs = np.nonzero(out[..., 0] > 127)
    # still round after resizing (a squash to 224x224 would make it 1.67x taller than wide)
    assert abs((xs.ptp() + 1) / (ys.ptp() + 1) - 1) < 0.1
    centre_src = box.to_source(np.array([xs.mean(), ys.mean()]))
    np.testing.assert_allclose(centre_src, [300, 60], atol=1.0)
    # padding is black, above and below
    assert out[: box.pad_y].max() == 0 and out[box.pad_y + box.inner_size[1] :].max() == 0


def test_normalized_to_source_is_isotropic():
    box = Letterbox.fit(640, 360, 256)
    # a unit square in source pixels, with z on the x scale
    src = np.array([[100.0, 100.0], [110.0, 100.0], [100.0, 110.0]])
    cv = box.to_canvas(src) / [box.canvas_w, box.canvas_h]
    pts = np.c_[cv, [0.0, 0.0, 10.0 * box.scale / box.canvas_w]]
    back = box.normalized_to_source(pts)
    np.testing.assert_allclose(back[:, :2], src, atol=1e-6)
    np.testing.assert_allclose(back[2, 2], 10.0, atol=0.1)


@pytest.mark.parametrize("ypr", [(0, 0, 0), (30, 0, 0), (0, -20, 0), (0, 0, 15), (-25, 12, -8), (40, -30, 20)])
def test_rotation_round_trip(ypr):
    np.testing.assert_allclose(angles_from_matrix(rotation_matrix(*ypr)), ypr, atol=1e-9)
