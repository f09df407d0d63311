// The image viewer: series thumbnails, a stack that scrolls with the wheel and keys,
// window/level by drag and presets, zoom and pan, neighbouring slices fetched ahead,
// and the patient's prior studies. Images are rendered by the server (WADO-RS
// `rendered`, JPEG) at the window asked for, so a 16-bit CT never travels whole.
import { api, attr, attrs } from "./api.js";
import { t } from "./i18n.js";
import { h, fill, fmtDicomDate, personName, toast } from "./dom.js";

/** Window presets: [key, center, width]. */
export const PRESETS = [
  ["preset_lung", -600, 1500],
  ["preset_mediastinum", 40, 400],
  ["preset_bone", 300, 1500],
  ["preset_brain", 40, 80],
  ["preset_abdomen", 50, 350],
];

const PREFETCH_AHEAD = 8;
const PARALLEL_FETCHES = 4;
const CACHE_IMAGES = 160;

/** A bounded cache of decoded images by URL, with a small queue for fetching ahead. */
class ImageCache {
  constructor() {
    this.images = new Map();
    this.queue = [];
    this.running = 0;
  }

  /** The image at `url`, loading it now (ahead of anything queued). */
  get(url) {
    let entry = this.images.get(url);
    if (entry) {
      this.images.delete(url);
      this.images.set(url, entry);
      return entry.ready;
    }
    entry = this.load(url);
    return entry.ready;
  }

  load(url) {
    const img = new Image();
    img.decoding = "async";
    const ready = new Promise((resolve, reject) => {
      img.onload = () => resolve(img);
      img.onerror = () => {
        this.images.delete(url);
        reject(new Error(t("image_failed")));
      };
    });
    ready.catch(() => {});
    img.src = url;
    const entry = { img, ready };
    this.images.set(url, entry);
    while (this.images.size > CACHE_IMAGES) this.images.delete(this.images.keys().next().value);
    return entry;
  }

  /** Fetch these URLs ahead, nearest first, a few at a time; replaces the previous list. */
  prefetch(urls) {
    this.queue = urls.filter((u) => !this.images.has(u));
    this.pump();
  }

  pump() {
    while (this.running < PARALLEL_FETCHES && this.queue.length) {
      const url = this.queue.shift();
      if (this.images.has(url)) continue;
      this.running += 1;
      this.load(url)
        .ready.catch(() => {})
        .finally(() => {
          this.running -= 1;
          this.pump();
        });
    }
  }
}

const num = (v) => (v === undefined || v === null || v === "" ? undefined : Number(v));

/** The frames of a series in reading order, from its stored metadata. */
function framesOf(metadata) {
  const instances = metadata.map((m) => ({
    sop: attr(m, "00080018"),
    number: num(attr(m, "00200013")),
    z: num(attrs(m, "00200032")[2]),
    frames: num(attr(m, "00280008")) || 1,
    center: num(attr(m, "00281050")),
    width: num(attr(m, "00281051")),
    photometric: attr(m, "00280004") || "",
    // Row spacing, column spacing (mm); Imager Pixel Spacing for projection images.
    // Cine speed: Frame Time (ms) or Cine Rate (frames/s) of the instance.
    frameMs: num(attr(m, "00181063")) || (num(attr(m, "00180040")) ? 1000 / num(attr(m, "00180040")) : undefined),
    spacing: (attrs(m, "00280030").length ? attrs(m, "00280030") : attrs(m, "00181164")).map(Number),
  }));
  instances.sort((a, b) => (a.number ?? 0) - (b.number ?? 0) || (b.z ?? 0) - (a.z ?? 0));
  const out = [];
  for (const i of instances) {
    if (i.frames > 1) for (let f = 1; f <= i.frames; f++) out.push({ ...i, frame: f });
    else out.push({ ...i, frame: null });
  }
  return out;
}

