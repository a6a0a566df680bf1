"""Label Studio boxes (percent of a page image) ⇄ PDF user-space points.

Label Studio stores a rectangle as ``x, y, width, height`` in percent of the page image, origin
at the image's top-left corner, y downwards, and ``rotation`` in degrees clockwise about the
box's top-left corner. ``item_index`` is the 0-based page when a task holds a list of page
images. The page image is the page *as a PDF viewer shows it*: the page box (MediaBox or
CropBox) turned clockwise by the page's ``/Rotate``.

PDF user space has its origin at the bottom-left, y upwards, in points (1/72 inch). A page box
``[llx, lly, urx, ury]`` of width ``W`` and height ``H`` is shown rotated by ``/Rotate``
(0, 90, 180 or 270, clockwise), so a shown page is ``W × H`` or ``H × W``.

The conversion, for a shown point ``(dx, dy)`` in points from the shown top-left corner::

    /Rotate   unrotated offset (ex, ey) from the box's top-left, y down
       0      (dx,       dy)
      90      (dy,       H - dx)
     180      (W - dx,   H - dy)
     270      (W - dy,   dx)

    x = llx + ex,  y = ury - ey

A rotated box keeps its shape: its four corners (top-left, top-right, bottom-right, bottom-left
as drawn) are converted one by one, and the axis-aligned bounds are derived from them.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeAlias

from forebay.errors import MissingExtra

__all__ = [
    "PageBox",
    "PageGeometry",
    "PdfBox",
    "PercentBox",
    "Point",
    "box_to_pdf",
    "normalise_rotate",
    "pages_from_pdf",
    "pdf_to_box",
    "shown_corners",
    "user_corners",
]

Point: TypeAlias = tuple[float, float]
PageBox: TypeAlias = Literal["MediaBox", "CropBox"]


def normalise_rotate(value: object) -> int:
    """A ``/Rotate`` value as 0, 90, 180 or 270 (PDFs may hold -90, 450, ...)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"/Rotate must be a multiple of 90, got {value!r}")
    degrees = int(value)
    if degrees != value or degrees % 90:
        raise ValueError(f"/Rotate must be a multiple of 90, got {value!r}")
    return degrees % 360


@dataclass(frozen=True, slots=True)
class PageGeometry:
    """One PDF page: its visible box in user space and how a viewer turns it.

    ``x0_pt, y0_pt`` is the box's lower-left corner (``llx, lly``), ``width_pt × height_pt`` its
    size before ``rotate``; ``box`` records which page box it is, ``source`` where it came from
    (``"task"`` data or the ``"pdf"`` itself).
    """

    width_pt: float
    height_pt: float
    rotate: int = 0
    x0_pt: float = 0.0
    y0_pt: float = 0.0
    box: PageBox = "MediaBox"
    source: str = "task"

    def __post_init__(self) -> None:
        if not (self.width_pt > 0 and self.height_pt > 0):
            raise ValueError("a page box must have a positive width and height")
        if not all(
            math.isfinite(v) for v in (self.width_pt, self.height_pt, self.x0_pt, self.y0_pt)
        ):
            raise ValueError("page geometry must be finite numbers")
        if self.rotate not in (0, 90, 180, 270):
            raise ValueError("rotate must be 0, 90, 180 or 270 (see normalise_rotate)")

    @property
    def shown_width_pt(self) -> float:
        return self.height_pt if self.rotate in (90, 270) else self.width_pt

    @property
    def shown_height_pt(self) -> float:
        return self.width_pt if self.rotate in (90, 270) else self.height_pt

    def to_user(self, dx: float, dy: float) -> Point:
        """A shown point (points from the shown top-left, y down) → user space."""
        w, h = self.width_pt, self.height_pt
        if self.rotate == 0:
            ex, ey = dx, dy
        elif self.rotate == 90:
            ex, ey = dy, h - dx
        elif self.rotate == 180:
            ex, ey = w - dx, h - dy
        else:
            ex, ey = w - dy, dx
        return self.x0_pt + ex, self.y0_pt + h - ey

    def to_shown(self, x: float, y: float) -> Point:
        """User space → a shown point (the inverse of :meth:`to_user`)."""
        w, h = self.width_pt, self.height_pt
        ex, ey = x - self.x0_pt, self.y0_pt + h - y
        if self.rotate == 0:
            return ex, ey
        if self.rotate == 90:
            return h - ey, ex
        if self.rotate == 180:
            return w - ex, h - ey
        return ey, w - ex

    @classmethod
    def from_mapping(cls, data: object, *, source: str = "task") -> PageGeometry:
        """Read ``{"width": pt, "height": pt, "rotate": 0, "x0": 0, "y0": 0, "box": "CropBox"}``.

        ``rotate``, ``x0``, ``y0`` and ``box`` are optional. Raises ValueError when it is not one.
        """
        if not isinstance(data, dict):
            raise ValueError("page geometry must be an object with width and height")
        box = data.get("box", "MediaBox")
        if box not in ("MediaBox", "CropBox"):
            raise ValueError(f"page box must be MediaBox or CropBox, got {box!r}")
        try:
            return cls(
                width_pt=float(data["width"]),
                height_pt=float(data["height"]),
                rotate=normalise_rotate(data.get("rotate", 0)),
                x0_pt=float(data.get("x0", 0.0)),
                y0_pt=float(data.get("y0", 0.0)),
                box=box,
                source=source,
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"page geometry needs numeric width and height: {exc}") from None


