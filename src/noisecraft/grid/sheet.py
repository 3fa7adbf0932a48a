"""The labelled sheet of a grid: each cell's images tiled, x values as column heads, y values as row heads, the
axis titles, and one block per z value stacked downward under its own title. `Layout` knows the sheet's size
before anything is drawn (the megapixel limit is checked on it). Torch-free but for the images it is handed."""
from __future__ import annotations

import math
from dataclasses import dataclass

PAD = 2  # pixels between images of a cell
GAP = 8  # pixels between cells
MIN_CELL = 160  # small images are scaled up (nearest) until a cell is about this wide, so labels fit
HEAD = 22  # pixels of a line of text


@dataclass(frozen=True)
class Layout:
    n: int  # images per cell
    image_shape: tuple[int, int, int]  # (C, H, W)
    nx: int
    ny: int
    nz: int
    row_label: int = 0  # characters of the longest y label (the row heads' width follows it)

    @property
    def cols(self) -> int:
        return math.ceil(math.sqrt(self.n))

    @property
    def rows(self) -> int:
        return math.ceil(self.n / self.cols)

    @property
    def scale(self) -> int:
        w = self.image_shape[2]
        return max(1, min(8, MIN_CELL // (self.cols * (w + PAD))))

    @property
    def cell_size(self) -> tuple[int, int]:
        _, h, w = self.image_shape
        s = self.scale
        return self.cols * (w * s + PAD) - PAD, self.rows * (h * s + PAD) - PAD

    @property
    def left(self) -> int:
        """Width of the row heads (y values) and the y title."""
        return max(2 * HEAD + 96, 8 * self.row_label + 24)

    @property
    def block_size(self) -> tuple[int, int]:
        """One z value's block: title lines, column heads, then ny rows of cells."""
        cw, ch = self.cell_size
        return self.left + self.nx * (cw + GAP), 3 * HEAD + self.ny * (ch + GAP)

    @property
    def size(self) -> tuple[int, int]:
        w, h = self.block_size
        return w + GAP, self.nz * h + GAP

    @property
    def megapixels(self) -> float:
        w, h = self.size
        return w * h / 1e6

    def cell_origin(self, z: int, y: int, x: int) -> tuple[int, int]:
        cw, ch = self.cell_size
        return self.left + x * (cw + GAP), z * self.block_size[1] + 3 * HEAD + y * (ch + GAP)


def cell_image(images, layout: Layout):
    """A cell's images (uint8 (n, C, H, W) tensor) tiled into one PIL image at the layout's scale."""
    from PIL import Image

    from noisecraft.viz import to_pil

    cw, ch = layout.cell_size
    _, h, w = layout.image_shape
    s = layout.scale
    tile = Image.new("RGB", (cw, ch), "white")
    for k, img in enumerate(images):
        r, c = divmod(k, layout.cols)
        pil = to_pil(img).convert("RGB").resize((w * s, h * s), Image.NEAREST)
        tile.paste(pil, (c * (w * s + PAD), r * (h * s + PAD)))
    return tile


def draw_sheet(tiles: dict[tuple[int, int, int], object], layout: Layout, titles: dict[str, str],
               labels: dict[str, list[str]]):
    """The labelled sheet: `tiles` maps (z, y, x) to a cell's PIL image (missing cells stay blank); `titles` and
    `labels` give each present axis ("x", "y", "z") its title (e.g. "steps") and its values' labels."""
    from PIL import Image, ImageDraw, ImageFont

    sheet = Image.new("RGB", layout.size, "white")
    draw, font = ImageDraw.Draw(sheet), ImageFont.load_default(size=14)
    cw, ch = layout.cell_size
    bw, bh = layout.block_size
    for z in range(layout.nz):
        top = z * bh
        head = f"{titles['z']} = {labels['z'][z]}" if "z" in titles else ""
        if "x" in titles:
            head = f"{head}    x: {titles['x']}" if head else f"x: {titles['x']}"
        draw.text((layout.left, top + 4), head, fill="black", font=font)
        if "y" in titles:
            draw.text((6, top + 4 + HEAD), f"y: {titles['y']}", fill="black", font=font)
        for x in range(layout.nx):
            text = labels["x"][x] if "x" in labels else ""
            draw.text((layout.cell_origin(z, 0, x)[0] + cw // 2, top + 2 * HEAD + 2), text, fill="black", font=font,
                      anchor="mt")
        for y in range(layout.ny):
            oy = layout.cell_origin(z, y, 0)[1]
            if "y" in labels:
                draw.text((layout.left - 8, oy + ch // 2), labels["y"][y], fill="black", font=font, anchor="rm")
            for x in range(layout.nx):
                if (z, y, x) in tiles:
                    sheet.paste(tiles[(z, y, x)], layout.cell_origin(z, y, x))
        if z:
            draw.line([(0, top - GAP // 2), (bw, top - GAP // 2)], fill=(200, 200, 200))
    return sheet