/** Render the viewer into `root` for `exam`; returns the function that leaves it. */
export async function imageViewer(root, exam) {
  const cache = new ImageCache();
  const state = { study: exam.study_uid, series: null, base: "", frames: [], index: 0, window: null, zoom: 1, panX: 0, panY: 0, tool: "window" };
  // Distance measurements of the open series: image index -> [{a: [x, y], b: [x, y]}] in
  // image pixels, so they stay on the anatomy through zoom and pan.
  let measurements = new Map();

  const seriesList = h("div", { class: "series-list", id: "series-list" });
  const priors = h("div", { class: "priors", id: "priors" });
  const canvas = h("canvas", { id: "viewport", tabindex: 0 });
  const ctx = canvas.getContext("2d");
  const overlay = {
    tl: h("div", { class: "ov tl" }),
    tr: h("div", { class: "ov tr" }),
    bl: h("div", { class: "ov bl", id: "slice-label" }),
    br: h("div", { class: "ov br", id: "window-label" }),
  };
  const measureLabel = h("div", { class: "ov tc", id: "measure-label" });
  const slider = h("input", { type: "range", id: "slice", min: 0, max: 0, value: 0, "aria-label": t("slice") });
  const presetButtons = PRESETS.map(([key, c, w]) =>
    h("button", { class: "preset", dataset: { preset: key }, onclick: () => setWindow(c, w) }, t(key)),
  );
  const toolButton = (tool, label) =>
    h("button", { class: "tool", dataset: { tool }, onclick: () => setTool(tool) }, t(label));
  const toolbar = h(
    "div",
    { class: "toolbar viewer-tools" },
    toolButton("window", "tool_window"),
    toolButton("pan", "tool_pan"),
    toolButton("zoom", "tool_zoom"),
    toolButton("measure", "tool_measure"),
    h("button", { id: "reset-view", onclick: () => resetView(true) }, t("tool_reset")),
    h("button", { id: "cine", onclick: () => toggleCine() }, t("cine_play")),
    h("span", { class: "sep" }),
    presetButtons,
    h("button", { class: "preset", dataset: { preset: "default" }, onclick: () => setWindow(null, null) }, t("preset_default")),
  );
  const stage = h("div", { class: "stage", id: "stage" }, canvas, Object.values(overlay), measureLabel);
  fill(root, h("div", { class: "viewer" }, h("div", { class: "viewer-side" }, h("h3", {}, t("series")), seriesList, h("h3", {}, t("priors")), priors), h("div", { class: "viewer-main" }, toolbar, stage, slider)));

  const current = () => state.frames[state.index];
  const urlOf = (f) => {
    const path = f.frame ? `${state.base}/instances/${f.sop}/frames/${f.frame}/rendered` : `${state.base}/instances/${f.sop}/rendered`;
    return state.window ? `${path}?window=${state.window[0]},${state.window[1]}` : path;
  };
  const isColour = (f) => f && /^(RGB|YBR|PALETTE)/.test(f.photometric);

  let shownImage = null;
  const draw = () => {
    const w = stage.clientWidth;
    const hh = stage.clientHeight;
    if (canvas.width !== w || canvas.height !== hh) {
      canvas.width = w;
      canvas.height = hh;
    }
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, w, hh);
    if (!shownImage) return;
    const g = geometry();
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(shownImage, g.x0, g.y0, shownImage.naturalWidth * g.fit, shownImage.naturalHeight * g.fit);
    ctx.lineWidth = 1.5;
    ctx.font = "13px sans-serif";
    for (const m of measurements.get(state.index) || []) {
      const [ax, ay] = [g.x0 + m.a[0] * g.fit, g.y0 + m.a[1] * g.fit];
      const [bx, by] = [g.x0 + m.b[0] * g.fit, g.y0 + m.b[1] * g.fit];
      ctx.strokeStyle = "#ffeb3b";
      ctx.beginPath();
      ctx.moveTo(ax, ay);
      ctx.lineTo(bx, by);
      ctx.stroke();
      ctx.fillStyle = "#ffeb3b";
      ctx.fillText(lengthText(m), bx + 6, by - 6);
    }
  };

  /** Where the image sits on the canvas: its top-left corner and canvas pixels per image pixel. */
  function geometry() {
    const fit = Math.min(canvas.width / shownImage.naturalWidth, canvas.height / shownImage.naturalHeight) * state.zoom;
    return {
      fit,
      x0: (canvas.width - shownImage.naturalWidth * fit) / 2 + state.panX,
      y0: (canvas.height - shownImage.naturalHeight * fit) / 2 + state.panY,
    };
  }

  /** A measured length in mm from the pixel spacing, or in pixels when the image has none. */
  function lengthText(m) {
    const [row, col] = (current() && current().spacing) || [];
    const dx = m.b[0] - m.a[0];
    const dy = m.b[1] - m.a[1];
    if (row > 0 && col > 0) return `${Math.hypot(dx * col, dy * row).toFixed(1)} mm`;
    return `${Math.hypot(dx, dy).toFixed(0)} px`;
  }

  /** A pointer event's position in image pixels. */
  function imagePoint(e) {
    const r = canvas.getBoundingClientRect();
    const g = geometry();
    return [(e.clientX - r.left - g.x0) / g.fit, (e.clientY - r.top - g.y0) / g.fit];
  }

  const labels = () => {
    const f = current();
    overlay.bl.textContent = state.frames.length ? `${t("slice")} ${state.index + 1} / ${state.frames.length}` : "";
    const win = state.window || (f && f.center !== undefined ? [f.center, f.width] : null);
    overlay.br.textContent = `${win && !isColour(f) ? `${t("ww")} ${Math.round(win[1])}  ${t("wl")} ${Math.round(win[0])}` : ""}  ×${state.zoom.toFixed(2)}`;
    canvas.dataset.index = String(state.index);
    canvas.dataset.total = String(state.frames.length);
    canvas.dataset.window = state.window ? state.window.join(",") : "default";
    slider.value = String(state.index);
  };

  // Only the newest request may paint: a slow old slice never replaces a newer one.
  let wanted = 0;
  const show = async () => {
    const f = current();
    labels();
    if (!f) return;
    const url = urlOf(f);
    const ticket = ++wanted;
    try {
      const img = await cache.get(url);
      if (ticket !== wanted) return;
      shownImage = img;
      canvas.dataset.shown = url;
      draw();
    } catch (e) {
      if (ticket === wanted) toast(e.message, "error");
    }
    const ahead = [];
    for (let d = 1; d <= PREFETCH_AHEAD; d++) {
      for (const i of [state.index + d, state.index - d]) if (i >= 0 && i < state.frames.length) ahead.push(urlOf(state.frames[i]));
    }
    cache.prefetch(ahead);
  };

  const go = (index) => {
    const next = Math.max(0, Math.min(state.frames.length - 1, index));
    if (next === state.index && shownImage) return;
    state.index = next;
    show();
  };

  function setWindow(center, width) {
    state.window = center === null ? null : [Math.round(center), Math.max(1, Math.round(width))];
    show();
  }

  // Cine: steps through the stack (an ultrasound loop at its own frame rate, a CT at 10
  // images/s), waiting for each image so a slow link shows every frame rather than skipping.
  let cine = null;
  function toggleCine() {
    const button = document.getElementById("cine");
    if (cine) {
      clearTimeout(cine);
      cine = null;
      button.textContent = t("cine_play");
      button.classList.remove("active");
      return;
    }
    button.textContent = t("cine_stop");
    button.classList.add("active");
    const step = async () => {
      if (!state.frames.length) return;
      state.index = (state.index + 1) % state.frames.length;
      await show();
      const f = current();
      if (cine) cine = setTimeout(step, Math.max(20, Math.min(1000, (f && f.frameMs) || 100)));
    };
    cine = setTimeout(step, 0);
  }

  function setTool(tool) {
    state.tool = tool;
    for (const b of toolbar.querySelectorAll(".tool")) b.classList.toggle("active", b.dataset.tool === tool);
  }

  function resetView(andWindow) {
    measurements.delete(state.index);
    measureLabel.textContent = "";
    state.zoom = 1;
    state.panX = 0;
    state.panY = 0;
    if (andWindow) setWindow(null, null);
    else {
      labels();
      draw();
    }
  }

  // Mouse: the wheel scrolls the stack (with Ctrl: zooms); a drag does the chosen tool
  // (middle button always pans, right button always zooms).
  canvas.addEventListener("wheel", (e) => {
    e.preventDefault();
    if (e.ctrlKey) {
      state.zoom = Math.max(0.25, Math.min(8, state.zoom * (e.deltaY < 0 ? 1.1 : 1 / 1.1)));
      labels();
      draw();
    } else go(state.index + (e.deltaY > 0 ? 1 : -1));
  });
  canvas.addEventListener("contextmenu", (e) => e.preventDefault());
  let drag = null;
  canvas.addEventListener("pointerdown", (e) => {
    canvas.focus();
    const tool = e.button === 1 ? "pan" : e.button === 2 ? "zoom" : state.tool;
    const f = current();
    const start = state.window || (f && f.center !== undefined ? [f.center, f.width] : [40, 400]);
    drag = { tool, x: e.clientX, y: e.clientY, window: start, zoom: state.zoom, panX: state.panX, panY: state.panY };
    if (tool === "measure" && shownImage) {
      const p = imagePoint(e);
      drag.measurement = { a: p, b: p };
      const list = measurements.get(state.index) || [];
      list.push(drag.measurement);
      measurements.set(state.index, list);
    }
    canvas.setPointerCapture(e.pointerId);
  });
  canvas.addEventListener("pointermove", (e) => {
    if (!drag) return;
    const dx = e.clientX - drag.x;
    const dy = e.clientY - drag.y;
    if (drag.tool === "window") {
      if (isColour(current())) return;
      const step = Math.max(1, drag.window[1] / 256);
      state.window = [Math.round(drag.window[0] + dy * step), Math.max(1, Math.round(drag.window[1] + dx * step))];
      labels();
      dragShow();
    } else if (drag.tool === "measure") {
      if (!drag.measurement) return;
      drag.measurement.b = imagePoint(e);
      measureLabel.textContent = lengthText(drag.measurement);
      draw();
    } else if (drag.tool === "pan") {
      state.panX = drag.panX + dx;
      state.panY = drag.panY + dy;
      draw();
    } else {
      state.zoom = Math.max(0.25, Math.min(8, drag.zoom * Math.exp(-dy / 200)));
      labels();
      draw();
    }
  });
  const endDrag = () => {
    if (drag && drag.tool === "window") show();
    if (drag && drag.measurement) {
      // A click without a drag measures nothing.
      const m = drag.measurement;
      if (Math.hypot(m.b[0] - m.a[0], m.b[1] - m.a[1]) < 1) {
        measurements.set(state.index, (measurements.get(state.index) || []).filter((x) => x !== m));
        draw();
      }
    }
    drag = null;
  };
  canvas.addEventListener("pointerup", endDrag);
  canvas.addEventListener("pointercancel", endDrag);
  // While dragging the window, ask for the current slice at most every 120 ms.
  let dragTimer = null;
  const dragShow = () => {
    if (dragTimer) return;
    dragTimer = setTimeout(() => {
      dragTimer = null;
      show();
    }, 120);
  };

  const onKey = (e) => {
    if (e.target instanceof HTMLElement && e.target.closest("input, textarea, select, [contenteditable]")) return;
    const moves = { ArrowDown: 1, ArrowRight: 1, ArrowUp: -1, ArrowLeft: -1, PageDown: 10, PageUp: -10 };
    if (e.key in moves) go(state.index + moves[e.key]);
    else if (e.key === "Home") go(0);
    else if (e.key === "End") go(state.frames.length - 1);
    else if (/^[1-5]$/.test(e.key)) {
      const [, c, w] = PRESETS[Number(e.key) - 1];
      setWindow(c, w);
    } else if (e.key === "0") setWindow(null, null);
    // Space on a focused button presses that button; elsewhere it plays or stops cine.
    else if (e.key === " " && !(e.target instanceof HTMLButtonElement)) toggleCine();
    else if (e.key === "Escape" && (measurements.get(state.index) || []).length) {
      measurements.get(state.index).pop();
      measureLabel.textContent = "";
      draw();
    }
    else return;
    e.preventDefault();
  };
  document.addEventListener("keydown", onKey);
  slider.addEventListener("input", () => go(Number(slider.value)));
  const resize = new ResizeObserver(draw);
  resize.observe(stage);

  async function openSeries(studyUid, seriesUid, button) {
    for (const b of seriesList.querySelectorAll(".series")) b.classList.toggle("active", b === button);
    state.base = `/dicomweb/studies/${studyUid}/series/${seriesUid}`;
    state.series = seriesUid;
    const metadata = await api(`${state.base}/metadata`);
    state.frames = framesOf(metadata);
    measurements = new Map();
    state.index = 0;
    shownImage = null;
    slider.max = String(Math.max(0, state.frames.length - 1));
    const f = current();
    overlay.tr.textContent = button ? button.dataset.description || "" : "";
    if (isColour(f)) state.window = null;
    resetView(false);
    await show();
  }

  async function openStudy(studyUid, prior) {
    state.study = studyUid;
    const series = await api(`/dicomweb/studies/${studyUid}/series`);
    series.sort((a, b) => (num(attr(a, "00200011")) ?? 0) - (num(attr(b, "00200011")) ?? 0));
    const buttons = series.map((s) => {
      const uid = attr(s, "0020000E");
      const desc = [attr(s, "00080060"), attr(s, "0008103E")].filter(Boolean).join(" ");
      const n = attr(s, "00201209");
      const b = h(
        "button",
        { class: "series", dataset: { series: uid, description: desc } },
        h("img", { src: `/dicomweb/studies/${studyUid}/series/${uid}/thumbnail`, alt: "", loading: "lazy" }),
        h("span", {}, desc || uid, n ? h("small", {}, t("images_n", n)) : null),
      );
      b.addEventListener("click", () => openSeries(studyUid, uid, b).catch((e) => toast(e.message, "error")));
      return b;
    });
    fill(seriesList, prior ? h("button", { class: "link", onclick: () => openStudy(exam.study_uid, false) }, "← ", t("back_to_current")) : null, buttons);
    if (buttons.length) await openSeries(studyUid, buttons[0].dataset.series, buttons[0]);
  }

  async function loadPriors() {
    if (!exam.patient_id) return;
    const q = new URLSearchParams({ PatientID: exam.patient_id, limit: "20" });
    const studies = await api(`/dicomweb/studies?${q}`);
    const others = studies.filter((s) => attr(s, "0020000D") !== exam.study_uid);
    fill(
      priors,
      others.length
        ? others.map((s) => {
            const uid = attr(s, "0020000D");
            return h(
              "button",
              { class: "prior", dataset: { study: uid }, onclick: () => openStudy(uid, true).catch((e) => toast(e.message, "error")) },
              `${fmtDicomDate(attr(s, "00080020"))} ${attrs(s, "00080061").join("/")} ${attr(s, "00081030") || ""}`,
            );
          })
        : h("p", { class: "muted" }, t("no_priors")),
    );
  }

  overlay.tl.textContent = `${personName(exam.patient_name)} ${exam.patient_id || ""}`;
  setTool("window");
  await openStudy(exam.study_uid, false);
  loadPriors().catch((e) => fill(priors, h("p", { class: "error" }, e.message)));
  return () => {
    document.removeEventListener("keydown", onKey);
    if (cine) clearTimeout(cine);
    cine = null;
    resize.disconnect();
    cache.prefetch([]);
  };
}