@dataclass(frozen=True, slots=True)
class PercentBox:
    """A Label Studio rectangle: percent of the shown page, rotation clockwise in degrees."""

    x: float
    y: float
    width: float
    height: float
    rotation: float = 0.0

    def corners(self, page: PageGeometry) -> tuple[Point, Point, Point, Point]:
        """The box's corners as shown, in points from the shown top-left (y down).

        Order: top-left, top-right, bottom-right, bottom-left of the box as drawn. The
        rotation turns the box about its top-left corner, in the page's true proportions.
        """
        return shown_corners(self.x, self.y, self.width, self.height, self.rotation, page)


@dataclass(frozen=True, slots=True)
class PdfBox:
    """A box in PDF user-space points: its polygon and its axis-aligned bounds."""

    polygon: tuple[Point, Point, Point, Point]
    """Top-left, top-right, bottom-right, bottom-left of the box as drawn, in user space."""

    @property
    def x0(self) -> float:
        return min(p[0] for p in self.polygon)

    @property
    def y0(self) -> float:
        return min(p[1] for p in self.polygon)

    @property
    def x1(self) -> float:
        return max(p[0] for p in self.polygon)

    @property
    def y1(self) -> float:
        return max(p[1] for p in self.polygon)


def shown_corners(
    x: float, y: float, width: float, height: float, rotation: float, page: PageGeometry
) -> tuple[Point, Point, Point, Point]:
    """:meth:`PercentBox.corners` of the box ``x, y, width, height, rotation`` (percent and
    degrees), without building one."""
    if page.rotate in (90, 270):
        sw, sh = page.height_pt, page.width_pt
    else:
        sw, sh = page.width_pt, page.height_pt
    left, top = x / 100 * sw, y / 100 * sh
    w, h = width / 100 * sw, height / 100 * sh
    theta = math.radians(rotation)
    cos, sin = math.cos(theta), math.sin(theta)
    # With y pointing down, this matrix turns vectors clockwise on screen.
    along_x, along_y = w * cos, w * sin
    down_x, down_y = -h * sin, h * cos
    right_x, right_y = left + along_x, top + along_y
    return (
        (left, top),
        (right_x, right_y),
        (right_x + down_x, right_y + down_y),
        (left + down_x, top + down_y),
    )


def user_corners(
    x: float, y: float, width: float, height: float, rotation: float, page: PageGeometry
) -> tuple[Point, Point, Point, Point]:
    """The polygon of :func:`box_to_pdf` (top-left, top-right, bottom-right, bottom-left as
    drawn, in user space) of the box ``x, y, width, height, rotation``, without building a
    :class:`PercentBox` or a :class:`PdfBox` (the per-region path of the records)."""
    (a, b), (c, d), (e, f), (g, h) = shown_corners(x, y, width, height, rotation, page)
    to_user = page.to_user
    return to_user(a, b), to_user(c, d), to_user(e, f), to_user(g, h)


def box_to_pdf(box: PercentBox, page: PageGeometry) -> PdfBox:
    """Convert a Label Studio box on ``page`` to PDF user-space points."""
    return PdfBox(user_corners(box.x, box.y, box.width, box.height, box.rotation, page))


def pdf_to_box(pdf: PdfBox, page: PageGeometry) -> PercentBox:
    """The Label Studio box whose conversion is ``pdf`` (the inverse of :func:`box_to_pdf`)."""
    tl, tr, _, bl = (page.to_shown(*p) for p in pdf.polygon)
    sw, sh = page.shown_width_pt, page.shown_height_pt
    w = math.hypot(tr[0] - tl[0], tr[1] - tl[1])
    h = math.hypot(bl[0] - tl[0], bl[1] - tl[1])
    rotation = math.degrees(math.atan2(tr[1] - tl[1], tr[0] - tl[0])) % 360 if w else 0.0
    return PercentBox(
        x=tl[0] / sw * 100,
        y=tl[1] / sh * 100,
        width=w / sw * 100,
        height=h / sh * 100,
        rotation=rotation,
    )


def pages_from_pdf(pdf: bytes | Path | str) -> list[PageGeometry]:
    """Each page's geometry read from a PDF (its bytes or a local path) with pypdf.

    The visible box is the CropBox when the page defines one that differs from its MediaBox
    (that is what viewers and renderers show), else the MediaBox; ``box`` records which.
    """
    try:
        from pypdf import PdfReader
    except ImportError:
        raise MissingExtra("pdf", "pypdf") from None
    stream = io.BytesIO(pdf) if isinstance(pdf, bytes) else Path(pdf).open("rb")  # noqa: SIM115
    with stream:
        reader = PdfReader(stream)
        pages = []
        for page in reader.pages:
            media = _box_values(page.mediabox)
            crop = _box_values(page.cropbox)
            chosen, name = (crop, "CropBox") if crop != media else (media, "MediaBox")
            llx, lly, urx, ury = chosen
            pages.append(
                PageGeometry(
                    width_pt=urx - llx,
                    height_pt=ury - lly,
                    rotate=normalise_rotate(page.rotation),
                    x0_pt=llx,
                    y0_pt=lly,
                    box="CropBox" if name == "CropBox" else "MediaBox",
                    source="pdf",
                )
            )
        return pages


def _box_values(box: Sequence[object]) -> tuple[float, float, float, float]:
    """A PDF rectangle normalised so that (llx, lly) is its lower-left corner."""
    a, b, c, d = (float(v) for v in box)  # type: ignore[arg-type]
    return min(a, c), min(b, d), max(a, c), max(b, d)
