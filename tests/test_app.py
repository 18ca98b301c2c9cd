"""`sam2-jax app` in a real browser: headless Chromium (the system's, e.g. Debian's `chromium`) driven by
Playwright against the server running in this process. Clicks on the page must give the library's masks for
the same clicks, through propagation, refinement and export; bad input shows a message and changes nothing.

Screenshots of each step go to a folder this module prints (`-s` shows it). SAM2_JAX_APP_SCREENSHOT=1
also copies the screenshot of the refined frame to docs/assets/app.png (the README's)."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import sys
import threading
import time
import traceback
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the app extra is not installed: pip install 'sam2-jax[app]'")
uvicorn = pytest.importorskip("uvicorn", reason="the app extra is not installed: pip install 'sam2-jax[app]'")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install playwright")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("no Chromium on PATH (Debian: apt-get install chromium)", allow_module_level=True)

from sam2_jax import Sam2VideoModel, Sam2VideoProcessor  # noqa: E402
from sam2_jax.app import server  # noqa: E402
from sam2_jax.app.annotation import Job  # noqa: E402
from sam2_jax.io.clips import generate_clip  # noqa: E402
from sam2_jax.io.frames import open_video  # noqa: E402
from sam2_jax.io.writers import make_writer

ROOT = Path(__file__).resolve().parents[1]
MODEL = "sam2-jax-shapes"
FRAMES, HEIGHT, WIDTH = 8, 120, 160
LIMIT = 1 << 20  # bytes: the size limit the server is started with
# The server answers in this process, beside the other tests' work (and a compilation may hold a session's
# lock for seconds): the page's expectations wait 30 s rather than Playwright's 5.
sync_api.expect.set_options(timeout=30_000)


def centre(mask: np.ndarray) -> tuple[float, float]:
    """(x, y) of the pixel of the mask nearest its centroid (a click inside it)."""
    ys, xs = np.nonzero(mask)
    k = np.argmin((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2)
    return float(xs[k]), float(ys[k])


def decode(counts: list[int]) -> np.ndarray:
    """Uncompressed column-major RLE counts (as the server sends them) -> bool (H, W)."""
    flat = np.repeat(np.arange(len(counts)) % 2 == 1, counts)
    return flat.reshape(WIDTH, HEIGHT).T


def labels(masks: dict[int, np.ndarray]) -> np.ndarray:
    """DAVIS labels of {obj_id: mask}: the lower id wins where masks overlap."""
    out = np.zeros((HEIGHT, WIDTH), np.uint8)
    for obj_id in sorted(masks, reverse=True):
        out[masks[obj_id]] = obj_id
    return out


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The server on a free port, with a folder holding a generated clip, an oversized file and its model."""
    folder = tmp_path_factory.mktemp("videos")
    clip = generate_clip(0, FRAMES, HEIGHT, WIDTH, min_objects=2)
    with make_writer("overlay", folder / "clip.mp4", fps=8) as writer:
        for t, frame in enumerate(clip.frames):
            writer.write(t, np.zeros((0, HEIGHT, WIDTH), bool), [], frame=frame)
    (folder / "big.mp4").write_bytes(os.urandom(LIMIT + 1))
    (folder / "notes.txt").write_text("not a video\n")
    model = Sam2VideoModel.from_pretrained(MODEL)
    processor = Sam2VideoProcessor.from_pretrained(MODEL)
    model.warm_up(max_objects=1, background=False)
    warmed = threading.Event()  # the page shows "compiling..." until it is set
    warmed.set()
    app = server.create_app(model, processor, root=folder, max_video_bytes=LIMIT, model_name=MODEL, warmed=warmed)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    while not uv.started:
        time.sleep(0.05)
    shots = tmp_path_factory.mktemp("app_screenshots")
    print(f"\nscreenshots: {shots}")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield {"url": f"http://127.0.0.1:{port}", "app": app, "folder": folder, "clip": clip, "model": model,
               "processor": processor, "browser": browser, "shots": shots, "warmed": warmed}
        browser.close()
    uv.should_exit = True
    thread.join(10)
    assert not app.state.upload_root.exists()  # uploads are cleaned up when the server stops


