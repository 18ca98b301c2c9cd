// The sam2-jax annotator page: one session per tab; the server does all the tracking.
"use strict";

const $ = (id) => document.getElementById(id);
const view = $("view");
const ctx = view.getContext("2d", { willReadFrequently: true });

const app = {
  session: null, video: null, frame: 0, objects: [], selected: null,
  image: null, masks: [], prompts: [], polling: null, loadToken: 0,
  clickMs: [], // click to mask drawn, for each prompt given on the page (the browser test prints them)
};
window.app = app; // for the browser test and the console

// ---------------------------------------------------------------------------------- server calls
async function api(method, url, body) {
  const options = { method, headers: {} };
  if (body instanceof Blob) {
    options.body = body;
  } else if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(url, options);
  if (!response.ok) {
    let detail = response.statusText;
    try {
      const data = await response.json();
      detail = typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail);
    } catch (e) { /* not JSON: keep the status text */ }
    throw new Error(detail);
  }
  return response;
}
const sessionUrl = (path) => `/api/sessions/${app.session}${path}`;

function message(text, kind = "info") {
  const box = $("message");
  box.textContent = text;
  box.className = text ? kind : "";
}

// Run an action from a control: its errors are shown on the page.
async function act(action) {
  try {
    await action();
  } catch (err) {
    message(err.message, "error");
  }
}

// ------------------------------------------------------------------------------------ drawing
// The DAVIS palette colour of an object id, as the overlay mp4 draws it (white where it is black).
function colour(id) {
  const i = id % 256;
  let rgb = [0, 0, 0];
  for (let bit = 0; bit < 3; bit++) {
    for (let c = 0; c < 3; c++) rgb[c] |= ((i >> (3 * bit + c)) & 1) << (7 - bit);
  }
  return rgb.some((v) => v) ? rgb : [255, 255, 255];
}
// The page's colour of an object: its palette colour brightened (the square root of each channel), so that the
// palette's dark colours show on dark frames; hues, and which objects look alike, stay the palette's.
const shade = (id) => colour(id).map((v) => Math.round(255 * Math.sqrt(v / 255)));
const css = (rgb) => `rgb(${rgb.join(",")})`;

// Uncompressed COCO RLE counts (column-major runs, 0s first) -> a row-major 0/1 array.
function decodeRle(counts, height, width) {
  const mask = new Uint8Array(height * width);
  let i = 0;
  counts.forEach((count, run) => {
    if (run % 2 === 1) {
      for (let k = i; k < i + count; k++) {
        const x = Math.floor(k / height);
        mask[(k - x * height) * width + x] = 1;
      }
    }
    i += count;
  });
  return mask;
}

const FILL = 0.5; // the share of an object's colour in its mask's pixels

// The frame, each mask filled with its object's colour and outlined: a band of the colour along the inside of its
// edge (about 2 screen pixels), and a line outside it (about 1) black or white, whichever contrasts with what is
// drawn there, so that a mask shows on dark, bright and colourful frames alike. Then the prompts.
function draw() {
  if (!app.image) return;
  const { width, height } = app.video;
  ctx.drawImage(app.image, 0, 0);
  if (app.masks.length) {
    const pixels = ctx.getImageData(0, 0, width, height);
    const data = pixels.data;
    const perScreenPixel = width / (view.clientWidth || width);
    const band = Math.max(1, Math.round(2 * perScreenPixel)), line = Math.max(1, Math.round(perScreenPixel));
    const reach = Math.max(band - 1, line);
    const masks = [...app.masks].sort((a, b) => b.obj_id - a.obj_id); // lower ids end on top, as in the overlay mp4
    const edges = masks.map(({ obj_id, mask }) => { // the fill; and the mask's pixels with a 4-neighbour outside it
      const rgb = shade(obj_id), found = [];
      for (let p = 0, x = 0; p < mask.length; p++, x = x + 1 === width ? 0 : x + 1) {
        if (!mask[p]) continue;
        for (let c = 0; c < 3; c++) data[4 * p + c] = Math.round((1 - FILL) * data[4 * p + c] + FILL * rgb[c]);
        if ((x > 0 && !mask[p - 1]) || (x < width - 1 && !mask[p + 1]) ||
            (p >= width && !mask[p - width]) || (p + width < mask.length && !mask[p + width])) found.push(p);
      }
      return found;
    });
    const lined = new Uint8Array(width * height); // outside-line pixels drawn (so their colour is decided once)
    masks.forEach(({ obj_id, mask }, k) => { // outlines after every fill, so that no fill covers one
      const rgb = shade(obj_id);
      for (const p of edges[k]) { // the band and the line: within reach of an edge pixel
        const x = p % width, y = (p - x) / width;
        for (let dy = -reach; dy <= reach; dy++) {
          if (y + dy < 0 || y + dy >= height) continue;
          for (let dx = -reach; dx <= reach; dx++) {
            if (x + dx < 0 || x + dx >= width) continue;
            const q = p + dy * width + dx, far = Math.max(Math.abs(dx), Math.abs(dy));
            if (mask[q] && far < band) {
              for (let c = 0; c < 3; c++) data[4 * q + c] = rgb[c];
            } else if (!mask[q] && far <= line && !lined[q]) {
              const luma = 0.299 * data[4 * q] + 0.587 * data[4 * q + 1] + 0.114 * data[4 * q + 2];
              lined[q] = 1;
              data[4 * q] = data[4 * q + 1] = data[4 * q + 2] = luma < 128 ? 255 : 0;
            }
          }
        }
      }
    });
    ctx.putImageData(pixels, 0, 0);
  }
  const r = Math.max(3, height / 60);
  ctx.lineWidth = Math.max(1, height / 240);
  for (const prompt of app.prompts) {
    if (prompt.box) {
      const [x1, y1, x2, y2] = prompt.box;
      ctx.strokeStyle = css(shade(prompt.obj_id));
      ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    }
    prompt.points.forEach(([x, y], k) => {
      ctx.fillStyle = prompt.labels[k] === 1 ? "#2ecc40" : "#ff4136";
      ctx.strokeStyle = "#fff";
      ctx.beginPath();
      ctx.arc(x, y, r, 0, 2 * Math.PI);
      ctx.fill();
      ctx.stroke();
    });
  }
}

