"""The web application `digits.serve` runs: the drawing page and the JSON API (FastAPI).

`create_app(reader)` serves any `digits.reading.Reader`. Every answer to `POST /api/predict` is
`ImageReading.to_dict`, the entry `digits.predict --json` prints: one source of truth for
reading an image, whether it comes from a file or a request.

Example:
    >>> from fastapi.testclient import TestClient
    >>> app = create_app(Reader.load("model.keras"))
    >>> TestClient(app).post("/api/predict", content=open("2026.png", "rb").read()).json()["text"]
    '2026'
"""

# No `from __future__ import annotations`: FastAPI reads the handlers' annotations at run time.

import asyncio
import base64
import io
import json
import threading
from importlib import resources
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException

PAGE = "serve_page.html"
# `digits.serve --workers N` hands each worker process its settings in this variable (JSON).
ENVIRONMENT = "DIGITS_SERVE_SETTINGS"
# Requests read at once: each holds a working image of at most 512x512 floats (1 MB) and the
# request's bytes; more wait in line instead of piling up memory.
MAX_CONCURRENT = 8


class BodyLimit:
    """ASGI middleware: a request body above `max_bytes` is answered 413 without being read
    further (at once by its Content-Length when it states one, else as it streams in).

    The body is read here, up to the limit, and handed on whole: the application never sees
    a request it could not afford to read.
    """

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                too_large = int(declared) > self.max_bytes
            except ValueError:
                return await _send_json(send, 400, {"error": "bad Content-Length header"})
            if too_large:
                return await _send_json(send, 413, self._message())
        chunks, seen = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left: nobody to answer
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.max_bytes:
                return await _send_json(send, 413, self._message())
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body, delivered = b"".join(chunks), False

        async def replay():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as servers do

        await self.app(scope, replay, send)

    def _message(self) -> dict:
        return {"error": f"request body larger than {self.max_bytes // (1024 * 1024)} MB"}


async def _send_json(send, status: int, body: dict) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


# `--corrections DIR` keeps at most this many digits; a correction's body is at most this big.
MAX_CORRECTIONS = 10_000
MAX_CORRECTION_BYTES = 64 * 1024
# A digit's crop (the part of the image it was found in, for a person to check a correction
# against) is at most this many pixels on its long side: answered at CROP_SIDE, accepted up to
# MAX_CROP_SIDE. Crops are kept apart from the class folders, in CROPS (a hidden folder, which
# reading a folder as a dataset passes over).
CROP_SIDE = 96
MAX_CROP_SIDE = 256
CROPS = ".crops"


