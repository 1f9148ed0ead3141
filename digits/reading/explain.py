"""What the model saw: an image with each digit's box and reading, beside the 28x28 inputs.

`digits.predict --explain DIR` writes one such picture per image, so that a wrong reading shows
its cause at a glance: a box around the wrong thing, two digits taken as one, an input that no
longer looks like the digit.

Example:
    >>> picture = explanation(reader.read([find_digits_in_file("2026.jpg")])[0], "2026.jpg")
    >>> picture.save("2026.explain.png")
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from digits.reading import ImageReading, percent

SURE = (22, 140, 60)
UNSURE = (214, 110, 0)
INPUT_SCALE = 4  # each 28x28 input drawn at 112x112
MARGIN = 12


def explanation(reading: ImageReading, title: str):
    """A PIL image: the title and reading on top, the photo with boxes left, the inputs right."""
    from PIL import Image, ImageDraw

    found = reading.found
    photo = Image.fromarray((np.clip(found.gray, 0, 1) * 255).astype(np.uint8)).convert("RGB")
    draw = ImageDraw.Draw(photo)
    line = max(2, max(photo.size) // 200)
    label_font = _font(max(12, min(28, photo.height // 14)))
    placed: list[tuple[float, float, float, float]] = []
    for digit in reading.digits:
        x, y, w, h = found.working_box(digit.box)
        color = UNSURE if digit.uncertain else SURE
        draw.rectangle([x - line, y - line, x + w + line, y + h + line], outline=color, width=line)
        label = f"{digit.digit}{'?' if digit.uncertain else ''} {percent(digit.probability)}"
        top = y - line - _size(label_font) - 6
        below = min(photo.height - _size(label_font) - 4, y + h + line + 2)
        tx = max(0, min(photo.width - draw.textlength(label, font=label_font) - 4, x - line))
        ty = top if top >= 0 else below
        bbox = draw.textbbox((tx, ty), label, font=label_font)
        if any(_overlaps(bbox, other) for other in placed):  # the neighbour's label: go below
            ty = below
            bbox = draw.textbbox((tx, ty), label, font=label_font)
        placed.append(bbox)
        draw.rectangle([bbox[0] - 2, bbox[1] - 2, bbox[2] + 2, bbox[3] + 2], fill=color)
        draw.text((tx, ty), label, fill=(255, 255, 255), font=label_font)

    tile = 28 * INPUT_SCALE
    caption_font = _font(16)
    per_column = max(1, (photo.height + 2 * MARGIN) // (tile + 28))
    columns = max(1, -(-len(reading.digits) // per_column))
    panel_width = columns * (tile + MARGIN) + MARGIN
    title_font = _font(18)
    header = 2 * _size(title_font) + 3 * 6
    rows = -(-len(reading.digits) // columns) or 1
    height = max(photo.height + 2 * MARGIN, rows * (tile + 28) + MARGIN) + header
    sheet = Image.new("RGB", (photo.width + 2 * MARGIN + panel_width, height), (250, 250, 250))
    canvas = ImageDraw.Draw(sheet)
    canvas.text((MARGIN, 6), title, fill=(20, 20, 20), font=title_font)
    canvas.text((MARGIN, 12 + _size(title_font)), f"read: {reading.summary()}",
                fill=UNSURE if reading.uncertain else SURE, font=title_font)
    sheet.paste(photo, (MARGIN, header + MARGIN))
    left = photo.width + 2 * MARGIN
    for k, digit in enumerate(reading.digits):
        row, column = divmod(k, columns)
        x, y = left + column * (tile + MARGIN), header + MARGIN + row * (tile + 28)
        pixels = (np.clip(digit.input, 0, 1) * 255).astype(np.uint8)
        sheet.paste(Image.fromarray(pixels).resize((tile, tile), Image.NEAREST).convert("RGB"), (x, y))
        canvas.rectangle([x - 1, y - 1, x + tile, y + tile],
                         outline=UNSURE if digit.uncertain else SURE, width=2)
        canvas.text((x, y + tile + 4), f"{digit.digit}  {percent(digit.probability)}"
                    f"{'  unsure' if digit.uncertain else ''}", fill=(20, 20, 20), font=caption_font)
    return sheet


def explanation_path(directory: str | Path, image: str, taken: set[str]) -> Path:
    """`DIR/<image name>.explain.png`, numbered when two images share a name."""
    stem = Path(image).name or "image"
    name, n = f"{stem}.explain.png", 1
    while name in taken:
        n += 1
        name = f"{stem}.{n}.explain.png"
    taken.add(name)
    return Path(directory) / name


def _overlaps(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _size(font) -> int:
    return int(getattr(font, "size", 11))


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()