// Scale the canvas to the space left beside the controls and above the scrubber, keeping the aspect ratio.
function fit() {
  if (!app.video) return;
  const room = $("viewer").clientWidth;
  const height = window.innerHeight - view.getBoundingClientRect().top - 90;
  const scale = Math.min(room / app.video.width, Math.max(height, 120) / app.video.height);
  view.style.width = `${Math.floor(app.video.width * scale)}px`;
  view.style.height = `${Math.floor(app.video.height * scale)}px`;
}
window.addEventListener("resize", fit);

function showMasks(reply) {
  if (reply.frame !== app.frame) return;
  const { width, height } = app.video;
  app.masks = reply.masks.map((m) => ({ obj_id: m.obj_id, mask: decodeRle(m.counts, height, width) }));
  app.prompts = reply.prompts;
  draw();
}

// Show frame `frame`: its picture, then its masks and prompts (a newer request wins).
async function showFrame(frame) {
  if (!app.session) return;
  frame = Math.max(0, Math.min(app.video.num_frames - 1, frame));
  app.frame = frame;
  $("scrubber").value = frame;
  $("frame-label").textContent = `frame ${frame} / ${app.video.num_frames - 1}`;
  const token = ++app.loadToken;
  let reply, image;
  try { // through api(), so that a failure shows the server's reason
    reply = await (await api("GET", sessionUrl(`/frames/${frame}/masks`))).json();
    image = await createImageBitmap(await (await api("GET", sessionUrl(`/frames/${frame}`))).blob());
  } catch (err) {
    if (token === app.loadToken) throw err;
    return; // a newer request has taken over: its outcome is the one to show
  }
  if (token !== app.loadToken) return;
  app.image = image;
  showMasks(reply);
}

async function reloadMasks() {
  const frame = app.frame;
  const reply = await (await api("GET", sessionUrl(`/frames/${frame}/masks`))).json();
  showMasks(reply);
}

function renderObjects() {
  const list = $("objects");
  list.replaceChildren();
  for (const id of app.objects) {
    const item = document.createElement("li");
    item.dataset.id = id;
    item.className = id === app.selected ? "selected" : "";
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = css(shade(id));
    const remove = document.createElement("button");
    remove.className = "remove";
    remove.title = "remove this object";
    remove.textContent = "\u2715";
    remove.onclick = (event) => { event.stopPropagation(); act(() => removeObject(id)); };
    item.append(swatch, `object ${id}`, remove);
    item.onclick = () => { app.selected = id; renderObjects(); };
    list.append(item);
  }
}

