// MECCA interactive segmentation page. Plain JS, no build step, no external resources.
//
// Volumes arrive as uint8 bytes in the canonical (D, H, W) order of the server
// (D: inferior->superior, H: posterior->anterior, W: left->right), C order. Results arrive
// as uint8 (4, d, h, w) maps of the region-of-interest box: probability, confidence,
// advice rank, segmentation. Clicks are sent as canonical voxels [d, h, w].
"use strict";

(() => {
  // View geometry: the slice axis, the screen x / y axes and whether they run backwards.
  // Axial: patient right on the right, anterior up; coronal: right on the right, superior
  // up; sagittal: anterior on the left, superior up.
  const VIEWS = [
    { fixed: 0, h: 2, hFlip: false, v: 1, vFlip: true, edges: ["L", "R", "A", "P"] },
    { fixed: 1, h: 2, hFlip: false, v: 0, vFlip: true, edges: ["L", "R", "S", "I"] },
    { fixed: 2, h: 1, hFlip: true, v: 0, vFlip: true, edges: ["A", "P", "S", "I"] },
  ];
  const COLOR = {
    seg: "#3ddc84", advice: "#ff9f1c", ref: "#e056fd", roi: "#4cc9f0",
    click: "#4cc9f0", bgClick: "#f8961e", cross: "rgba(255,255,255,0.22)", text: "rgba(255,255,255,0.55)",
  };
  const PROB_RGB = [40, 140, 255];
  const ADVICE_RGB = [255, 159, 28];

  const $ = (sel, root = document) => root.querySelector(sel);
  const ui = {
    sid: null, info: null, st: null, dims: null, spacing: null,
    image: null, reference: null, maps: null, slices: [0, 0, 0],
    layers: {}, shownAt: null, busy: 0, views: [],
  };
  window.meccaUI = ui; // handy in the browser console and for end-to-end tests

  // ------------------------------------------------------------------ server calls
  async function api(method, path, body, binary = false) {
    const opts = { method, headers: {} };
    if (body instanceof Blob) {
      opts.body = body;
      opts.headers["Content-Type"] = "application/octet-stream";
    } else if (body !== undefined) {
      opts.body = JSON.stringify(body);
      opts.headers["Content-Type"] = "application/json";
    }
    const resp = await fetch(path, opts);
    if (!resp.ok) {
      let msg = `${resp.status} ${resp.statusText}`;
      try {
        const j = await resp.json();
        msg = Array.isArray(j.detail) ? j.detail.map((d) => d.msg).join("; ") : String(j.detail);
      } catch (_) { /* not JSON */ }
      const err = new Error(msg);
      err.status = resp.status;
      throw err;
    }
    if (binary) return new Uint8Array(await resp.arrayBuffer());
    return resp.status === 204 ? null : resp.json();
  }
  const sessionPath = (p) => `/api/sessions/${ui.sid}/${p}`;

  async function run(task) {
    ui.busy += 1;
    document.body.dataset.busy = "1";
    updateControls();
    try {
      return await task();
    } catch (err) {
      showMessage(err.message || String(err), "error");
      return undefined;
    } finally {
      ui.busy -= 1;
      if (ui.busy === 0) document.body.dataset.busy = "0";
      updateControls();
    }
  }

  function showMessage(text, kind = "info") {
    const el = $("#message");
    el.textContent = text;
    el.className = text ? kind : "";
  }

  // ------------------------------------------------------------------ state
  async function applyState(st, { image = false, maps = false } = {}) {
    ui.st = st;
    if (!st.loaded) return;
    if (image) {
      ui.dims = st.shape;
      ui.spacing = st.spacing;
      ui.image = await api("GET", sessionPath("image"), undefined, true);
      ui.slices = ui.dims.map((n) => Math.floor(n / 2));
      VIEWS.forEach((V, i) => {
        const slider = ui.views[i].slider;
        slider.max = String(ui.dims[V.fixed] - 1);
        slider.value = String(ui.slices[V.fixed]);
      });
    }
    if (image || st.reference !== (ui.referenceName ?? null)) {
      ui.reference = st.reference ? await api("GET", sessionPath("reference"), undefined, true) : null;
      ui.referenceName = st.reference;
    }
    if (maps || image) {
      ui.maps = st.result ? splitMaps(await api("GET", sessionPath("maps"), undefined, true), st.result.box) : null;
    }
    renderPanels();
    renderAll();
  }

  function splitMaps(bytes, box) {
    const size = box.map(([a, b]) => b - a);
    const n = size[0] * size[1] * size[2];
    return {
      box, size,
      prob: bytes.subarray(0, n), conf: bytes.subarray(n, 2 * n),
      advice: bytes.subarray(2 * n, 3 * n), seg: bytes.subarray(3 * n, 4 * n),
    };
  }

  // ------------------------------------------------------------------ rendering
  function renderAll() {
    ui.views.forEach((_, i) => renderView(i));
  }

  function renderView(i) {
    const view = ui.views[i];
    const canvas = view.canvas;
    const ctx = canvas.getContext("2d");
    const dpr = window.devicePixelRatio || 1;
    const cw = Math.max(1, Math.round(canvas.clientWidth * dpr));
    const ch = Math.max(1, Math.round(canvas.clientHeight * dpr));
    if (canvas.width !== cw || canvas.height !== ch) { canvas.width = cw; canvas.height = ch; }
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#05070a";
    ctx.fillRect(0, 0, cw, ch);
    if (!ui.image) { view.geo = null; return; }

    const V = VIEWS[i];
    const [, H, W] = ui.dims;
    const nx = ui.dims[V.h], ny = ui.dims[V.v], s = ui.slices[V.fixed];
    view.label.textContent = `${s + 1} / ${ui.dims[V.fixed]}`;
    const L = ui.layers, maps = ui.maps;
    const seg = new Uint8Array(nx * ny), adv = new Uint8Array(nx * ny), ref = new Uint8Array(nx * ny);
    const off = view.offscreen;
    if (off.width !== nx || off.height !== ny) { off.width = nx; off.height = ny; }
    const octx = off.getContext("2d");
    const pixels = octx.createImageData(nx, ny);
    const px = pixels.data;
    const c = [0, 0, 0];
    c[V.fixed] = s;
    let box = null, bs = null;
    if (maps) { box = maps.box; bs = maps.size; }
    for (let y = 0; y < ny; y++) {
      c[V.v] = V.vFlip ? ny - 1 - y : y;
      for (let x = 0; x < nx; x++) {
        c[V.h] = V.hFlip ? nx - 1 - x : x;
        const k = y * nx + x, idx = (c[0] * H + c[1]) * W + c[2];
        let r = ui.image[idx], g = r, b = r;
        if (ui.reference) ref[k] = ui.reference[idx];
        if (box && c[0] >= box[0][0] && c[0] < box[0][1] && c[1] >= box[1][0] && c[1] < box[1][1]
            && c[2] >= box[2][0] && c[2] < box[2][1]) {
          const m = ((c[0] - box[0][0]) * bs[1] + (c[1] - box[1][0])) * bs[2] + (c[2] - box[2][0]);
          seg[k] = maps.seg[m];
          adv[k] = maps.advice[m];
          if (L.probability) {
            const a = 0.5 * maps.prob[m] / 255;
            r += a * (PROB_RGB[0] - r); g += a * (PROB_RGB[1] - g); b += a * (PROB_RGB[2] - b);
          }
          if (L.confidence) {
            const u = 1 - maps.conf[m] / 255, a = 0.75 * u;
            r += a * (255 - r); g += a * (40 + 200 * (1 - u) - g); b += a * (30 - b);
          }
          if (L.advice && adv[k]) {
            const a = 0.22;
            r += a * (ADVICE_RGB[0] - r); g += a * (ADVICE_RGB[1] - g); b += a * (ADVICE_RGB[2] - b);
          }
        }
        const o = 4 * k;
        px[o] = r; px[o + 1] = g; px[o + 2] = b; px[o + 3] = 255;
      }
    }
    octx.putImageData(pixels, 0, 0);

    // Fit the slice into the canvas with its physical aspect ratio (spacing in mm).
    const sx = ui.spacing[V.h], sy = ui.spacing[V.v];
    const scale = Math.min(cw / (nx * sx), ch / (ny * sy));
    const geo = { nx, ny, pw: scale * sx, ph: scale * sy };
    geo.ox = (cw - nx * geo.pw) / 2;
    geo.oy = (ch - ny * geo.ph) / 2;
    view.geo = geo;
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(off, geo.ox, geo.oy, nx * geo.pw, ny * geo.ph);

    const lw = Math.max(1.5, 1.5 * dpr);
    if (L.reference && ui.reference) stroke(ctx, edges(ref, nx, ny, 1, geo), COLOR.ref, lw, [4 * dpr, 3 * dpr]);
    if (L.contour && maps) stroke(ctx, edges(seg, nx, ny, 1, geo), COLOR.seg, lw);
    let drawn = 0;
    if (L.advice && maps) drawn = drawAdvice(ctx, adv, geo, dpr, lw);
    if (L.roi) drawRoi(ctx, V, geo, s, dpr);
    if (L.crosshair) drawCrosshair(ctx, V, geo, dpr);
    if (L.clicks) drawClicks(ctx, V, geo, s, dpr);
    drawEdgeLetters(ctx, V, geo, dpr, cw, ch);
    canvas.dataset.adviceDrawn = String(drawn);
    canvas.dataset.renders = String(Number(canvas.dataset.renders || 0) + 1);
  }

  // Boundary of the pixels equal to `value` as a path of pixel edges in screen space.
  function edges(mask, nx, ny, value, geo) {
    const path = new Path2D();
    const X = (x) => geo.ox + x * geo.pw, Y = (y) => geo.oy + y * geo.ph;
    const seg = (x0, y0, x1, y1) => { path.moveTo(X(x0), Y(y0)); path.lineTo(X(x1), Y(y1)); };
    for (let y = 0; y < ny; y++) {
      for (let x = 0; x < nx; x++) {
        const k = y * nx + x;
        if (mask[k] !== value) continue;
        if (x === 0 || mask[k - 1] !== value) seg(x, y, x, y + 1);
        if (x === nx - 1 || mask[k + 1] !== value) seg(x + 1, y, x + 1, y + 1);
        if (y === 0 || mask[k - nx] !== value) seg(x, y, x + 1, y);
        if (y === ny - 1 || mask[k + nx] !== value) seg(x, y + 1, x + 1, y + 1);
      }
    }
    return path;
  }

  function stroke(ctx, path, color, width, dash = []) {
    ctx.save();
    ctx.strokeStyle = color;
    ctx.lineWidth = width;
    ctx.setLineDash(dash);
    ctx.stroke(path);
    ctx.restore();
  }

  // Outline every advice region in the slice and label it with its rank; returns how many.
  function drawAdvice(ctx, adv, geo, dpr, lw) {
    const sums = new Map();
    for (let y = 0; y < geo.ny; y++) {
      for (let x = 0; x < geo.nx; x++) {
        const r = adv[y * geo.nx + x];
        if (!r) continue;
        const acc = sums.get(r) || [0, 0, 0];
        acc[0] += x + 0.5; acc[1] += y + 0.5; acc[2] += 1;
        sums.set(r, acc);
      }
    }
    const radius = 8 * dpr;
    for (const [rank, [sx, sy, n]] of sums) {
      stroke(ctx, edges(adv, geo.nx, geo.ny, rank, geo), COLOR.advice, lw);
      const X = geo.ox + (sx / n) * geo.pw, Y = geo.oy + (sy / n) * geo.ph;
      ctx.beginPath();
      ctx.arc(X, Y, radius, 0, 2 * Math.PI);
      ctx.fillStyle = COLOR.advice;
      ctx.fill();
      ctx.fillStyle = "#1b1206";
      ctx.font = `bold ${Math.round(11 * dpr)}px system-ui, sans-serif`;
      ctx.textAlign = "center";
      ctx.textBaseline = "middle";
      ctx.fillText(String(rank), X, Y + 0.5 * dpr);
    }
    return sums.size;
  }

  // Screen position of the centre of voxel coordinate `value` along a view axis.
  function screenX(V, geo, value) {
    const x = V.hFlip ? geo.nx - 1 - value : value;
    return geo.ox + (x + 0.5) * geo.pw;
  }
  function screenY(V, geo, value) {
    const y = V.vFlip ? geo.ny - 1 - value : value;
    return geo.oy + (y + 0.5) * geo.ph;
  }

  function drawRoi(ctx, V, geo, s, dpr) {
    const roi = ui.st && ui.st.roi;
    if (!roi || s < roi[V.fixed][0] || s >= roi[V.fixed][1]) return;
    const xs = [screenX(V, geo, roi[V.h][0]) - geo.pw / 2, screenX(V, geo, roi[V.h][1] - 1) + geo.pw / 2];
    const ys = [screenY(V, geo, roi[V.v][0]) - geo.ph / 2, screenY(V, geo, roi[V.v][1] - 1) + geo.ph / 2];
    const x0 = Math.min(...xs), y0 = Math.min(...ys);
    ctx.save();
    ctx.strokeStyle = COLOR.roi;
    ctx.lineWidth = 1.2 * dpr;
    ctx.setLineDash([6 * dpr, 4 * dpr]);
    ctx.strokeRect(x0, y0, Math.max(...xs) - x0, Math.max(...ys) - y0);
    ctx.restore();
  }

  function drawCrosshair(ctx, V, geo, dpr) {
    const X = screenX(V, geo, ui.slices[V.h]), Y = screenY(V, geo, ui.slices[V.v]);
    ctx.save();
    ctx.strokeStyle = COLOR.cross;
    ctx.lineWidth = dpr;
    ctx.beginPath();
    ctx.moveTo(X, geo.oy); ctx.lineTo(X, geo.oy + geo.ny * geo.ph);
    ctx.moveTo(geo.ox, Y); ctx.lineTo(geo.ox + geo.nx * geo.pw, Y);
    ctx.stroke();
    ctx.restore();
  }

  function drawClicks(ctx, V, geo, s, dpr) {
    const st = ui.st;
    const groups = [[st.clicks, false, st.clicks_foreground], [st.pending, true, st.pending_foreground]];
    const radius = Math.max(3.5 * dpr, Math.min(geo.pw, geo.ph) * 0.45);
    ctx.save();
    ctx.lineWidth = 1.6 * dpr;
    for (const [points, fresh, sides] of groups) {
      for (const [j, p] of points.entries()) {
        if (p[V.fixed] !== s) continue;
        const color = st.split_hints && sides && sides[j] === false ? COLOR.bgClick : COLOR.click;
        const X = screenX(V, geo, p[V.h]), Y = screenY(V, geo, p[V.v]);
        ctx.beginPath();
        ctx.arc(X, Y, radius, 0, 2 * Math.PI);
        ctx.fillStyle = fresh ? color : "rgba(0,0,0,0.35)";
        ctx.strokeStyle = fresh ? "#ffffff" : color;
        ctx.fill();
        ctx.stroke();
      }
    }
    ctx.restore();
  }

  function drawEdgeLetters(ctx, V, geo, dpr, cw, ch) {
    ctx.save();
    ctx.fillStyle = COLOR.text;
    ctx.font = `${Math.round(11 * dpr)}px system-ui, sans-serif`;
    ctx.textBaseline = "middle";
    const pad = 6 * dpr;
    ctx.textAlign = "left"; ctx.fillText(V.edges[0], pad, ch / 2);
    ctx.textAlign = "right"; ctx.fillText(V.edges[1], cw - pad, ch / 2);
    ctx.textAlign = "center";
    ctx.textBaseline = "top"; ctx.fillText(V.edges[2], cw / 2, pad);
    ctx.textBaseline = "bottom"; ctx.fillText(V.edges[3], cw / 2, ch - pad);
    ctx.restore();
  }

  // ------------------------------------------------------------------ side panels
  function renderPanels() {
    const st = ui.st;
    $("#case-name").textContent = st && st.loaded
      ? `${st.name}  ·  ${st.shape.join(" × ")} voxels  ·  ${st.spacing.map((v) => v.toFixed(2)).join(" × ")} mm`
      : "no volume loaded";
    $("#steps-done").textContent = st && st.loaded ? String(st.steps_done) : "0";
    const n = st && st.loaded ? st.pending.length : 0;
    $("#pending").textContent = `${n} new click${n === 1 ? "" : "s"}` + (n ? " (used at the next Step)" : "");

    const body = $("#history tbody");
    body.replaceChildren();
    const history = (st && st.history) || [];
    for (const r of history) {
      const tr = document.createElement("tr");
      const cells = [
        r.step, r.clicks, r.dice == null ? "–" : r.dice.toFixed(3),
        r.user_ms == null ? "–" : `${(r.user_ms / 1000).toFixed(1)} s`, `${Math.round(r.compute_ms)} ms`,
      ];
      for (const v of cells) {
        const td = document.createElement("td");
        td.textContent = String(v);
        tr.appendChild(td);
      }
      body.appendChild(tr);
    }
    $("#history-hint").hidden = history.length > 0;
    const last = history[history.length - 1];
    $("#compute-time").textContent = last ? `${Math.round(last.compute_ms)} ms` : "–";

    const list = $("#advice-list");
    list.replaceChildren();
    const regions = (st && st.result && st.result.regions) || [];
    for (const region of regions) {
      const li = document.createElement("li");
      li.dataset.rank = String(region.rank);
      li.tabIndex = 0;
      li.title = "show this region in all three views";
      const badge = document.createElement("span");
      badge.className = "badge";
      badge.textContent = String(region.rank);
      const text = document.createElement("span");
      text.textContent = `confidence ${region.mean_confidence.toFixed(2)} · ${region.size} voxels`;
      li.append(badge, text);
      const go = () => { ui.slices = region.voxel.slice(); syncSliders(); renderAll(); };
      li.addEventListener("click", go);
      li.addEventListener("keydown", (e) => { if (e.key === "Enter") go(); });
      list.appendChild(li);
    }
    $("#advice-hint").hidden = regions.length > 0;
  }

  function updateControls() {
    const st = ui.st, loaded = !!(st && st.loaded), idle = ui.busy === 0;
    $("#step").disabled = !(idle && loaded && (st.pending.length > 0 || st.roi));
    $("#undo").disabled = !(idle && loaded && (st.pending.length > 0 || st.steps_done > 0));
    $("#export").disabled = !(idle && loaded && st.result);
    $("#upload-reference").disabled = !(idle && loaded);
    $("#upload-image").disabled = !idle;
    $("#load-case").disabled = !(idle && ui.info && ui.info.cases.length);
  }

  function syncSliders() {
    VIEWS.forEach((V, i) => { ui.views[i].slider.value = String(ui.slices[V.fixed]); });
  }

  function tickTimer() {
    const el = $("#user-timer");
    if (ui.shownAt == null || !(ui.st && ui.st.loaded)) { el.textContent = "–"; return; }
    el.textContent = `${((performance.now() - ui.shownAt) / 1000).toFixed(1)} s`;
  }

  function markShown() {
    // The user's time runs from the moment the new result is on screen.
    requestAnimationFrame(() => { ui.shownAt = performance.now(); });
  }

  // ------------------------------------------------------------------ actions
  function voxelAt(i, event) {
    const view = ui.views[i], geo = view.geo;
    if (!geo) return null;
    const rect = view.canvas.getBoundingClientRect();
    const dpr = view.canvas.width / rect.width;
    const x = Math.floor(((event.clientX - rect.left) * dpr - geo.ox) / geo.pw);
    const y = Math.floor(((event.clientY - rect.top) * dpr - geo.oy) / geo.ph);
    if (x < 0 || y < 0 || x >= geo.nx || y >= geo.ny) return null;
    const V = VIEWS[i], c = [0, 0, 0];
    c[V.fixed] = ui.slices[V.fixed];
    c[V.h] = V.hFlip ? geo.nx - 1 - x : x;
    c[V.v] = V.vFlip ? geo.ny - 1 - y : y;
    return c;
  }

  const actions = {
    async loadCase() {
      const name = $("#case-select").value;
      if (!name) return;
      showMessage(`loading ${name} …`);
      const st = await api("POST", sessionPath("case"), { name });
      await applyState(st, { image: true });
      showMessage(`${name} loaded: click on the object's boundary, then press Step`);
      markShown();
    },
    async upload(file, kind) {
      if (file.size > ui.info.max_upload_bytes) {
        throw new Error(`${file.name}: ${(file.size / 2 ** 20).toFixed(1)} MiB is over the upload limit of `
          + `${(ui.info.max_upload_bytes / 2 ** 20).toFixed(0)} MiB`);
      }
      showMessage(`uploading ${file.name} …`);
      const path = sessionPath(kind === "image" ? "upload" : "reference");
      const st = await api("POST", `${path}?name=${encodeURIComponent(file.name)}`, file);
      await applyState(st, { image: kind === "image" });
      showMessage(kind === "image" ? `${file.name} loaded` : `${file.name}: reference label for Dice`);
      if (kind === "image") markShown();
    },
    async click(voxel, foreground) {
      const st = await api("POST", sessionPath("clicks"), { voxel, foreground });
      ui.st = st;
      renderPanels();
      renderAll();
    },
    async step() {
      const userMs = ui.shownAt == null ? null : performance.now() - ui.shownAt;
      showMessage("running one interaction step …");
      const t0 = performance.now();
      const st = await api("POST", sessionPath("step"), { user_ms: userMs });
      await applyState(st, { maps: true });
      const last = st.history[st.history.length - 1];
      const dice = last.dice == null ? "" : `, Dice ${last.dice.toFixed(3)}`;
      showMessage(`step ${st.steps_done} done in ${Math.round(performance.now() - t0)} ms${dice}`);
      markShown();
    },
    async undo() {
      const st = await api("POST", sessionPath("undo"));
      await applyState(st, { maps: true });
      showMessage("");
    },
    async exportSegmentation() {
      const resp = await fetch(sessionPath("export"));
      if (!resp.ok) throw new Error((await resp.json()).detail);
      const name = /filename="([^"]+)"/.exec(resp.headers.get("Content-Disposition") || "");
      const url = URL.createObjectURL(await resp.blob());
      const a = document.createElement("a");
      a.href = url;
      a.download = name ? name[1] : "segmentation.nii.gz";
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
      showMessage(`exported ${a.download} (original grid and affine)`);
    },
  };

  // ------------------------------------------------------------------ wiring
  function bind() {
    document.querySelectorAll(".view").forEach((el, i) => {
      const view = {
        canvas: $("canvas", el), slider: $(".slider", el), label: $(".slice-label", el),
        offscreen: document.createElement("canvas"), geo: null,
      };
      ui.views.push(view);
      const V = VIEWS[i];
      view.slider.addEventListener("input", () => {
        ui.slices[V.fixed] = Number(view.slider.value);
        renderAll();
      });
      view.canvas.addEventListener("click", (event) => {
        if (ui.busy || !(ui.st && ui.st.loaded)) return;
        const voxel = voxelAt(i, event);
        if (voxel) run(() => actions.click(voxel, !event.shiftKey));  // shift: background
      });
      view.canvas.addEventListener("wheel", (event) => {
        if (!ui.image) return;
        event.preventDefault();
        const n = ui.dims[V.fixed];
        ui.slices[V.fixed] = Math.min(n - 1, Math.max(0, ui.slices[V.fixed] + Math.sign(event.deltaY)));
        syncSliders();
        renderAll();
      }, { passive: false });
      new ResizeObserver(() => renderView(i)).observe(view.canvas);
    });
    document.querySelectorAll("[data-layer]").forEach((box) => {
      ui.layers[box.dataset.layer] = box.checked;
      box.addEventListener("change", () => { ui.layers[box.dataset.layer] = box.checked; renderAll(); });
    });
    $("#load-case").addEventListener("click", () => run(actions.loadCase));
    $("#case-select").addEventListener("change", () => run(actions.loadCase));
    $("#upload-image").addEventListener("click", () => $("#image-file").click());
    $("#upload-reference").addEventListener("click", () => $("#reference-file").click());
    for (const [input, kind] of [["#image-file", "image"], ["#reference-file", "reference"]]) {
      $(input).addEventListener("change", (event) => {
        const file = event.target.files[0];
        event.target.value = "";
        if (file) run(() => actions.upload(file, kind));
      });
    }
    $("#step").addEventListener("click", () => run(actions.step));
    $("#undo").addEventListener("click", () => run(actions.undo));
    $("#export").addEventListener("click", () => run(actions.exportSegmentation));
    document.addEventListener("keydown", (event) => {
      if (event.target instanceof HTMLInputElement || event.target instanceof HTMLSelectElement) return;
      if (event.key === "Enter" && !$("#step").disabled) run(actions.step);
      if (event.key.toLowerCase() === "z" && (event.ctrlKey || event.metaKey) && !$("#undo").disabled) {
        event.preventDefault();
        run(actions.undo);
      }
    });
    window.addEventListener("pagehide", () => {
      if (ui.sid) fetch(`/api/sessions/${ui.sid}`, { method: "DELETE", keepalive: true });
    });
    setInterval(tickTimer, 100);
  }

  async function init() {
    bind();
    await run(async () => {
      ui.info = await api("GET", "/api/info");
      const select = $("#case-select");
      if (ui.info.cases.length) {
        select.replaceChildren(new Option("choose a case …", ""),
          ...ui.info.cases.map((name) => new Option(name, name)));
        select.disabled = false;
      }
      const created = await api("POST", "/api/sessions");
      ui.sid = created.session;
      ui.st = created.state;
      renderPanels();
      renderAll();
    });
  }

  init();
})();
