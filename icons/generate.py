"""Draws Changeover's app icon (two arrows swapping places on a rounded
square) and writes the PNG/ICO/ICNS set Tauri needs. Run with Pillow:
`python3 icons/generate.py`. The outputs are committed; this is how to remake them."""
from pathlib import Path
from PIL import Image, ImageDraw

HERE = Path(__file__).parent
S = 1024


def draw() -> Image.Image:
    img = Image.new("RGBA", (S, S), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    # background: teal to indigo, vertical
    bg = Image.new("RGBA", (S, S))
    top, bottom = (20, 184, 166), (67, 56, 202)
    for y in range(S):
        t = y / (S - 1)
        c = tuple(int(a + (b - a) * t) for a, b in zip(top, bottom)) + (255,)
        ImageDraw.Draw(bg).line([(0, y), (S, y)], fill=c)
    mask = Image.new("L", (S, S), 0)
    ImageDraw.Draw(mask).rounded_rectangle([40, 40, S - 40, S - 40], radius=220, fill=255)
    img.paste(bg, (0, 0), mask)
    white = (255, 255, 255, 255)
    # upper arrow, pointing right
    d.rounded_rectangle([230, 340, 700, 420], radius=40, fill=white)
    d.polygon([(680, 250), (820, 380), (680, 510)], fill=white)
    # lower arrow, pointing left
    d.rounded_rectangle([324, 604, 794, 684], radius=40, fill=(255, 255, 255, 215))
    d.polygon([(344, 514), (204, 644), (344, 774)], fill=(255, 255, 255, 215))
    return img


def main() -> None:
    big = draw()
    big.save(HERE / "icon.png")
    for size, name in [(32, "32x32.png"), (128, "128x128.png"), (256, "128x128@2x.png")]:
        big.resize((size, size), Image.LANCZOS).save(HERE / name)
    big.save(HERE / "icon.ico", sizes=[(16, 16), (32, 32), (48, 48), (64, 64), (128, 128), (256, 256)])
    big.save(HERE / "icon.icns")


if __name__ == "__main__":
    main()