// --------------------------------------------------------------------------------------- actions
async function openVideo(request) {
  if (app.session) closeSession();
  message("opening...");
  const reply = await (await request()).json();
  app.session = reply.session;
  app.video = reply;
  app.objects = [];
  app.selected = null;
  view.width = reply.width;
  view.height = reply.height;
  fit();
  $("scrubber").max = reply.num_frames - 1;
  $("video-info").textContent = `${reply.name}: ${reply.num_frames} frames, ${reply.width}x${reply.height}`;
  renderObjects();
  await showFrame(0);
  message("Add an object and click on it.");
}

async function addObject() {
  const reply = await (await api("POST", sessionUrl("/objects"))).json();
  app.objects.push(reply.obj_id);
  app.selected = reply.obj_id;
  renderObjects();
}

async function removeObject(id) {
  const reply = await (await api("DELETE", sessionUrl(`/objects/${id}`))).json();
  app.objects = reply.objects;
  if (app.selected === id) app.selected = app.objects.length ? app.objects[app.objects.length - 1] : null;
  renderObjects();
  await reloadMasks();
  message(`object ${id} removed`);
}

// A point {point: [x, y], label} or a box {box: [x1, y1, x2, y2]} for the selected object on this frame;
// `began`: the time of the click (an event's timeStamp), from which the time to the mask drawn is shown.
async function prompt(input, began = performance.now()) {
  if (!app.session) throw new Error("open a video first");
  if (app.selected === null) await addObject();
  const reply = await (await api("POST", sessionUrl("/prompts"),
                                 { frame: app.frame, obj_id: app.selected, ...input })).json();
  showMasks(reply);
  const ms = performance.now() - began;
  app.clickMs.push(ms);
  $("timing").textContent = `mask in ${Math.round(ms)} ms (model ${Math.round(1000 * reply.seconds)} ms)`;
  if (reply.propagating) {
    message("frame refined; propagating again from it");
    poll();
  } else {
    message("");
  }
  return reply;
}
app.prompt = (input) => act(() => prompt(input));

// Take back the last prompt (on whichever frame it was: that frame is shown).
async function undo() {
  if (!app.session) throw new Error("open a video first");
  const reply = await (await api("POST", sessionUrl("/undo"))).json();
  if (reply.frame === app.frame) showMasks(reply);
  else await showFrame(reply.frame);
  if (reply.propagating) {
    message(`last prompt on frame ${reply.frame} undone; propagating again`);
    poll();
  } else {
    message(`last prompt on frame ${reply.frame} undone`);
  }
}

async function propagate(direction) {
  await api("POST", sessionUrl("/propagate"), { direction });
  message(`propagating ${direction}...`);
  poll();
}

// Poll the propagation's progress until it ends; the current frame's masks are shown when it is reached
// (and at the end), so that the page spends no time redrawing meanwhile.
function poll() {
  clearInterval(app.polling);
  const tick = async () => {
    const p = await (await api("GET", sessionUrl("/progress"))).json();
    $("progress").max = Math.max(p.total, 1);
    $("progress").value = p.done;
    const fps = p.fps.toFixed(p.fps < 1 ? 2 : 1);
    $("progress-text").textContent = `${p.done} / ${p.total} frames, ${fps} fps`;
    if (p.frame === app.frame || !p.running) await reloadMasks();
    if (!p.running) {
      clearInterval(app.polling);
      app.polling = null;
      if (p.error) message(`propagation failed: ${p.error}`, "error");
      else message(p.stopped ? `stopped after ${p.done} frames` : `propagated ${p.done} frames at ${fps} fps`);
    }
  };
  app.polling = setInterval(() => act(tick), 200);
}

async function clearFrame() {
  const reply = await (await api("DELETE", sessionUrl(`/frames/${app.frame}/prompts`))).json();
  showMasks(reply);
  message(`prompts of frame ${app.frame} cleared`);
}

async function exportMasks() {
  const format = $("export-format").value;
  const response = await api("GET", sessionUrl(`/export/${format}`));
  const name = /filename="([^"]+)"/.exec(response.headers.get("Content-Disposition"))[1];
  const link = document.createElement("a");
  link.href = URL.createObjectURL(await response.blob());
  link.download = name;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  message(`exported ${name}`);
}

function closeSession() {
  clearInterval(app.polling);
  navigator.sendBeacon(sessionUrl("/close"));
  app.session = null;
}

