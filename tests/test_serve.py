"""`digits.serve` as a user meets it: a real server over real HTTP, and its page in Chromium.

One server (the small CNN every reading test uses) answers the API tests, hostile bodies
included, and the browser test, which draws real test digits on the page's canvas with pointer
events and reads the page's answer. SIGTERM stops it last.
"""

from __future__ import annotations

import base64
import functools
import http.client
import io
import json
import socket
import threading
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import ROOT, run_cli
from tests.test_bad_input import png_claiming

# One worker runs the module: its server, made once, and SIGTERM to it last.
pytestmark = pytest.mark.xdist_group("serve")

SCRIPTS = ROOT / "scripts"
CHROMIUM = Path("/usr/bin/chromium")


def screenshot_serve():
    import importlib.util

    spec = importlib.util.spec_from_file_location("screenshot_serve", SCRIPTS / "screenshot_serve.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def served_model(reader_model, tmp_path_factory):
    """The small CNN's int8 LiteRT export: the fast path, and a server without TensorFlow."""
    from digits import export

    output = tmp_path_factory.mktemp("served") / "model.int8.tflite"
    assert export.main(["--model", reader_model, "--format", "litert", "--quantize", "int8",
                        "--dataset", "mnist-5k", "--output", str(output)]) == 0
    return str(output)


@pytest.fixture(scope="module")
def corrections(tmp_path_factory):
    return tmp_path_factory.mktemp("corrections") / "fixed"


@pytest.fixture(scope="module")
def server(served_model, corrections):
    tool = screenshot_serve()
    proc, url = tool.start_server(served_model, "--max-request-mb", "2", "--corrections",
                                  str(corrections), "--max-corrections", "3")
    yield proc, url
    tool.stop_server(proc)


def request(url: str, method: str, path: str, body: bytes | None = None,
            headers: dict | None = None, chunks: list[bytes] | None = None):
    """One HTTP request on a fresh connection: (status, parsed JSON or text)."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        if chunks is not None:  # a streamed body of unstated length
            connection.putrequest(method, path)
            for key, value in (headers or {}).items():
                connection.putheader(key, value)
            connection.putheader("Transfer-Encoding", "chunked")
            connection.endheaders()
            for chunk in chunks:
                connection.send(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            connection.send(b"0\r\n\r\n")
        else:
            connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        data = response.read()
    finally:
        connection.close()
    kind = response.getheader("content-type", "")
    return response.status, json.loads(data) if "json" in kind else data.decode(errors="replace")


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG")
    return buffer.getvalue()


def multipart(name: str, data: bytes) -> tuple[bytes, str]:
    boundary = "digits-test-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\""
            f"\r\nContent-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


@pytest.fixture(scope="module")
def number_photo(tmp_path_factory, mnist5k):
    """A photo-like image of a written number, made from held-out digits."""
    from scripts import photos

    sample = photos.make_sample("number", mnist5k.test.x, mnist5k.test.y, seed=101)
    return Path(sample.save(tmp_path_factory.mktemp("serve") / "number")), sample


def test_the_api_answers_what_predict_prints(server, served_model, number_photo):
    _, url = server
    path, sample = number_photo
    # The command in a process of its own, as the server is.
    proc = run_cli("digits.predict", "--model", served_model, "--json", str(path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    expected = json.loads(proc.stdout)[0]
    expected["image"] = path.name  # the API names an upload by its file name, never a path
    raw = request(url, "POST", f"/api/predict?name={path.name}", path.read_bytes(),
                  {"Content-Type": "application/octet-stream"})
    body, kind = multipart(path.name, path.read_bytes())
    form = request(url, "POST", "/api/predict", body, {"Content-Type": kind})
    assert raw == (200, expected) and form == (200, expected)
    with_inputs = request(url, "POST", "/api/predict?inputs=1", path.read_bytes())[1]
    assert [d["digit"] for d in with_inputs["digits"]] == [d["digit"] for d in expected["digits"]]
    for digit in with_inputs["digits"]:
        assert digit.pop("input").startswith("data:image/png;base64,")
        crop = Image.open(io.BytesIO(base64.b64decode(digit.pop("crop").split(",", 1)[1])))
        assert 20 <= min(crop.size) and max(crop.size) <= 96, crop.size  # the digit as shown
    assert with_inputs["digits"] == expected["digits"]
    assert request(url, "GET", "/api/health") == (200, {"status": "ok"})
    status, model = request(url, "GET", "/api/model")
    assert status == 200 and model["format"] == "litert" and model["quantize"] == "int8"
    assert model["classes"] == list("0123456789") and model["path"] == served_model
    assert model["bytes"] == Path(served_model).stat().st_size
    assert 0.9 < model["test_accuracy"] <= 1 and "500 test images" in model["tested_on"]


def test_hostile_requests_get_4xx_json_and_the_server_goes_on(server, mnist5k):
    _, url = server
    digit = png_bytes((255 - mnist5k.test.x[0, ..., 0] * 255).astype(np.uint8))
    bomb = png_claiming(100_000, 100_000)  # a valid header claiming 10 gigapixels
    body, kind = multipart("x.png", digit)
    cases = {
        "oversized, stated": (413, dict(body=b"\0" * (3 * 1024 * 1024))),
        "oversized, streamed": (413, dict(chunks=[b"\0" * (256 * 1024)] * 12)),
        "not an image": (415, dict(body=b"just some text, no picture " * 10)),
        "decompression bomb": (413, dict(body=bomb)),
        "truncated upload": (422, dict(body=digit[: len(digit) // 2])),
        "blank page": (422, dict(body=png_bytes(np.full((64, 64), 255, np.uint8)))),
        "empty body": (400, dict(body=b"")),
        "malformed multipart": (400, dict(body=body[:40],
                                          headers={"Content-Type": kind})),
        "multipart without a file": (400, dict(body=b"--b\r\nContent-Disposition: form-data; "
                                               b"name=\"x\"\r\n\r\n1\r\n--b--\r\n",
                                               headers={"Content-Type": "multipart/form-data; boundary=b"})),
    }
    for label, (status, kwargs) in cases.items():
        got, answer = request(url, "POST", "/api/predict", **kwargs)
        assert got == status, (label, got, answer)
        assert isinstance(answer, dict) and answer["error"] and "Traceback" not in answer["error"], label
    assert request(url, "GET", "/api/nothing")[0] == 404
    assert request(url, "GET", "/api/predict")[0] == 405
    # Still serving, and still right.
    assert request(url, "POST", "/api/predict", digit)[1]["text"] == str(mnist5k.test.y[0])


def test_a_correction_lands_in_the_folder_as_a_dataset_and_bad_ones_get_4xx(
        server, corrections, mnist5k):
    """POST /api/corrections with a reading's 28x28 input: saved atomically as
    <folder>/<label>/<hash>.png, which reads back as a dataset bit-identical; the same digit
    twice is kept once; bad labels and bodies get a 4xx JSON error; the count is bounded."""
    from digits.reading.folders import read_folder

    _, url = server
    digit = np.rint(mnist5k.test.x[3, :, :, 0] * 255).astype(np.uint8)
    answer = request(url, "POST", "/api/predict?inputs=1", png_bytes(255 - digit))[1]
    data_url, crop_url = answer["digits"][0]["input"], answer["digits"][0]["crop"]
    crop = np.asarray(Image.open(io.BytesIO(base64.b64decode(crop_url.split(",", 1)[1]))))
    # The crop is the digit as the image showed it: here the whole 28x28 upload, dark on light.
    assert np.abs(crop.astype(int) - (255 - digit)).max() <= 1
    post = functools.partial(request, url, "POST", "/api/corrections",
                             headers={"Content-Type": "application/json"})
    status, saved = post(json.dumps({"label": 7, "input": data_url, "crop": crop_url}).encode())
    assert status == 200 and saved["label"] == 7 and saved["new"] is True
    path = corrections / saved["saved"]
    assert path.parent == corrections / "7" and path.suffix == ".png"
    kept_crop = corrections / ".crops" / saved["saved"]
    assert np.array_equal(np.asarray(Image.open(kept_crop)), crop)
    status, again = post(json.dumps({"label": 7, "input": data_url}).encode())
    assert status == 200 and again["new"] is False and again["saved"] == saved["saved"]
    sent = np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))))
    images = read_folder(corrections, cache=False, workers=1)
    x, y = images.splits["train"]
    assert any(np.array_equal(image, sent) for image, label in zip(x, y, strict=True)
               if label == 7)
    assert len(x) == 1 and not images.skipped  # the crop is not read as a second digit
    tiny = "data:image/png;base64," + base64.b64encode(png_bytes(np.zeros((29, 28), np.uint8))).decode()
    for body, status_expected in [
        (json.dumps({"label": 12, "input": data_url}).encode(), 400),
        (json.dumps({"label": "seven", "input": data_url}).encode(), 400),
        (json.dumps({"label": True, "input": data_url}).encode(), 400),
        (json.dumps({"label": 3, "input": "data:image/png;base64,AAAA"}).encode(), 400),
        (json.dumps({"label": 3, "input": tiny}).encode(), 400),
        (json.dumps({"label": 3, "input": data_url, "crop": "a photo"}).encode(), 400),
        (json.dumps({"label": 3, "input": data_url, "crop": "data:image/png;base64," + base64.b64encode(
            png_bytes(np.zeros((300, 20), np.uint8))).decode()}).encode(), 400),
        (json.dumps({"label": 3}).encode(), 400),
        (b"not json", 400),
        (b"[1, 2]", 400),
        (json.dumps({"label": 3, "input": "x" * 70_000}).encode(), 413),
    ]:
        status, error = post(body)
        assert status == status_expected and set(error) == {"error"}, (body[:60], status, error)
    # --max-corrections 3: the fourth new digit is refused (507), nothing written.
    for k in range(4, 10):
        other = np.rint(mnist5k.test.x[k, :, :, 0] * 255).astype(np.uint8)
        url_k = "data:image/png;base64," + base64.b64encode(png_bytes(other)).decode()
        status, body = post(json.dumps({"label": 1, "input": url_k}).encode())
        if status != 200:
            assert status == 507 and "limit" in body["error"]
            break
    else:
        pytest.fail("the corrections folder has no limit")
    assert sum(1 for _ in corrections.glob("[0-9]/*.png")) <= 3
    assert request(url, "GET", "/api/health")[0] == 200  # still serving
    for extra in (corrections / "1").glob("*.png"):
        extra.unlink()  # room for the page's correction


def test_concurrent_requests_are_all_answered_alike(server, mnist5k):
    _, url = server
    images = [png_bytes((255 - mnist5k.test.x[k, ..., 0] * 255).astype(np.uint8)) for k in range(4)]
    alone = [request(url, "POST", "/api/predict", image)[1] for image in images]
    answers, errors = [[] for _ in range(12)], []

    def client(k):
        try:
            for n in range(4):
                answers[k].append((n, request(url, "POST", "/api/predict", images[n])))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    for replies in answers:
        assert [(n, status) for n, (status, _) in replies] == [(n, 200) for n in range(4)]
        assert [body["text"] for _, (_, body) in replies] == [a["text"] for a in alone]


def test_the_page_reads_digits_drawn_with_a_pointer(server, mnist5k, number_photo, corrections):
    if not CHROMIUM.exists() or not Path("/usr/bin/chromedriver").exists():
        pytest.fail("the page's test needs Debian's chromium and chromium-driver "
                    "(.ci/run installs them)")
    _, url = server
    tool = screenshot_serve()
    driver = tool.browser()
    try:
        driver.get(url + "/")
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import Select, WebDriverWait

        tool.draw_number(driver, "2026")
        answer = tool.read_page(driver)
        assert len(answer["reading"]) == 4 and answer["digits"] == 4, answer
        # A four-epoch model (the default reads all four; README): three of four at least.
        assert sum(a == b for a, b in zip(answer["reading"], "2026", strict=True)) >= 3, answer
        assert answer["inputs"] == 4 and answer["bars"] == 12
        strokes_of_six = len(tool.digit_strokes(tool.examples("2026")[3]))
        for _ in range(strokes_of_six):
            driver.find_element(By.ID, "undo").click()
        assert tool.read_page(driver)["reading"] == answer["reading"][:3]
        # "It is a 5" under the first digit: saved as the served corrections folder's 5/.
        Select(driver.find_elements(By.CSS_SELECTOR, ".fix select")[0]).select_by_value("5")
        driver.find_elements(By.CSS_SELECTOR, ".fix button")[0].click()
        WebDriverWait(driver, 20).until(lambda d: d.find_elements(
            By.CSS_SELECTOR, ".fix .saved")[0].text.startswith(("saved", "not saved")))
        assert driver.find_elements(By.CSS_SELECTOR, ".fix .saved")[0].text == "saved as 5"
        saved_fives = list((corrections / "5").glob("*.png"))
        assert saved_fives and all((corrections / ".crops" / "5" / p.name).exists()
                                   for p in saved_fives)
        driver.find_element(By.ID, "clear").click()
        cleared = tool.read_page(driver)
        assert cleared["reading"] == "" and cleared["digits"] == 0
        # A photo picked with the file input is read as the API reads it.
        path, _ = number_photo
        driver.find_element(By.ID, "file").send_keys(str(path))
        picked = tool.read_page(driver)
        expected = request(url, "POST", "/api/predict", path.read_bytes())[1]
        assert picked["reading"] == "".join("?" if d["uncertain"] else str(d["digit"])
                                            for d in expected["digits"])
        assert driver.find_element(By.ID, "photo").is_displayed()
        # Narrow as a phone: the drawing area still fits the screen.
        driver.set_window_size(390, 844)
        width = driver.execute_script("return document.getElementById('canvas')"
                                      ".getBoundingClientRect().width")
        assert 300 <= width <= 390
    finally:
        driver.quit()


def asgi(app, method: str, path: str, body: bytes = b"", content_type: str = "image/png"):
    """One request to an ASGI application, in this process (what uvicorn hands the app):
    (status, the JSON answer)."""
    import asyncio

    path, _, query = path.partition("?")
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": query.encode(), "root_path": "", "server": ("test", 80),
             "client": ("test", 1), "headers": [(b"content-type", content_type.encode()),
                                                 (b"content-length", str(len(body)).encode())]}
    incoming = [{"type": "http.request", "body": body, "more_body": False}]
    sent = []

    async def receive():
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], json.loads(b"".join(m.get("body", b"") for m in sent[1:]))


def test_corrections_from_the_app_fine_tune_the_model(reader_model, mnist5k, tmp_path,
                                                      monkeypatch, capsys):
    """The loop the page offers, whole: photos read by the served app (/api/predict?inputs=1),
    each digit said to be its true digit (POST /api/corrections, with its crop), and the
    corrections folder fine-tuned on (`digits.train --init-from MODEL --dataset DIR`)."""
    from digits import train
    from digits.deploy.service import create_app
    from digits.reading import Reader
    from tests.test_folders import paper_photo

    monkeypatch.setenv("DIGITS_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "fixed"
    app = create_app(Reader.load(reader_model), corrections=folder)
    rng = np.random.default_rng(5)
    picked = np.concatenate([np.flatnonzero(mnist5k.test.y == c)[:12] for c in range(10)])
    for i in picked:
        photo = io.BytesIO()
        paper_photo(mnist5k.test.x[i, :, :, 0], rng).save(photo, "JPEG", quality=90)
        status, answer = asgi(app, "POST", "/api/predict?inputs=1", photo.getvalue(), "image/jpeg")
        assert status == 200 and answer["digits"], answer
        # A speck read as a second digit is left alone: the person corrects the digit itself.
        digit = max(answer["digits"], key=lambda d: d["box"][2] * d["box"][3])
        correction = {"label": int(mnist5k.test.y[i]), "input": digit["input"], "crop": digit["crop"]}
        status, saved = asgi(app, "POST", "/api/corrections", json.dumps(correction).encode(),
                             "application/json")
        assert status == 200 and saved["new"], saved
    assert sorted(int(p.parent.name) for p in folder.glob("[0-9]/*.png")) == \
        sorted(mnist5k.test.y[picked].tolist())
    assert len(list((folder / ".crops").glob("[0-9]/*.png"))) == len(picked)
    run = tmp_path / "logs" / "finetune" / "version_0"
    assert train.main(["--init-from", reader_model, "--dataset", str(folder), "--epochs", "2",
                       "--log-dir", str(tmp_path / "logs"), "--no-default-callbacks",
                       "--callbacks", "checkpoint"]) == 0
    err = capsys.readouterr().err
    assert f"{folder}: {len(picked)} images read as digits" in err
    assert "fine-tuning on 97 of your digits and 97 replayed from mnist-5k" in err
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(metrics["history"]["val_accuracy"]) == 2 and (run / "model.keras").exists()


def test_workers_serve_and_stop_on_sigterm(served_model, mnist5k):
    """`--workers 2` (a process per core: the fast path's throughput), each with its model."""
    tool = screenshot_serve()
    proc, url = tool.start_server(served_model, "--workers", "2")
    try:
        digit = png_bytes((255 - mnist5k.test.x[1, ..., 0] * 255).astype(np.uint8))
        answers = [request(url, "POST", "/api/predict", digit) for _ in range(6)]
        assert {status for status, _ in answers} == {200}
        assert {body["text"] for _, body in answers} == {str(mnist5k.test.y[1])}
        assert request(url, "GET", "/api/model")[1]["path"] == served_model
    finally:
        assert tool.stop_server(proc) == 0


def test_a_port_in_use_is_refused(reader_model):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = run_cli("digits.serve", "--model", reader_model, "--port", str(port), timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith("error: cannot listen on"), proc.stderr


def test_sigterm_stops_the_server_cleanly(server):
    proc, url = server
    assert request(url, "GET", "/api/health")[0] == 200
    assert screenshot_serve().stop_server(proc) == 0