def create_app(reader, max_request_bytes: int = 16 * 1024 * 1024,
               corrections: str | Path | None = None, max_corrections: int = MAX_CORRECTIONS):
    """The FastAPI application serving `reader` (a `digits.reading.Reader`).

    With `corrections` (a folder), `POST /api/corrections` saves a digit a person labelled:
    `{"label": 7, "input": "data:image/png;base64,...", "crop": "data:image/png;base64,..."}`
    (the 28x28 input and the crop `/api/predict?inputs=1` answered with; the crop is optional)
    becomes `<folder>/7/<content hash>.png`, a class folder `digits.train --dataset` reads back
    bit-identical, and `<folder>/.crops/7/<content hash>.png`.
    """
    from digits.errors import ImageError

    app = FastAPI(title="digits", docs_url=None, redoc_url=None, openapi_url=None)
    model_info = describe_model(reader.runtime)
    page = resources.files("digits.deploy").joinpath(PAGE).read_text(encoding="utf-8")
    # LiteRT's interpreter and Keras' predict_on_batch are not made for concurrent calls:
    # requests are found in parallel, classified one at a time (0.2-2 ms each).
    classify_lock = threading.Lock()
    slots = asyncio.Semaphore(MAX_CONCURRENT)

    def read(data: bytes, name: str, with_inputs: bool) -> dict:
        from digits.reading import read_digits
        from digits.reading.images import find_digits_in_file

        found = find_digits_in_file(name, data=data)

        def classify(inputs):
            with classify_lock:
                return reader.classify(inputs)

        reading = read_digits([found], classify, reader.min_probability)[0]
        entry = reading.to_dict(name)
        if with_inputs:
            for digit, as_dict in zip(reading.digits, entry["digits"], strict=True):
                as_dict["input"] = png_data_url(digit.input)
                as_dict["crop"] = png_data_url(found.crop(digit.box, CROP_SIDE))
        return entry

    @app.exception_handler(HTTPException)
    async def http_error(request, error):
        return JSONResponse({"error": str(error.detail)}, status_code=error.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, error):
        return JSONResponse({"error": "bad request"}, status_code=422)

    @app.get("/", response_class=HTMLResponse)
    async def index():
        return HTMLResponse(page, headers={"Cache-Control": "no-cache"})

    @app.get("/api/health")
    async def health():
        return {"status": "ok"}

    @app.get("/api/model")
    async def model():
        return model_info

    @app.post("/api/predict")
    async def predict(request: Request):
        data, name = await _image_from(request)
        if not data:
            return JSONResponse({"error": "no image in the request: send it as the body or as "
                                          "a multipart file"}, status_code=400)
        with_inputs = request.query_params.get("inputs", "") in ("1", "true", "yes")
        async with slots:
            try:
                entry = await asyncio.to_thread(read, data, name, with_inputs)
            except ImageError as e:
                return JSONResponse({"image": name, "error": str(e)}, status_code=_status(e))
        return entry

    @app.get("/api/corrections")
    async def corrections_info():
        return {"enabled": corrections is not None}

    @app.post("/api/corrections")
    async def correct(request: Request):
        if corrections is None:
            return JSONResponse({"error": "corrections are off: start digits.serve with "
                                          "--corrections DIR"}, status_code=404)
        body = await request.body()
        if len(body) > MAX_CORRECTION_BYTES:
            return JSONResponse({"error": "a correction is a label and one 28x28 input"},
                                status_code=413)
        try:
            label, pixels, crop = correction_from(body)
        except ValueError as e:
            return JSONResponse({"error": str(e)}, status_code=400)
        try:
            saved, new = await asyncio.to_thread(save_correction, Path(corrections), label,
                                                 pixels, max_corrections, crop)
        except OverflowError as e:
            return JSONResponse({"error": str(e)}, status_code=507)
        except OSError as e:
            return JSONResponse({"error": f"cannot save: {e.strerror or e}"}, status_code=507)
        return {"saved": saved, "label": label, "new": new}

    wrapped = BodyLimit(app, max_request_bytes)
    wrapped.fastapi = app  # for tests that want the FastAPI object itself
    return wrapped


async def _image_from(request) -> tuple[bytes, str]:
    """The uploaded image's bytes and a name for it: a multipart form's first file (or a field
    named `image`), else the raw body."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        from starlette.datastructures import UploadFile

        try:
            form = await request.form(max_files=1, max_fields=8)
        except Exception as e:  # noqa: BLE001 - a malformed multipart body is the client's
            raise HTTPException(400, f"malformed multipart body: {e}") from None
        for value in form.values():
            if isinstance(value, UploadFile):
                return await value.read(), _safe_name(value.filename or "upload")
        text = form.get("image")
        return (text.encode() if isinstance(text, str) else b""), "upload"
    return await request.body(), _safe_name(request.query_params.get("name", "upload"))


def _safe_name(name: str) -> str:
    """A client's file name, only ever echoed back: its last part, printable, short."""
    name = Path(name.replace("\\", "/")).name
    name = "".join(c for c in name if c.isprintable())[:100]
    return name or "upload"


def _status(error) -> int:
    text = str(error)
    if "too large" in text or "exceeds the limit" in text or "refused" in text:
        return 413
    if "not a readable image" in text:
        return 415
    return 422  # decoded, but nothing readable as a digit (blank, noise, truncated)


def correction_from(body: bytes) -> tuple[int, np.ndarray, np.ndarray | None]:
    """A correction's JSON -> (label, the 28x28 uint8 input, the uint8 crop or None);
    ValueError says what is wrong."""
    import json

    try:
        answer = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("the body must be JSON: {\"label\": 0-9, \"input\": a PNG data URL}") from None
    if not isinstance(answer, dict):
        raise ValueError("the body must be a JSON object with label and input")
    label = answer.get("label")
    if isinstance(label, str) and label.isdigit() and len(label) == 1:
        label = int(label)
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label <= 9:
        raise ValueError("label must be a digit 0-9")
    pixels = _png_from(answer.get("input"), "input", "the digit's 28x28 input")
    if pixels.shape != (28, 28):
        raise ValueError(f"input must be 28x28 pixels, not {pixels.shape[1]}x{pixels.shape[0]}")
    if pixels.max() < 50:
        raise ValueError("input is blank")
    crop = answer.get("crop")
    if crop is not None:
        crop = _png_from(crop, "crop", "the digit's crop")
        if max(crop.shape) > MAX_CROP_SIDE:
            raise ValueError(f"crop must be at most {MAX_CROP_SIDE} pixels on a side, not "
                             f"{crop.shape[1]}x{crop.shape[0]}")
    return label, pixels, crop