def shows_error(page, text: str) -> None:
    """The page's error message comes to contain `text`; if not, the failure carries every thread's stack
    (the server answers from this process), to tell a slow answer from a stuck one."""
    try:
        sync_api.expect(page.locator("#message.error")).to_contain_text(text)
    except AssertionError as err:
        stacks = "".join(f"\n--- {thread.name}\n" + "".join(traceback.format_stack(sys._current_frames()[thread.ident]))
                         for thread in threading.enumerate() if thread.ident in sys._current_frames())
        raise AssertionError(f"{err}\nthreads of the server's process:{stacks}") from None


def open_page(served):
    page = served["browser"].new_page(viewport={"width": 1100, "height": 640}, accept_downloads=True)
    page.goto(served["url"])
    sync_api.expect(page.locator("#message")).to_have_text("Open a video.")
    return page


def open_clip(page):
    page.select_option("#video-select", "clip.mp4")
    page.click("#open")
    wait_opened(page)


def wait_opened(page):
    """Until the opened video's frame 0 is shown. Its last step sets the message, which would overwrite a message
    that a test's next action expects (the page answers late when the machine is busy)."""
    sync_api.expect(page.locator("#frame-label")).to_have_text(f"frame 0 / {FRAMES - 1}")
    sync_api.expect(page.locator("#message")).to_have_text("Add an object and click on it.")


def click(page, x: float, y: float, **options):
    """Click the canvas at video pixel (x, y) (its centre); returns the request body and the reply."""
    box = page.locator("#view").bounding_box()
    scale = box["width"] / WIDTH
    with page.expect_response(lambda r: r.url.endswith("/prompts"), timeout=120_000) as response:
        page.mouse.click(box["x"] + (x + 0.5) * scale, box["y"] + (y + 0.5) * scale, **options)
    return response.value.request.post_data_json, response.value.json()


def wait_propagated(page):
    sync_api.expect(page.locator("#message")).to_contain_text("propagated", timeout=120_000)


def print_click_times(page, names: list[str]) -> None:
    """Print the page's times from each click to its mask drawn (one per name); not asserted: a click that needs
    a program the warm-up did not compile waits for its compilation, and this machine is shared."""
    times = page.evaluate("app.clickMs")
    assert len(times) == len(names), (times, names)
    print("click to mask drawn on the page:", ", ".join(f"{n} {t:.0f} ms" for n, t in zip(names, times)))


def library_masks(served, out) -> dict[int, np.ndarray]:
    masks = served["processor"].post_process_masks([out.pred_masks], [(HEIGHT, WIDTH)])[0][:, 0]
    return dict(zip(out.object_ids, masks))


def overlay_drawn(page) -> tuple[float, float, float]:
    """(share of mask pixels drawn nearer their object's colour than the frame is, share of the masks' edge pixels
    drawn in exactly that colour (the outline), share of pixels more than 4 px from any mask left as the frame)."""
    return page.evaluate("""() => {
        const {width, height} = app.video;
        const raw = document.createElement("canvas");
        raw.width = width; raw.height = height;
        const rctx = raw.getContext("2d");
        rctx.drawImage(app.image, 0, 0);
        const frame = rctx.getImageData(0, 0, width, height).data;
        const shown = document.getElementById("view").getContext("2d").getImageData(0, 0, width, height).data;
        const owner = new Int32Array(width * height);  // the id drawn on top: the lowest
        for (const {obj_id, mask} of app.masks) mask.forEach((v, p) => {
            if (v && (!owner[p] || obj_id < owner[p])) owner[p] = obj_id;
        });
        const near = new Uint8Array(width * height);  // within 4 px of a mask
        owner.forEach((o, p) => {
            if (!o) return;
            const x = p % width, y = Math.floor(p / width);
            for (let dy = -4; dy <= 4; dy++) for (let dx = -4; dx <= 4; dx++) {
                if (x + dx >= 0 && x + dx < width && y + dy >= 0 && y + dy < height) near[p + dy * width + dx] = 1;
            }
        });
        const distance = (pixels, p, rgb) => Math.hypot(...rgb.map((v, c) => pixels[4 * p + c] - v));
        let inside = 0, tinted = 0, edges = 0, outlined = 0, far = 0, kept = 0;
        for (let p = 0; p < width * height; p++) {
            if (owner[p]) {
                const rgb = shade(owner[p]);
                inside++;
                if (distance(shown, p, rgb) < distance(frame, p, rgb) || distance(shown, p, rgb) === 0) tinted++;
                const x = p % width, y = Math.floor(p / width);
                if ((x > 0 && !owner[p - 1]) || (x < width - 1 && !owner[p + 1]) ||
                    (y > 0 && !owner[p - width]) || (y < height - 1 && !owner[p + width])) {
                    edges++;
                    if (distance(shown, p, rgb) === 0) outlined++;
                }
            } else if (!near[p]) {
                far++;
                if ([0, 1, 2].every(c => shown[4*p+c] === frame[4*p+c])) kept++;
            }
        }
        return [tinted / Math.max(inside, 1), outlined / Math.max(edges, 1), kept / Math.max(far, 1)];
    }""")


