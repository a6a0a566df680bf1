"""Label Studio percent boxes ⇄ PDF points: known values, round trips, the four rotations."""

from __future__ import annotations

import io
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forebay.contrib.labelstudio.geometry import (
    PageGeometry,
    PdfBox,
    PercentBox,
    box_to_pdf,
    normalise_rotate,
    pages_from_pdf,
    pdf_to_box,
)

LETTER = PageGeometry(612, 792)

sizes = st.floats(min_value=50, max_value=5000, allow_nan=False)
offsets = st.floats(min_value=-500, max_value=500, allow_nan=False)
rotations = st.sampled_from([0, 90, 180, 270])
pages = st.builds(
    PageGeometry,
    width_pt=sizes,
    height_pt=sizes,
    rotate=rotations,
    x0_pt=offsets,
    y0_pt=offsets,
    box=st.sampled_from(["MediaBox", "CropBox"]),
)
percent = st.floats(min_value=0, max_value=100, allow_nan=False)
extent = st.floats(min_value=0.5, max_value=100, allow_nan=False)
boxes = st.builds(
    PercentBox,
    x=percent,
    y=percent,
    width=extent,
    height=extent,
    rotation=st.floats(min_value=0, max_value=359.9, allow_nan=False),
)


def close(a: float, b: float, tol: float = 1e-6) -> bool:
    return math.isclose(a, b, rel_tol=tol, abs_tol=tol)


def angle_close(a: float, b: float) -> bool:
    return min((a - b) % 360, (b - a) % 360) < 1e-6


def test_an_unrotated_box_on_an_unrotated_page() -> None:
    # The sample annotation: x=12.5 %, y=20 %, 25 % × 5 % of a Letter page.
    pdf = box_to_pdf(PercentBox(12.5, 20.0, 25.0, 5.0), LETTER)
    assert (pdf.x0, pdf.y0, pdf.x1, pdf.y1) == pytest.approx((76.5, 594.0, 229.5, 633.6))
    # Top-left as drawn is the highest y in PDF space.
    assert pdf.polygon[0] == pytest.approx((76.5, 633.6))


def test_the_box_offset_is_applied() -> None:
    page = PageGeometry(500, 700, x0_pt=10, y0_pt=20, box="CropBox")
    pdf = box_to_pdf(PercentBox(0, 0, 100, 100), page)
    assert (pdf.x0, pdf.y0, pdf.x1, pdf.y1) == pytest.approx((10, 20, 510, 720))


@pytest.mark.parametrize(
    ("rotate", "shown_top_left"),
    [(0, (0, 792)), (90, (0, 0)), (180, (612, 0)), (270, (612, 792))],
)
def test_the_shown_top_left_corner_for_each_page_rotation(
    rotate: int, shown_top_left: tuple[float, float]
) -> None:
    page = PageGeometry(612, 792, rotate=rotate)
    assert page.to_user(0, 0) == pytest.approx(shown_top_left)


@pytest.mark.parametrize("rotate", [0, 90, 180, 270])
def test_the_whole_shown_page_is_the_whole_page_box(rotate: int) -> None:
    page = PageGeometry(612, 792, rotate=rotate)
    pdf = box_to_pdf(PercentBox(0, 0, 100, 100), page)
    assert (pdf.x0, pdf.y0, pdf.x1, pdf.y1) == pytest.approx((0, 0, 612, 792))
    assert (page.shown_width_pt, page.shown_height_pt) == (
        (792, 612) if rotate in (90, 270) else (612, 792)
    )


def test_a_box_on_a_page_turned_90_degrees() -> None:
    # Landscape as shown (792 × 612). A box in the shown top-left quarter covers, in user
    # space, the bottom-left quarter of the portrait page box.
    page = PageGeometry(612, 792, rotate=90)
    pdf = box_to_pdf(PercentBox(0, 0, 50, 50), page)
    assert (pdf.x0, pdf.y0, pdf.x1, pdf.y1) == pytest.approx((0, 0, 306, 396))


def test_a_rotated_box_keeps_its_polygon() -> None:
    # 90° clockwise about its top-left corner: the box now hangs down-left of that corner.
    page = PageGeometry(100, 100)
    pdf = box_to_pdf(PercentBox(50, 10, 20, 10, rotation=90), page)
    tl, tr, br, bl = pdf.polygon
    assert tl == pytest.approx((50, 90))
    assert tr == pytest.approx((50, 70))  # 20 pt "along" the box now points down the page
    assert br == pytest.approx((40, 70))
    assert bl == pytest.approx((40, 90))


@settings(max_examples=300)
@given(box=boxes, page=pages)
def test_round_trip_box_to_points_and_back(box: PercentBox, page: PageGeometry) -> None:
    back = pdf_to_box(box_to_pdf(box, page), page)
    assert close(back.x, box.x) and close(back.y, box.y)
    assert close(back.width, box.width) and close(back.height, box.height)
    assert angle_close(back.rotation, box.rotation)


