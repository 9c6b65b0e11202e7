"""The HTML report as a browser draws it: a headless Chromium screenshot, decoded and looked at.

Skips when no Chromium is installed (Debian: `apt-get install chromium`). The PNG is
decoded here with zlib alone, so the test needs no imaging package.
"""
import shutil
import struct
import subprocess
import zlib

import pytest
import torch
from torch import nn

from pycomp.retention.explore import explore

BROWSER = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
FRONT_ORANGE = (0xE6, 0x55, 0x0D)  # report.py's .front fill: the Pareto points and their stairs


def read_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGB(A) bytes) of an 8-bit, non-interlaced RGB or RGBA PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
            bpp = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw, stride = zlib.decompress(idat), width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return width, height, [bytes(r[i] for i in range(len(r)) if i % bpp < 3) for r in rows]


def pixels(rows: list[bytes]) -> list[tuple[int, int, int]]:
    return [tuple(r[i:i + 3]) for r in rows for i in range(0, len(r), 3)]


def test_read_png_undoes_every_filter():
    width, bpp = 3, 3
    scan = [bytes([9, 8, 7, 6, 5, 4, 3, 2, 1]), bytes([1, 2, 3, 4, 5, 6, 7, 8, 9])]
    for kind in range(5):
        # Encode the second row with filter `kind` (first row unfiltered) by the PNG definitions.
        prev, line, out = scan[0], scan[1], bytearray()
        for i in range(len(line)):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            pred = [0, a, b, (a + b) // 2, a if pa <= pb and pa <= pc else b if pb <= pc else c][kind]
            out.append((line[i] - pred) & 255)
        raw = b"\x00" + scan[0] + bytes([kind]) + bytes(out)
        chunk = lambda k, body: struct.pack(">I", len(body)) + k + body + struct.pack(">I", zlib.crc32(k + body))
        png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, 2, 8, 2, 0, 0, 0))
               + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
        assert read_png(png) == (width, 2, scan), kind


def _tiny_front():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 48), nn.ReLU(), nn.Linear(48, 4)).eval()
    x = torch.randn(128, 16)
    with torch.no_grad():
        y = model(x).argmax(-1)
    y[::10] = (y[::10] + 1) % 4
    return explore(model, [(x[:64], y[:64]), (x[64:], y[64:])], techniques=("int8", "int4"), cache=False,
                   progress=False, latency_repeats=2)


@pytest.mark.skipif(BROWSER is None, reason="no headless Chromium on this machine (apt-get install chromium)")
def test_report_screenshot_shows_the_charts(tmp_path):
    page, shot = tmp_path / "report.html", tmp_path / "shot.png"
    _tiny_front().to_html(page)
    # Half scale keeps the PNG small enough to decode in pure Python in about a second.
    subprocess.run([BROWSER, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
                    "--force-device-scale-factor=0.5", f"--screenshot={shot}", "--window-size=1000,1800",
                    page.as_uri()], check=True, timeout=120, capture_output=True)
    width, height, rows = read_png(shot.read_bytes())
    assert (width, height) == (500, 900)
    px = pixels(rows)
    ink = sum(1 for p in px if min(p) < 200) / len(px)
    assert ink > 0.03, f"the page looks blank: {ink:.1%} of pixels are not near-white"
    assert len(set(px)) > 100  # text, tinted cells and plot marks, not one or two flat colours
    orange = sum(1 for r, g, b in px if abs(r - FRONT_ORANGE[0]) < 40 and abs(g - FRONT_ORANGE[1]) < 40
                 and abs(b - FRONT_ORANGE[2]) < 40)
    assert orange >= 5, "no Pareto-front mark drawn: the scatter plot did not render"