def test_click_propagate_refine_export(served, tmp_path):
    """Two objects clicked on frame 0, forward propagation, a correction on frame 5 (re-propagated), and the
    three exports, against the library driven directly with the same clicks."""
    clip, model, processor, shots = served["clip"], served["model"], served["processor"], served["shots"]
    page = open_page(served)
    open_clip(page)
    page.screenshot(path=shots / "1_opened.png")

    session = processor.init_video_session(video=served["folder"] / "clip.mp4", add_all_frames_to_correct_as_cond=True)
    expected = {}

    def library(frame, obj_id, point, label=1):
        processor.add_inputs_to_inference_session(session, frame_idx=frame, obj_ids=obj_id, input_points=[[[point]]],
                                                  input_labels=[[[label]]])
        expected[frame] = library_masks(served, model(inference_session=session, frame_idx=frame))

    # A click on object 1: its mask, the library's for the same click, is on the page within a second.
    page.click("#add-object")
    sync_api.expect(page.locator("#objects li")).to_have_count(1)
    sent, reply = click(page, *centre(clip.masks[0, 0]))
    library(0, 1, list(sent["point"]))
    assert [m["obj_id"] for m in reply["masks"]] == [1]
    np.testing.assert_array_equal(decode(reply["masks"][0]["counts"]), expected[0][1])
    iou = (expected[0][1] & clip.masks[0, 0]).sum() / (expected[0][1] | clip.masks[0, 0]).sum()
    assert iou > 0.5, iou  # the packaged model finds the shape
    sync_api.expect(page.locator("#timing")).to_contain_text("mask in")
    tinted, outlined, kept = overlay_drawn(page)
    assert tinted > 0.9 and outlined > 0.9 and kept > 0.99, (tinted, outlined, kept)  # the click marker covers a few

    # A second object with its own colour.
    page.click("#add-object")
    sync_api.expect(page.locator("#objects li.selected")).to_have_attribute("data-id", "2")
    sent, reply = click(page, *centre(clip.masks[0, 1]))
    library(0, 2, list(sent["point"]))
    assert sorted(m["obj_id"] for m in reply["masks"]) == [1, 2]
    for m in reply["masks"]:
        np.testing.assert_array_equal(decode(m["counts"]), expected[0][m["obj_id"]])
    tinted, outlined, kept = overlay_drawn(page)
    assert tinted > 0.9 and outlined > 0.9 and kept > 0.99, (tinted, outlined, kept)
    page.screenshot(path=shots / "2_clicked.png")
    print_click_times(page, ["first click", "a second object (compiles for two objects)"])

    # Propagate forward: progress bar to the end, masks on every frame.
    page.click("#propagate-forward")
    wait_propagated(page)
    sync_api.expect(page.locator("#progress-text")).to_contain_text(f"{FRAMES} / {FRAMES} frames")
    print("propagation as the page shows it (compiling for two objects):", page.inner_text("#progress-text"))
    for out in model.propagate_in_video_iterator(session, start_frame_idx=0):
        expected[out.frame_idx] = library_masks(served, out)
    page.locator("#scrubber").fill("4")
    sync_api.expect(page.locator("#frame-label")).to_have_text(f"frame 4 / {FRAMES - 1}")
    page.wait_for_function("app.masks.length === 2")
    page.screenshot(path=shots / "3_propagated.png")

    # A correction on tracked frame 5 (object 1 selected): refined at once, then propagated again from it.
    page.locator("#objects li[data-id='1']").click()
    page.locator("#scrubber").fill("5")
    sync_api.expect(page.locator("#frame-label")).to_have_text(f"frame 5 / {FRAMES - 1}")
    sent, reply = click(page, *centre(clip.masks[5, 0]))
    assert reply["propagating"]
    library(5, 1, list(sent["point"]))
    for m in reply["masks"]:
        np.testing.assert_array_equal(decode(m["counts"]), expected[5][m["obj_id"]])
    wait_propagated(page)
    print("propagation again from frame 5:", page.inner_text("#progress-text"))
    for out in model.propagate_in_video_iterator(session, start_frame_idx=5):
        expected[out.frame_idx] = library_masks(served, out)
    page.wait_for_function("app.masks.length === 2")
    page.screenshot(path=shots / "4_refined.png")
    if os.environ.get("SAM2_JAX_APP_SCREENSHOT"):
        shutil.copy(shots / "4_refined.png", ROOT / "docs" / "assets" / "app.png")

    # Export: the DAVIS PNGs and the COCO RLE are the library's masks; the overlay has every frame.
    downloads = {}
    for format in ("davis", "coco", "overlay"):
        page.select_option("#export-format", format)
        with page.expect_download() as download:
            page.click("#export")
        downloads[format] = tmp_path / download.value.suggested_filename
        download.value.save_as(downloads[format])
    with zipfile.ZipFile(downloads["davis"]) as archive:
        assert sorted(archive.namelist()) == [f"{t:05d}.png" for t in range(FRAMES)]
        for t in range(FRAMES):
            png = np.asarray(Image.open(io.BytesIO(archive.read(f"{t:05d}.png"))))
            np.testing.assert_array_equal(png, labels(expected[t]), err_msg=f"frame {t}")
    from pycocotools import mask as mask_utils
    entries = json.loads(downloads["coco"].read_text())
    assert len(entries) == 2 * FRAMES
    for entry in entries:
        np.testing.assert_array_equal(mask_utils.decode(entry["segmentation"]).astype(bool),
                                      expected[entry["frame_idx"]][entry["obj_id"]])
    with open_video(downloads["overlay"]) as overlay:
        assert (overlay.num_frames, overlay.height, overlay.width) == (FRAMES, HEIGHT, WIDTH)
    page.screenshot(path=shots / "5_exported.png")

    # Remove object 2; clear frame 5's prompts.
    page.locator("#objects li[data-id='2'] .remove").click()
    sync_api.expect(page.locator("#objects li")).to_have_count(1)
    page.wait_for_function("app.masks.length === 1 && app.masks[0].obj_id === 1")
    page.click("#clear-frame")
    sync_api.expect(page.locator("#message")).to_have_text("prompts of frame 5 cleared")
    assert page.evaluate("app.prompts.length") == 0
    page.close()


