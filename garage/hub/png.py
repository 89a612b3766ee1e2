"""A small line chart as PNG bytes, with zlib only (matplotlib is not a dependency).

White canvas, light grid, axes, one polyline per series, and the axis ranges written
with a 3x5 pixel digit font so the picture can be read without the card's table.
"""

from __future__ import annotations

import struct
import zlib

_FONT = {  # 3x5 glyphs, one row string per pixel row
    "0": ("111", "101", "101", "101", "111"), "1": ("010", "110", "010", "010", "111"),
    "2": ("111", "001", "111", "100", "111"), "3": ("111", "001", "111", "001", "111"),
    "4": ("101", "101", "111", "001", "001"), "5": ("111", "100", "111", "001", "111"),
    "6": ("111", "100", "111", "101", "111"), "7": ("111", "001", "010", "010", "010"),
    "8": ("111", "101", "111", "101", "111"), "9": ("111", "101", "111", "001", "111"),
    ".": ("000", "000", "000", "000", "010"), "-": ("000", "000", "111", "000", "000"),
    "e": ("000", "111", "111", "100", "111"), " ": ("000",) * 5,
}
WHITE, GRID, AXIS, TEXT = (255, 255, 255), (232, 232, 236), (90, 90, 100), (40, 40, 48)


class _Canvas:
    def __init__(self, width: int, height: int):
        self.width, self.height = width, height
        self.pixels = bytearray(bytes(WHITE) * (width * height))

    def dot(self, x: int, y: int, colour, size: int = 1) -> None:
        for dx in range(size):
            for dy in range(size):
                px, py = x + dx, y + dy
                if 0 <= px < self.width and 0 <= py < self.height:
                    i = 3 * (py * self.width + px)
                    self.pixels[i:i + 3] = bytes(colour)

    def line(self, x0: int, y0: int, x1: int, y1: int, colour, size: int = 1) -> None:
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
        err = dx + dy
        while True:  # Bresenham
            self.dot(x0, y0, colour, size)
            if x0 == x1 and y0 == y1:
                return
            e2 = 2 * err
            if e2 >= dy:
                err += dy
                x0 += sx
            if e2 <= dx:
                err += dx
                y0 += sy

    def text(self, x: int, y: int, text: str, colour=TEXT, scale: int = 2) -> None:
        for char in text:
            glyph = _FONT.get(char, _FONT[" "])
            for row, bits in enumerate(glyph):
                for col, bit in enumerate(bits):
                    if bit == "1":
                        self.dot(x + col * scale, y + row * scale, colour, scale)
            x += 4 * scale

    def png(self) -> bytes:
        raw = b"".join(b"\x00" + bytes(self.pixels[3 * y * self.width:3 * (y + 1) * self.width])
                       for y in range(self.height))

        def chunk(kind: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)
        return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + \
            chunk(b"IEND", b"")


def _label(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000 or abs(value) < 0.01:
        return f"{value:.1e}".replace("+", "")
    return f"{value:.3g}"


def line_chart(series: list[tuple[list[tuple[float, float]], tuple[int, int, int]]], width: int = 640,
               height: int = 320) -> bytes:
    """PNG bytes of the (x, y) point lists, each drawn in its colour, on shared axes."""
    canvas = _Canvas(width, height)
    left, right, top, bottom = 70, width - 16, 14, height - 34
    points = [p for pts, _ in series for p in pts]
    if not points:
        return canvas.png()
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x_lo, x_hi = min(xs), max(xs)
    y_lo, y_hi = min(0.0, min(ys)), max(ys)
    x_hi = x_hi if x_hi > x_lo else x_lo + 1
    y_hi = y_hi if y_hi > y_lo else y_lo + 1

    def to_px(x: float, y: float) -> tuple[int, int]:
        return (round(left + (x - x_lo) / (x_hi - x_lo) * (right - left)),
                round(bottom - (y - y_lo) / (y_hi - y_lo) * (bottom - top)))

    for i in range(5):
        gy = round(top + i * (bottom - top) / 4)
        canvas.line(left, gy, right, gy, GRID)
        canvas.text(6, gy - 5, _label(y_hi - i * (y_hi - y_lo) / 4))
    canvas.line(left, top, left, bottom, AXIS)
    canvas.line(left, bottom, right, bottom, AXIS)
    canvas.text(left - 4, bottom + 10, _label(x_lo))
    canvas.text(right - 4 * 2 * len(_label(x_hi)), bottom + 10, _label(x_hi))
    for pts, colour in series:
        pixels = [to_px(x, y) for x, y in sorted(pts)]
        for (x0, y0), (x1, y1) in zip(pixels, pixels[1:]):
            canvas.line(x0, y0, x1, y1, colour, size=2)
        if len(pixels) == 1:
            canvas.dot(pixels[0][0] - 2, pixels[0][1] - 2, colour, size=5)
    return canvas.png()