@settings(max_examples=300)
@given(page=pages, x=offsets, y=offsets)
def test_round_trip_points_to_shown_and_back(page: PageGeometry, x: float, y: float) -> None:
    shown = page.to_shown(x, y)
    assert page.to_user(*shown) == pytest.approx((x, y), abs=1e-6)


@settings(max_examples=300)
@given(box=boxes, page=pages)
def test_a_box_keeps_its_size_and_right_angles(box: PercentBox, page: PageGeometry) -> None:
    pdf = box_to_pdf(box, page)
    tl, tr, br, bl = pdf.polygon
    w = box.width / 100 * page.shown_width_pt
    h = box.height / 100 * page.shown_height_pt
    assert close(math.dist(tl, tr), w) and close(math.dist(tl, bl), h)
    assert close(math.dist(tr, br), h) and close(math.dist(bl, br), w)
    assert close(abs(_area(pdf)), w * h, tol=1e-5)


def _shown_turned(box: PercentBox, turn: int) -> PercentBox:
    """The same axis-aligned box on the page image turned clockwise by ``turn`` degrees."""
    x, y, w, h = box.x, box.y, box.width, box.height
    if turn == 90:
        return PercentBox(100 - y - h, x, h, w)
    if turn == 180:
        return PercentBox(100 - x - w, 100 - y - h, w, h)
    if turn == 270:
        return PercentBox(y, 100 - x - w, h, w)
    return box


@settings(max_examples=300)
@given(
    box=st.builds(PercentBox, x=percent, y=percent, width=extent, height=extent),
    page=pages,
    turn=rotations,
)
def test_each_page_rotation_finds_the_same_spot_on_the_paper(
    box: PercentBox, page: PageGeometry, turn: int
) -> None:
    # A box drawn on the unrotated page image, and the same box drawn on the image of the page
    # shown with /Rotate = turn, are the same rectangle of paper: the same bounds in points.
    upright = PageGeometry(page.width_pt, page.height_pt, 0, page.x0_pt, page.y0_pt)
    turned = PageGeometry(page.width_pt, page.height_pt, turn, page.x0_pt, page.y0_pt)
    expected = box_to_pdf(box, upright)
    found = box_to_pdf(_shown_turned(box, turn), turned)
    assert (found.x0, found.y0, found.x1, found.y1) == pytest.approx(
        (expected.x0, expected.y0, expected.x1, expected.y1), abs=1e-6
    )


@settings(max_examples=200)
@given(box=boxes, page=pages)
def test_the_polygon_is_clockwise_as_drawn(box: PercentBox, page: PageGeometry) -> None:
    # Shown with y down, TL→TR→BR→BL is clockwise; user space (y up) mirrors the page, so the
    # shoelace area there is negative for every page rotation.
    assert _area(box_to_pdf(box, page)) < 0


def test_normalise_rotate() -> None:
    assert [normalise_rotate(v) for v in (0, 90, -90, 450, 180.0, 720)] == [0, 90, 270, 90, 180, 0]
    for bad in (45, "90", None, True, 90.5):
        with pytest.raises(ValueError):
            normalise_rotate(bad)


def test_page_geometry_from_task_data() -> None:
    page = PageGeometry.from_mapping({"width": 595, "height": 842, "rotate": -90, "box": "CropBox"})
    assert (page.width_pt, page.height_pt, page.rotate, page.box) == (595, 842, 270, "CropBox")
    for bad in (
        {"width": 595},
        {"width": 0, "height": 1},
        {"width": 1, "height": 1, "box": "X"},
        3,
    ):
        with pytest.raises(ValueError):
            PageGeometry.from_mapping(bad)


def test_pages_from_a_pdf_record_the_box_and_rotation() -> None:
    from pypdf import PdfWriter
    from pypdf.generic import RectangleObject

    writer = PdfWriter()
    writer.add_blank_page(612, 792)
    second = writer.add_blank_page(595, 842)
    second.rotate(90)
    third = writer.add_blank_page(600, 800)
    third.cropbox = RectangleObject((50, 40, 550, 740))
    third.rotate(-90)
    buffer = io.BytesIO()
    writer.write(buffer)

    first, turned, cropped = pages_from_pdf(buffer.getvalue())
    assert (first.width_pt, first.height_pt, first.rotate, first.box) == (612, 792, 0, "MediaBox")
    assert (turned.width_pt, turned.height_pt, turned.rotate) == (595, 842, 90)
    assert (cropped.box, cropped.rotate) == ("CropBox", 270)
    assert (cropped.x0_pt, cropped.y0_pt, cropped.width_pt, cropped.height_pt) == (50, 40, 500, 700)
    assert {first.source, turned.source, cropped.source} == {"pdf"}


def _area(pdf: PdfBox) -> float:
    points = pdf.polygon
    return 0.5 * sum(
        a[0] * b[1] - b[0] * a[1] for a, b in zip(points, points[1:] + points[:1], strict=True)
    )