def _png_from(data_url, field: str, what: str) -> np.ndarray:
    """A PNG data URL (as /api/predict?inputs=1 answers) -> its grey uint8 pixels."""
    from PIL import Image, UnidentifiedImageError

    prefix = "data:image/png;base64,"
    if not isinstance(data_url, str) or not data_url.startswith(prefix):
        raise ValueError(f"{field} must be {what} as a PNG data URL "
                         "(what /api/predict?inputs=1 answered)")
    try:
        png = base64.b64decode(data_url[len(prefix):], validate=True)
        with Image.open(io.BytesIO(png), formats=("PNG",)) as image:
            if max(image.size) > MAX_CROP_SIDE:  # before decoding a large one
                raise ValueError(f"{field} is {image.size[0]}x{image.size[1]} pixels, too large")
            return np.asarray(image.convert("L"), np.uint8)
    except ValueError:
        raise
    except (UnidentifiedImageError, OSError, base64.binascii.Error):
        raise ValueError(f"{field} is not a readable PNG") from None


def save_correction(folder: Path, label: int, pixels: np.ndarray,
                    limit: int = MAX_CORRECTIONS, crop: np.ndarray | None = None) -> tuple[str, bool]:
    """`folder/<label>/<hash>.png`, written atomically; (its path in the folder, whether it is
    new). The name is the pixels' hash, so the same digit sent twice is kept once. A crop goes
    to `folder/.crops/<label>/<hash>.png`, written before the input (a digit in its class folder
    has its crop beside it, if one was sent)."""
    import hashlib

    from PIL import Image

    from digits.runs.atomic import atomic_path

    name = hashlib.blake2b(pixels.tobytes(), digest_size=12).hexdigest() + ".png"
    target = folder / str(label) / name
    relative = f"{label}/{name}"
    if target.exists():
        return relative, False
    count = sum(1 for c in range(10) if (folder / str(c)).is_dir()
                for p in (folder / str(c)).iterdir() if p.suffix == ".png")
    if count >= limit:
        raise OverflowError(f"the corrections folder holds {count} digits, its limit: train on "
                            "them, then empty it or raise --max-corrections")
    if crop is not None:
        (folder / CROPS / str(label)).mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / CROPS / str(label) / name, suffix=".png") as tmp:
            Image.fromarray(crop, mode="L").save(tmp, format="PNG")
    (folder / str(label)).mkdir(parents=True, exist_ok=True)
    with atomic_path(target, suffix=".png") as tmp:
        Image.fromarray(pixels, mode="L").save(tmp, format="PNG")
    return relative, True


def png_data_url(image: np.ndarray) -> str:
    """A 28x28 input in [0, 1] as a `data:image/png;base64,...` URL (white ink on black)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.clip(np.asarray(image) * 255, 0, 255).astype(np.uint8)).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def describe_model(runtime) -> dict:
    """What `GET /api/model` answers: the runtime's description, the test accuracy the model was
    measured at (by `digits.export`'s check, or the run's metrics.json beside a .keras file),
    and the class names."""
    info = runtime.describe()
    export = info.pop("export", None) or {}
    accuracy, classes, measured_on = export.get("test_accuracy"), export.get("class_names"), \
        export.get("dataset")
    if runtime.format == "keras":
        metrics = Path(runtime.path).with_name("metrics.json")
        config = Path(runtime.path).with_name("config.json")
        try:
            test = json.loads(metrics.read_text()).get("test") or {}
            accuracy = test.get("accuracy", accuracy)
            data = json.loads(config.read_text()).get("data", {})
            measured_on = f"{data['test']} test images ({data['description']})" \
                if test and "test" in data else measured_on
        except (OSError, ValueError, AttributeError):
            pass
    if export:
        measured_on = f"{export.get('examples')} test images " \
                      f"({export.get('dataset_description') or measured_on})"
    info.update(test_accuracy=accuracy, tested_on=measured_on,
                classes=classes or [str(k) for k in range(10)],
                quantize=export.get("quantize"), source=export.get("source"))
    return info