def test_bad_input_shows_a_message_and_changes_nothing(served):
    """A text file, an oversized video, a click outside the frame, an empty export, a change during a
    propagation: a message on the page, the session unchanged, the server still up."""
    shots, app = served["shots"], served["app"]
    page = open_page(served)

    page.set_input_files("#upload", served["folder"] / "notes.txt")
    shows_error(page, "notes.txt cannot be opened as a video")
    page.select_option("#video-select", "big.mp4")
    page.click("#open")
    shows_error(page, "over the limit of 1.0 MB")
    page.screenshot(path=shots / "6_bad_video.png")
    assert not app.state.sessions
    assert not any(app.state.upload_root.iterdir())  # the refused upload is gone

    # An upload that is a video opens; its copy lives until the tab closes.
    page.set_input_files("#upload", served["folder"] / "clip.mp4")
    wait_opened(page)
    (annotation,) = app.state.sessions.values()
    page.click("#export")
    shows_error(page, "nothing to export")
    page.click("#propagate-forward")
    shows_error(page, "nothing to propagate")
    page.evaluate("app.prompt({point: [-5, 10], label: 1})")
    shows_error(page, "(-5, 10) is outside the frame (160x120 px)")
    page.screenshot(path=shots / "7_outside.png")
    assert annotation.session.get_obj_num() == 0 and not annotation.prompts and not annotation.masks

    # While a propagation runs, changes are refused with its progress; undo too.
    annotation.job = Job(total=FRAMES)
    page.evaluate(f"app.prompt({{point: [{WIDTH / 2}, {HEIGHT / 2}], label: 1}})")
    shows_error(page, "propagation is running (0/8 frames)")
    page.evaluate("message('')")
    page.click("#undo")
    shows_error(page, "propagation is running (0/8 frames)")
    annotation.job.running = False
    page.keyboard.press("Control+z")
    shows_error(page, "nothing to undo")
    assert annotation.session.get_obj_num() == 0

    with urllib.request.urlopen(served["url"] + "/api/videos") as response:
        assert json.load(response)["videos"] == ["big.mp4", "clip.mp4"]  # still up; notes.txt is not served

    # Closing the tab frees its session and deletes its upload.
    upload = annotation.upload_dir
    assert upload.exists()
    page.close(run_before_unload=True)
    for _ in range(100):
        if not app.state.sessions and not upload.exists():
            break
        time.sleep(0.05)
    assert not app.state.sessions and not upload.exists()
    assert annotation.session is None


