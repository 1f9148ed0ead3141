"""`python -m digits.predict`: recognise the digits in your own images.

Example:
    python -m digits.predict --model logs/cnn/version_0/model.keras seven.png three.jpg
"""

from __future__ import annotations

import json

from digits import cli


def build_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(
        prog="digits-predict",
        description="Predict the digit in each image (PNG, JPEG, BMP, ...; any size or mode). "
                    "Images are prepared as MNIST was: grayscale, inverted if dark-on-light, "
                    "cropped to the ink, scaled into 20x20 and centred by mass on 28x28.",
    )
    parser.add_argument("--model", required=True, metavar="PATH", help="a .keras model file")
    parser.add_argument("--json", action="store_true",
                        help="print JSON with the top-3 digits and probabilities per image")
    parser.add_argument("images", nargs="+", metavar="IMAGE")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Console entry point: exit code 0 ok, 2 bad input."""
    return cli.run_main(run, argv)


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import numpy as np

    from digits.images import load_digit_image

    # Every image is read and checked before the model is loaded or anything is printed.
    batch = np.stack([load_digit_image(path) for path in args.images])[..., None]
    from digits.models import load_model

    model = load_model(args.model)
    probabilities = np.asarray(model.predict(batch, verbose=0), dtype=np.float64)
    rows = []
    for path, p in zip(args.images, probabilities, strict=True):
        top = np.argsort(p)[::-1][:3]
        rows.append({"image": path, "digit": int(top[0]), "probability": float(p[top[0]]),
                     "top3": [{"digit": int(k), "probability": float(p[k])} for k in top]})
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            print(f"{row['image']}: {row['digit']} ({row['probability']:.1%})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