// ------------------------------------------------------------------------------------ controls
// Canvas position of a mouse event, in video pixels.
function position(event) {
  const rect = view.getBoundingClientRect();
  return [(event.clientX - rect.left) * view.width / rect.width, (event.clientY - rect.top) * view.height / rect.height];
}
const round = (v) => Math.round(v * 10) / 10;
let dragStart = null;
view.addEventListener("contextmenu", (event) => event.preventDefault());
view.addEventListener("mousedown", (event) => {
  dragStart = { at: position(event), negative: event.button === 2 || event.shiftKey };
});
window.addEventListener("mouseup", (event) => {
  if (!dragStart) return;
  const [x0, y0] = dragStart.at;
  const negative = dragStart.negative;
  dragStart = null;
  const clamp = (v, max) => round(Math.max(0, Math.min(max, v)));
  const [x1, y1] = position(event).map((v, k) => clamp(v, k ? view.height : view.width));
  const rect = view.getBoundingClientRect();
  if (Math.hypot((x1 - x0) * rect.width / view.width, (y1 - y0) * rect.height / view.height) < 5) {
    const positive = document.querySelector("input[name=mode]:checked").value === "1";
    act(() => prompt({ point: [round(x0), round(y0)], label: positive && !negative ? 1 : 0 }, event.timeStamp));
  } else {
    const box = [Math.min(x0, x1), Math.min(y0, y1), Math.max(x0, x1), Math.max(y0, y1)].map(round);
    act(() => prompt({ box }, event.timeStamp));
  }
});

$("scrubber").addEventListener("input", () => act(() => showFrame(Number($("scrubber").value))));
$("prev").onclick = () => act(() => showFrame(app.frame - 1));
$("next").onclick = () => act(() => showFrame(app.frame + 1));
// Keys, as in the sam2 demo and X-AnyLabeling (listed in the page): a key held down repeats only frames.
const setMode = (label) => { document.querySelector(`input[name=mode][value="${label}"]`).checked = true; };
const selectObject = (k) => {
  if (k < app.objects.length) { app.selected = app.objects[k]; renderObjects(); }
};
const KEYS = {
  ArrowLeft: () => showFrame(app.frame - 1), a: () => showFrame(app.frame - 1),
  ArrowRight: () => showFrame(app.frame + 1), d: () => showFrame(app.frame + 1),
  q: () => setMode(1), e: () => setMode(0), n: () => addObject(), p: () => propagate("both"),
  Escape: () => app.polling && api("POST", sessionUrl("/stop")),
};
const REPEATING = ["ArrowLeft", "ArrowRight", "a", "d"];
document.addEventListener("keydown", (event) => {
  const target = event.target;
  if (target.tagName === "SELECT" || target.type === "file") return; // a list's own keys choose in it
  if ((event.ctrlKey || event.metaKey) && !event.shiftKey && !event.altKey && event.key.toLowerCase() === "z") {
    event.preventDefault();
    if (!event.repeat && app.session) act(undo);
    return;
  }
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (target.tagName === "INPUT" && event.key.startsWith("Arrow")) return; // the scrubber moves itself
  const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
  const action = /^[1-9]$/.test(key) ? () => selectObject(Number(key) - 1) : KEYS[key];
  if (!action || (event.repeat && !REPEATING.includes(key))) return;
  event.preventDefault();
  if (app.session) act(action);
});
$("open").onclick = () => act(() => openVideo(
  () => api("POST", "/api/sessions", { name: $("video-select").value })));
$("upload").addEventListener("change", () => {
  const file = $("upload").files[0];
  if (file) act(() => openVideo(() => api("POST", `/api/sessions/upload?filename=${encodeURIComponent(file.name)}`, file)));
});
$("add-object").onclick = () => act(addObject);
$("undo").onclick = () => act(undo);
$("clear-frame").onclick = () => act(clearFrame);
$("propagate-forward").onclick = () => act(() => propagate("forward"));
$("propagate-backward").onclick = () => act(() => propagate("backward"));
$("propagate-both").onclick = () => act(() => propagate("both"));
$("stop").onclick = () => act(() => api("POST", sessionUrl("/stop")));
$("export").onclick = () => act(exportMasks);
window.addEventListener("pagehide", () => { if (app.session) closeSession(); });

// "compiling..." while the server's warm-up runs (asked again every two seconds until it has ended).
function showCompiling(compiling) {
  $("compiling").hidden = !compiling;
  if (compiling) {
    setTimeout(() => act(async () => showCompiling((await (await api("GET", "/api/videos")).json()).compiling)), 2000);
  }
}

act(async () => {
  const reply = await (await api("GET", "/api/videos")).json();
  $("model").textContent = reply.model ? `model: ${reply.model}` : "";
  showCompiling(reply.compiling);
  for (const name of reply.videos) $("video-select").append(new Option(name, name));
  $("open").disabled = !reply.videos.length;
  message(reply.videos.length ? "Open a video." : "Upload a video.");
});