def test_idle_sessions_are_freed(served):
    """A session without requests for longer than the idle timeout is closed by the reaper."""
    app = served["app"]
    page = open_page(served)
    open_clip(page)
    (annotation,) = app.state.sessions.values()
    app.state.reap_idle()
    assert app.state.sessions  # not idle yet
    annotation.last_seen -= 10**6
    app.state.reap_idle()
    assert not app.state.sessions and annotation.session is None
    page.locator("#scrubber").fill("1")
    sync_api.expect(page.locator("#message.error")).to_contain_text("closed or expired")
    page.close()


def test_keys_and_undo(served, tmp_path):
    """Arrows and A/D go through frames, N adds an object, E/Q switch negative/positive clicks, P propagates,
    Ctrl+Z takes back the last prompt: the masks are those before it and the session is as if it had never been
    given (a click after it, and a propagation, give the library's masks without it)."""
    clip, model, processor, app = served["clip"], served["model"], served["processor"], served["app"]
    page = open_page(served)
    open_clip(page)
    annotation = app.state.sessions[page.evaluate("app.session")]
    for key, frame in (("ArrowRight", 1), ("d", 2), ("ArrowLeft", 1), ("a", 0)):
        page.keyboard.press(key)
        sync_api.expect(page.locator("#frame-label")).to_have_text(f"frame {frame} / {FRAMES - 1}")
    page.wait_for_function("app.frame === 0 && app.image !== null")

    def undo() -> dict:
        page.evaluate("message('')")  # so that waiting for a message never reads the one before
        with page.expect_response(lambda r: r.url.endswith("/undo"), timeout=120_000) as response:
            page.keyboard.press("Control+z")
        assert response.value.ok, response.value.text()
        return response.value.json()

    def shown(reply: dict) -> dict[int, np.ndarray]:
        """{obj_id: mask} of a reply, once the page has drawn it: its own decoding must be the same."""
        page.wait_for_function(f"app.prompts.length === {len(reply['prompts'])} && "
                               f"app.masks.length === {len(reply['masks'])}")
        drawn = {obj_id: np.array(mask, bool).reshape(HEIGHT, WIDTH) for obj_id, mask in
                 page.evaluate("app.masks.map(m => [m.obj_id, Array.from(m.mask)])")}
        masks = {m["obj_id"]: decode(m["counts"]) for m in reply["masks"]}
        assert drawn.keys() == masks.keys()
        for obj_id, mask in masks.items():
            np.testing.assert_array_equal(drawn[obj_id], mask)
        return masks

    page.keyboard.press("n")
    sync_api.expect(page.locator("#objects li.selected")).to_have_attribute("data-id", "1")
    ys, xs = np.nonzero(clip.masks[0, 0])
    x1, y1 = centre(clip.masks[0, 0])
    k = np.argmin((xs - (x1 + xs.max()) / 2) ** 2 + (ys - y1) ** 2)
    x2, y2 = float(xs[k]), float(ys[k])  # halfway from the centre to the right edge
    sent, reply = click(page, x1, y1)
    p1 = list(sent["point"])
    first = shown(reply)
    page.keyboard.press("e")
    sent, reply = click(page, x2, y2)
    assert sent["label"] == 0
    assert not np.array_equal(shown(reply)[1], first[1])  # the negative click changed the mask
    reply = undo()
    assert reply["frame"] == 0 and not reply["propagating"]
    np.testing.assert_array_equal(shown(reply)[1], first[1])
    assert annotation.prompts == {(0, 1): {"points": [p1], "labels": [1], "box": None}}

    # A positive click after the undo gives the library's mask for the two positive clicks alone.
    page.keyboard.press("q")
    k = np.argmin((xs - x1) ** 2 + (ys - (y1 + ys.max()) / 2) ** 2)
    x3, y3 = float(xs[k]), float(ys[k])
    sent, reply = click(page, x3, y3)
    assert sent["label"] == 1
    p3 = list(sent["point"])
    session = processor.init_video_session(video=served["folder"] / "clip.mp4", add_all_frames_to_correct_as_cond=True)
    processor.add_inputs_to_inference_session(session, frame_idx=0, obj_ids=1, input_points=[[[p1, p3]]],
                                              input_labels=[[[1, 1]]])
    expected = {0: library_masks(served, model(inference_session=session, frame_idx=0))}
    np.testing.assert_array_equal(shown(reply)[1], expected[0][1])
    for out in model.propagate_in_video_iterator(session, start_frame_idx=0):
        expected[out.frame_idx] = library_masks(served, out)

    # A second object (N), propagated (P); undoing its only click makes the session again without it and
    # propagates again: every frame has the library's masks of object 1 alone.
    page.keyboard.press("n")
    sync_api.expect(page.locator("#objects li.selected")).to_have_attribute("data-id", "2")
    click(page, *centre(clip.masks[0, 1]))
    print_click_times(page, ["first click", "a negative second point (compiles for two points)",
                             "a third point, after undo", "a second object"])
    page.keyboard.press("p")
    wait_propagated(page)
    reply = undo()
    assert reply["propagating"] and [m["obj_id"] for m in reply["masks"]] == [1]
    wait_propagated(page)
    assert annotation.session.obj_ids == [1] and sorted(annotation.masks) == list(range(FRAMES))
    for t in range(FRAMES):
        assert list(annotation.masks[t]) == [1]
        np.testing.assert_array_equal(annotation._unpack(annotation.masks[t][1]), expected[t][1], err_msg=f"frame {t}")

    # Undo the third point (propagated again), then the first: nothing is left, and nothing more to undo.
    undo()
    wait_propagated(page)
    reply = undo()
    assert not reply["masks"] and not reply["prompts"] and not reply["propagating"]
    assert annotation.session.get_obj_num() == 0 and not annotation.masks
    page.keyboard.press("Control+z")
    shows_error(page, "nothing to undo")
    page.close()


def test_page_loads_without_failed_requests_and_says_compiling_while_warming_up(served):
    """No request of the page fails (the favicon is served); "compiling..." shows only until `warmed` is set."""
    failed = []
    page = served["browser"].new_page()
    page.on("requestfailed", lambda r: failed.append(f"{r.url}: {r.failure}"))
    page.on("response", lambda r: failed.append(f"{r.url}: {r.status}") if r.status >= 400 else None)
    page.goto(served["url"])
    sync_api.expect(page.locator("#message")).to_have_text("Open a video.")
    page.wait_for_load_state("networkidle")
    assert not failed, failed
    sync_api.expect(page.locator("#compiling")).to_be_hidden()
    with urllib.request.urlopen(served["url"] + "/favicon.ico") as response:
        assert response.headers["Content-Type"].startswith("image/svg+xml")

    served["warmed"].clear()
    try:
        page.reload()
        sync_api.expect(page.locator("#compiling")).to_be_visible()
        sync_api.expect(page.locator("#compiling")).to_have_text("compiling\u2026")
    finally:
        served["warmed"].set()
    sync_api.expect(page.locator("#compiling")).to_be_hidden()
    assert not failed, failed
    page.close()
