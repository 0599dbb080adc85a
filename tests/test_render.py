"""The headless vertex renderer of Figs. 6 and 8: image size, where a vertex lands, occlusion, empty background."""

import numpy as np

from lgseg.report.render import BACKGROUND, OBLIQUE, TOP, View, render
from lgseg.scannet.labels import scannet200, scannet200_palette

RED, BLUE = (255, 0, 0), (0, 0, 255)


def test_image_has_the_asked_size_and_corners_land_where_computed_by_hand():
    coord = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    image = render(coord, np.array([RED, BLUE]), TOP, width=101, height=61, point_size=0.0, margin=0.0)
    assert image.shape == (61, 101, 3) and image.dtype == np.uint8
    # the 1 m square fits the 60-pixel height: 60 px/m, centred on column 50; (0, 0) is bottom left, (1, 1) top right
    assert tuple(image[60, 20]) == RED and tuple(image[0, 80]) == BLUE
    others = np.ones((61, 101), bool)
    others[60, 20] = others[0, 80] = False
    assert np.all(image[others] == BACKGROUND)  # nothing but background where there is no geometry


def test_the_palette_colour_of_a_class_shows_at_its_vertex():
    palette = np.array(scannet200_palette(), np.uint8)
    chair = scannet200().class_names.index("chair")
    assert tuple(palette[chair]) == (188, 189, 34)  # ScanNet200's benchmark colour of chair (id 2)
    coord = np.array([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [2.0, 2.0, 0.0]])
    labels = np.array([0, chair, 0])
    image = render(coord, palette[labels], TOP, width=41, height=41, point_size=0.0, margin=0.0)
    assert tuple(image[40, 40]) == tuple(palette[chair])  # the vertex at (2, 0): bottom right


def test_the_vertex_nearest_the_viewer_wins_a_pixel():
    coord = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])  # the first two share x, y
    image = render(coord, np.array([RED, BLUE, RED]), TOP, width=11, height=11, point_size=0.0, margin=0.0)
    assert tuple(image[10, 0]) == BLUE  # seen from above, the higher vertex
    side = View("side", 0.0, 0.0)  # from -y at the horizon: the first two are one above the other, both seen
    image = render(coord[:2], np.array([RED, BLUE]), side, width=11, height=11, point_size=0.0, margin=0.0)
    assert tuple(image[10, 5]) == RED and tuple(image[0, 5]) == BLUE


def test_point_size_fills_the_gaps_between_vertices_of_a_surface():
    x, y = np.meshgrid(np.arange(0, 1.0001, 0.05), np.arange(0, 1.0001, 0.05))
    floor = np.c_[x.ravel(), y.ravel(), np.zeros(x.size)]
    colors = np.tile(np.array([RED], np.uint8), (len(floor), 1))
    sparse = render(floor, colors, OBLIQUE, width=200, height=200, point_size=0.0)
    filled = render(floor, colors, OBLIQUE, width=200, height=200, point_size=0.05)
    covered = lambda im: int(np.any(im != BACKGROUND, axis=2).sum())  # noqa: E731
    assert covered(sparse) == len(floor)  # one pixel per vertex
    assert covered(filled) > 8 * covered(sparse)


def test_an_empty_scene_is_background():
    image = render(np.zeros((0, 3)), np.zeros((0, 3), np.uint8), TOP, width=8, height=5, point_size=0.05)
    assert image.shape == (5, 8, 3) and np.all(image == BACKGROUND)


def test_figure_colours_are_the_palette_and_one_per_instance():
    from lgseg.report.qualitative import UNLABELLED, instance_colors, semantic_colors

    palette = scannet200_palette()
    np.testing.assert_array_equal(semantic_colors(np.array([2, -1, 0])), [palette[2], UNLABELLED, palette[0]])
    colors = instance_colors(np.array([7, 3, -1, 7, 12, 3]))
    assert tuple(colors[2]) == UNLABELLED
    np.testing.assert_array_equal(colors[0], colors[3])  # one instance, one colour
    assert len({tuple(c) for c in colors[[0, 1, 4]]}) == 3  # three instances, three colours


def test_oblique_views_leave_out_the_near_walls_and_everything_leaves_out_the_ceiling():
    from lgseg.report.qualitative import cut_away, visible_vertices

    # a 4 x 4 m room: vertices on each wall's face, one in the middle of the floor, one on the ceiling at 2.5 m
    coord = np.array([[0.0, 2, 1], [4.0, 2, 1], [2, 0.0, 1], [2, 4.0, 1], [2, 2, 0.0], [2, 2, 2.5]])
    assert visible_vertices(coord, 1.8).tolist() == [0, 1, 2, 3, 4]
    towards = OBLIQUE.rotation().T @ np.array([0.0, 0.0, 1.0])  # where the viewer is, in the room's axes
    near = {0 if towards[0] < 0 else 1, 2 if towards[1] < 0 else 3}
    assert set(cut_away(coord, OBLIQUE, 0.3).tolist()) == {0, 1, 2, 3, 4, 5} - near


def test_figures_show_the_first_scan_of_the_first_two_val_rooms_unless_scenes_are_named():
    import pytest

    from lgseg.config import SCHEMA_PATH, validate_config
    from lgseg.errors import ConfigError
    from lgseg.runs import figure_scenes

    val = ["scene0217_00", "scene0019_01", "scene0019_00", "scene0300_00"]
    assert figure_scenes(validate_config({}, SCHEMA_PATH), val) == ["scene0019_00", "scene0217_00"]
    assert figure_scenes(validate_config({}, SCHEMA_PATH), []) == []
    named = validate_config({"figures": {"qualitative": {"scenes": ["scene0300_00"]}}}, SCHEMA_PATH)
    assert figure_scenes(named, val) == ["scene0300_00"]
    with pytest.raises(ConfigError, match="figures.qualitative.scenes"):
        figure_scenes(named, ["scene0019_00"])
