// The web page of the multimodal server: search, look, ask. Plain JS, no build step, no CDN.
// API: /health, /text2image_search, /image2image_search, /vqa/stream, /ask/stream, /images/... (docs/api.md).
"use strict";

const KEY_STORE = "mms-api-key";
const HEALTH_EVERY_MS = 30000;
const $ = (id) => document.getElementById(id);

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const state = {
  thumbnails: true, // false once the server refuses include_image="thumbnail" (older server: base64)
  search: null, // the last search: {endpoint, fields, upload, label}
  shown: new Set(), // image paths in the grid
  objectUrls: [], // blob: URLs of the grid's thumbnails, revoked on a new search
  subject: null, // what the viewer shows: {kind: "library", result} or {kind: "upload", file}
  viewerUrl: null, // blob: URL of the viewer's image
  opener: null, // the element focused before the viewer opened
  keyPrompt: null, // the pending API key prompt, shared by concurrent requests
  sourceUrls: [], // blob: URLs of the library answer's source thumbnails
  videoUrl: null, // blob: URL of the clip the viewer plays (when an API key is needed)
};

// ------------------------------------------------------------------ API calls

function authHeaders() {
  const key = sessionStorage.getItem(KEY_STORE);
  return key ? { Authorization: `Bearer ${key}` } : {};
}

async function errorOf(response) {
  let code = `http_${response.status}`;
  let message = response.statusText || `the server answered ${response.status}`;
  try {
    const body = await response.json();
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || message;
    }
  } catch (_) {
    // not JSON: keep the status text
  }
  return new ApiError(response.status, code, message);
}

// fetch() with the API key; a 401 asks for the key (again) and retries.
async function request(path, init = {}) {
  for (;;) {
    let response;
    try {
      response = await fetch(path, { ...init, headers: { ...(init.headers || {}), ...authHeaders() } });
    } catch (_) {
      throw new ApiError(0, "network_error", "the server cannot be reached: is it running?");
    }
    if (response.status !== 401) {
      if (!response.ok) throw await errorOf(response);
      return response;
    }
    const rejected = Boolean(sessionStorage.getItem(KEY_STORE));
    await askForKey(rejected ? "That key was not accepted: try again." : "");
  }
}

function postJson(path, body) {
  return request(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
}

function postForm(path, fields, file) {
  const form = new FormData();
  for (const [name, value] of Object.entries(fields)) form.append(name, String(value));
  form.append("image", file, file.name || "upload");
  return request(path, { method: "POST", body: form });
}

function askForKey(problem) {
  if (state.keyPrompt) return state.keyPrompt;
  const dialog = $("key-dialog");
  state.keyPrompt = new Promise((resolve, reject) => {
    const help = $("key-help");
    help.textContent = problem || "This server asks for an API key. It is kept in this browser tab only.";
    help.classList.toggle("error", Boolean(problem));
    const input = $("api-key");
    input.value = "";
    const done = () => {
      $("key-form").removeEventListener("submit", submitted);
      dialog.removeEventListener("cancel", cancelled);
      state.keyPrompt = null;
    };
    const submitted = (event) => {
      event.preventDefault();
      const key = input.value.trim();
      if (!key) return;
      sessionStorage.setItem(KEY_STORE, key);
      dialog.close();
      done();
      resolve();
    };
    const cancelled = () => {
      done();
      reject(new ApiError(401, "unauthorized", "this server needs an API key: search again to enter it"));
    };
    $("key-form").addEventListener("submit", submitted);
    dialog.addEventListener("cancel", cancelled);
    dialog.showModal();
    input.focus();
  });
  return state.keyPrompt;
}

// ------------------------------------------------------------------ messages

function showError(element, error, context) {
  const message = error instanceof ApiError ? error.message : String(error && error.message || error);
  element.textContent = context ? `${context}: ${message}` : message;
  element.title = error instanceof ApiError ? `error code: ${error.code}` : "";
  element.hidden = false;
}

function hideError(element) {
  element.hidden = true;
  element.textContent = "";
}

// ------------------------------------------------------------------ status bar

async function loadHealth() {
  const status = $("status");
  try {
    const health = await (await request("/health")).json();
    const size = health.image_library_size;
    const parts = [
      `${size == null ? "?" : size.toLocaleString()} images indexed`,
      `search model ${health.clip_model_loaded ? "loaded" : "not loaded"}`,
      `question model ${health.vqa_model_loaded ? "loaded" : "not loaded"}`,
    ];
    if (health.described_images) parts.push(`${health.described_images.toLocaleString()} described`);
    if (health.read_images) parts.push(`${health.read_images.toLocaleString()} read for text`);
    if (health.device) parts.push(`device: ${health.device}`);
    if (health.index_model && health.clip_model && health.index_model !== health.clip_model) {
      parts.push("the index was built with another model: re-run the indexer");
    }
    status.textContent = parts.join(" · ");
    status.dataset.health = health.status || "unknown";
    status.title = [health.clip_model, health.vqa_model].filter(Boolean).join(" · ");
  } catch (error) {
    status.textContent = `Server status unavailable: ${error.message}`;
    status.dataset.health = "down";
  }
}

// ------------------------------------------------------------------ search

function filterFields() {
  const fields = {};
  const text = (id, name) => {
    const value = $(id).value.trim();
    if (value) fields[name] = value;
  };
  const number = (id, name) => {
    const value = parseInt($(id).value, 10);
    if (value > 0) fields[name] = value;
  };
  text("f-folder", "folder");
  text("f-after", "modified_after");
  text("f-before", "modified_before");
  number("f-width", "min_width");
  number("f-height", "min_height");
  text("f-media", "media");
  if ($("f-dedup").checked) fields.dedup = true;
  return fields;
}

async function postSearch(search, fields) {
  const send = (include) => {
    const all = { ...search.fields, ...fields, include_image: include };
    return search.upload ? postForm(search.endpoint, all, search.upload) : postJson(search.endpoint, all);
  };
  if (state.thumbnails) {
    try {
      return await (await send("thumbnail")).json();
    } catch (error) {
      const refused = (error.status === 400 || error.status === 422) && /include_image/.test(error.message);
      if (!refused) throw error;
      state.thumbnails = false; // a server without thumbnails: fall back to base64 images
    }
  }
  return (await send(true)).json();
}

async function runSearch(search, append = false) {
  const topK = parseInt($("top-k").value, 10) || 20;
  const fields = { top_k: topK, ...filterFields() };
  if (append && state.shown.size) fields.offset = state.shown.size;
  state.search = search;
  hideError($("search-error"));
  const grid = $("grid");
  grid.setAttribute("aria-busy", "true");
  if (!append) $("summary").textContent = "Searching…";
  $("more").hidden = true;
  try {
    const body = await postSearch(search, fields);
    const results = Array.isArray(body.results) ? body.results : [];
    if (!append) clearGrid();
    const added = results.filter((r) => !state.shown.has(r.image));
    added.forEach((result) => grid.append(card(result)));
    $("summary").textContent = summaryText(search, state.shown.size, body.mode);
    $("more").hidden = results.length < topK || added.length === 0;
  } catch (error) {
    if (!append) {
      clearGrid();
      $("summary").textContent = "";
    }
    showError($("search-error"), error, "Search failed");
  } finally {
    grid.setAttribute("aria-busy", "false");
  }
}

const MODE_NAMES = { vector: "the photos (CLIP)", text: "words (descriptions, text in photos)", hybrid: "photos and descriptions" };

// The mode is named once descriptions take part, or when the user picked one ("Rank by").
function summaryText(search, count, mode) {
  const named = MODE_NAMES[mode] && (mode !== "vector" || search.fields.mode);
  const ranked = named ? ` · ranked by ${MODE_NAMES[mode]}` : "";
  if (count === 0) return `No photos found ${search.label}${ranked}.`;
  return `${count} ${count === 1 ? "photo" : "photos"} ${search.label}, best match first${ranked}`;
}

// The VLM-written description and visible text of a result (indexer --describe), under its thumbnail.
function describedLines(result) {
  const lines = [];
  if (result.description) {
    const line = document.createElement("span");
    line.className = "description";
    line.textContent = result.description;
    lines.push(line);
  }
  if (result.visible_text) {
    const line = document.createElement("span");
    line.className = "visible-text";
    line.textContent = `“${result.visible_text}”`;
    line.title = "text visible in the photo";
    lines.push(line);
  }
  return lines;
}

// A video result is a moment: its frame is the thumbnail, its time is shown, a click plays the clip from it.
function momentLines(result, button) {
  if (result.media !== "video") return [];
  const line = document.createElement("span");
  line.className = "moment";
  line.textContent = `▶ ${clock(result.t)}`;
  line.title = `video moment ${clock(result.start)}–${clock(result.end)}`;
  button.setAttribute("aria-label", `${button.getAttribute("aria-label")}, video at ${clock(result.t)}`);
  return [line];
}

function clock(seconds) {
  const whole = Math.floor(seconds || 0);
  const minutes = Math.floor(whole / 60);
  return `${minutes}:${String(whole % 60).padStart(2, "0")}`;
}

// The clip itself from the moment's time: straight from its URL (Range requests) when no API key is needed,
// else fetched whole with the key (a <video> cannot send it) and played from a blob: URL.
async function playMoment(result) {
  const video = $("viewer-video");
  video.hidden = false;
  $("viewer-img").hidden = true;
  const start = () => {
    video.currentTime = result.t || 0;
    video.play().catch(() => {}); // autoplay may be refused: the controls are there
  };
  video.addEventListener("loadedmetadata", start, { once: true });
  if (!sessionStorage.getItem(KEY_STORE)) {
    video.src = result.video_url || `/images/${encodeURI(result.image)}`;
    return;
  }
  const blob = await (await request(result.video_url || `/images/${encodeURI(result.image)}`)).blob();
  state.videoUrl = URL.createObjectURL(blob);
  video.src = state.videoUrl;
}

function stopVideo() {
  const video = $("viewer-video");
  video.pause();
  video.removeAttribute("src");
  video.load();
  video.hidden = true;
  if (state.videoUrl) URL.revokeObjectURL(state.videoUrl);
  state.videoUrl = null;
}

// The lines a text search matched in the text read in a photo (indexer --ocr): their words under the thumbnail.
function readLines(result) {
  const matched = Array.isArray(result.matched_lines) ? result.matched_lines : [];
  if (!matched.length) return [];
  const line = document.createElement("span");
  line.className = "read-text";
  line.textContent = matched.map((m) => `“${m.text}”`).join(" ");
  line.title = `text read in the photo:\n${result.read_text || ""}`;
  return [line];
}

// The thumbnail with the matched lines' boxes drawn over it (fractions of the photo, placed once the image's
// shape is known: the thumbnail is letterboxed in a square). Without matched lines, the thumbnail alone.
function readBoxes(img, result) {
  const matched = Array.isArray(result.matched_lines) ? result.matched_lines : [];
  if (!matched.length) return img;
  const frame = document.createElement("span");
  frame.className = "thumb";
  const overlay = document.createElement("span");
  overlay.className = "read-boxes";
  overlay.setAttribute("aria-hidden", "true");
  for (const m of matched) {
    if (!Array.isArray(m.box) || m.box.length !== 4) continue;
    const [x0, y0, x1, y1] = m.box.map(Number);
    const box = document.createElement("span");
    box.className = "read-box";
    box.title = m.text;
    box.style.left = `${x0 * 100}%`;
    box.style.top = `${y0 * 100}%`;
    box.style.width = `${Math.max(0, x1 - x0) * 100}%`;
    box.style.height = `${Math.max(0, y1 - y0) * 100}%`;
    overlay.append(box);
  }
  const place = () => {
    const w = img.naturalWidth, h = img.naturalHeight;
    if (!w || !h) return;
    const wide = w >= h;
    overlay.style.width = wide ? "100%" : `${(w / h) * 100}%`;
    overlay.style.height = wide ? `${(h / w) * 100}%` : "100%";
    overlay.style.left = wide ? "0" : `${(100 - (w / h) * 100) / 2}%`;
    overlay.style.top = wide ? `${(100 - (h / w) * 100) / 2}%` : "0";
    overlay.classList.add("placed");
  };
  img.addEventListener("load", place);
  frame.append(img, overlay);
  return frame;
}

function clearGrid() {
  state.objectUrls.forEach((url) => URL.revokeObjectURL(url));
  state.objectUrls = [];
  state.shown.clear();
  $("grid").replaceChildren();
}

function card(result) {
  state.shown.add(result.image);
  const item = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.className = "card";
  button.dataset.image = result.image;
  const score = typeof result.score === "number" ? result.score.toFixed(3) : "?";
  button.setAttribute("aria-label", `${result.image}, score ${score}: open`);
  const img = document.createElement("img");
  img.alt = result.image;
  img.loading = "lazy";
  img.decoding = "async";
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = result.image.split("/").pop();
  name.title = result.image;
  const scoreText = document.createElement("span");
  scoreText.className = "score";
  scoreText.textContent = score;
  button.append(readBoxes(img, result), name, scoreText, ...momentLines(result, button), ...describedLines(result),
                 ...readLines(result));
  button.addEventListener("click", () => openViewer({ kind: "library", result }, button));
  item.append(button);
  showImage(img, result.thumbnail_url || dataUrl(result), state.objectUrls);
  return item;
}

function dataUrl(result) {
  if (!result.image_base64) return null;
  const ext = result.image.split(".").pop().toLowerCase();
  const types = { jpg: "jpeg", jpeg: "jpeg", png: "png", webp: "webp", gif: "gif", bmp: "bmp" };
  return `data:image/${types[ext] || "png"};base64,${result.image_base64}`;
}

// An <img> cannot send the API key: API images come through fetch() as blob: URLs.
async function showImage(img, source, urls) {
  if (!source) {
    img.classList.add("missing");
    return;
  }
  if (source.startsWith("data:")) {
    img.src = source;
    return;
  }
  try {
    const blob = await (await request(source)).blob();
    const url = URL.createObjectURL(blob);
    urls.push(url);
    img.src = url;
  } catch (error) {
    img.classList.add("missing");
    img.title = `not available: ${error.message}`;
  }
}

// ------------------------------------------------------------------ viewer: look, ask, find similar

function openViewer(subject, opener) {
  state.subject = subject;
  state.opener = opener || document.activeElement;
  const img = $("viewer-img");
  releaseViewerImage();
  img.removeAttribute("src");
  img.hidden = false;
  stopVideo();
  $("viewer-noimage").hidden = true;
  $("answer").hidden = true;
  $("answer").textContent = "";
  delete $("answer").dataset.state;
  hideError($("viewer-error"));
  if (subject.kind === "library") {
    const { result } = subject;
    $("viewer-title").textContent = result.image;
    const described = [result.description, result.visible_text && `“${result.visible_text}”`].filter(Boolean);
    $("viewer-meta").textContent = [`In your library · score ${result.score.toFixed(3)}`, ...described].join(" · ");
    img.alt = result.image;
    if (result.media === "video") {
      $("viewer-meta").textContent += ` · video moment at ${clock(result.t)}`;
      playMoment(result).catch((error) => showError($("viewer-error"), error, "Cannot play the video"));
    } else {
      const urls = [];
      showImage(img, result.image_url || result.thumbnail_url || dataUrl(result), urls)
        .then(() => { state.viewerUrl = urls[0] || null; });
    }
  } else {
    const { file } = subject;
    $("viewer-title").textContent = file.name || "Your photo";
    $("viewer-meta").textContent = `Your upload · ${formatBytes(file.size)} · not added to the library`;
    img.alt = `your upload ${file.name}`;
    state.viewerUrl = URL.createObjectURL(file);
    img.src = state.viewerUrl;
  }
  $("viewer").showModal();
  $("question").focus();
}

function releaseViewerImage() {
  if (state.viewerUrl) URL.revokeObjectURL(state.viewerUrl);
  state.viewerUrl = null;
}

function formatBytes(bytes) {
  if (bytes < 1024) return `${bytes} bytes`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

async function ask(question) {
  const subject = state.subject;
  const answer = $("answer");
  const button = $("ask-form").querySelector("button");
  hideError($("viewer-error"));
  answer.textContent = "";
  answer.hidden = false;
  answer.dataset.state = "streaming";
  answer.setAttribute("aria-busy", "true");
  button.disabled = true;
  try {
    const response = subject.kind === "upload"
      ? await postForm("/vqa/stream", { question }, subject.file)
      : await postJson("/vqa/stream", momentFields({ question, image_id: subject.result.image }, subject.result));
    await readInto(response, answer);
    if (!answer.textContent.trim()) answer.textContent = "(no answer)";
    answer.dataset.state = "done";
  } catch (error) {
    answer.hidden = true;
    answer.dataset.state = "error";
    showError($("viewer-error"), error, "Could not answer");
  } finally {
    answer.setAttribute("aria-busy", "false");
    button.disabled = false;
  }
}

// A question about a video result asks about its moment (the model sees the frames around `t`).
function momentFields(fields, result) {
  return result.media === "video" ? { ...fields, t: result.t } : fields;
}

// Append the response body to `element` as it arrives.
async function readInto(response, element) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    element.textContent += decoder.decode(value, { stream: true });
  }
  element.textContent += decoder.decode();
}

// ------------------------------------------------------------------ ask the library

const LIBRARY_TOP_K = 3;

// POST /ask/stream: the sources first, the answer as it streams in, then the cited sources marked.
async function askLibrary(question) {
  const answer = $("library-answer");
  const button = $("library-form").querySelector("button");
  hideError($("library-error"));
  clearSources();
  answer.textContent = "";
  answer.hidden = false;
  answer.dataset.state = "streaming";
  answer.setAttribute("aria-busy", "true");
  button.disabled = true;
  try {
    const fields = { question, top_k: LIBRARY_TOP_K, ...filterFields() };
    if ($("mode").value) fields.mode = $("mode").value;
    const response = await postJson("/ask/stream", fields);
    for await (const [name, data] of serverEvents(response)) {
      if (name === "sources") showSources(data.sources);
      else if (name === "delta") answer.textContent += data.text;
      else if (name === "done") markCited(data.cited);
      else if (name === "error") throw new ApiError(0, data.code, data.message);
    }
    if (!answer.textContent.trim()) answer.textContent = "(no answer)";
    answer.dataset.state = "done";
  } catch (error) {
    answer.dataset.state = "error";
    showError($("library-error"), error, "Could not answer");
  } finally {
    answer.setAttribute("aria-busy", "false");
    button.disabled = false;
  }
}

// The [event, data] pairs of a text/event-stream response, as they arrive.
async function* serverEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { done, value } = await reader.read();
    buffer += decoder.decode(value || new Uint8Array(), { stream: !done });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message";
      let data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) name = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      if (data) yield [name, JSON.parse(data)];
    }
    if (done) return;
  }
}

function clearSources() {
  state.sourceUrls.forEach((url) => URL.revokeObjectURL(url));
  state.sourceUrls = [];
  $("library-sources").replaceChildren();
}

function showSources(sources) {
  clearSources();
  sources.forEach((result, index) => {
    const number = index + 1;
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "card source";
    button.dataset.image = result.image;
    button.dataset.number = String(number);
    button.setAttribute("aria-label", `photo ${number}: ${result.image}: open`);
    const img = document.createElement("img");
    img.alt = result.image;
    img.decoding = "async";
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = `${number}. ${result.image.split("/").pop()}`;
    name.title = result.description || result.image;
    const mark = document.createElement("span");
    mark.className = "cited-mark";
    mark.textContent = "cited";
    button.append(img, name, mark);
    button.addEventListener("click", () => openViewer({ kind: "library", result }, button));
    item.append(button);
    $("library-sources").append(item);
    showImage(img, result.thumbnail_url, state.sourceUrls);
  });
}

function markCited(cited) {
  for (const button of $("library-sources").querySelectorAll(".source")) {
    const isCited = cited.includes(Number(button.dataset.number));
    button.classList.toggle("cited", isCited);
    if (isCited) button.setAttribute("aria-label", `${button.getAttribute("aria-label")} (cited in the answer)`);
  }
}

function findSimilar() {
  const subject = state.subject;
  state.opener = $("results"); // focus goes to the new results when the viewer closes
  $("viewer").close();
  if (subject.kind === "upload") {
    const name = subject.file.name || "your photo";
    runSearch({ endpoint: "/image2image_search", fields: {}, upload: subject.file, label: `similar to ${name}` });
  } else {
    const { image, media, t } = subject.result;
    const moment = media === "video" ? { t: String(t) } : {}; // a clip: like its moment at t
    runSearch({ endpoint: "/image2image_search", fields: { image_id: image, ...moment }, upload: null,
      label: media === "video" ? `similar to ${image} at ${clock(t)}` : `similar to ${image}` });
  }
}

// ------------------------------------------------------------------ uploads: pick or drop

function openUpload(file) {
  if (file) openViewer({ kind: "upload", file }, $("file"));
}

function setUpDrop() {
  const zone = $("drop");
  for (const name of ["dragenter", "dragover"]) {
    zone.addEventListener(name, (event) => {
      event.preventDefault();
      zone.classList.add("over");
    });
  }
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    openUpload(event.dataTransfer.files[0]);
  });
  // a photo dropped next to the zone must not replace the page
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());
  $("file").addEventListener("change", (event) => {
    openUpload(event.target.files[0]);
    event.target.value = ""; // the same file again is a new pick
  });
}

// ------------------------------------------------------------------ wiring

function start() {
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const query = $("query").value.trim();
    if (!query) return;
    const fields = { text_query: query };
    if ($("mode").value) fields.mode = $("mode").value;
    runSearch({ endpoint: "/text2image_search", fields, upload: null, label: `for “${query}”` });
  });
  $("more").addEventListener("click", () => state.search && runSearch(state.search, true));
  $("ask-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const question = $("question").value.trim();
    if (question) ask(question);
  });
  $("library-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const question = $("library-question").value.trim();
    if (question) askLibrary(question);
  });
  $("similar").addEventListener("click", findSimilar);
  $("viewer-close").addEventListener("click", () => $("viewer").close());
  $("viewer-img").addEventListener("error", () => {
    if (!$("viewer-img").getAttribute("src")) return;
    $("viewer-img").hidden = true; // not an image the browser can show (the server may still take it)
    $("viewer-noimage").hidden = false;
  });
  $("viewer").addEventListener("click", (event) => {
    if (event.target === $("viewer")) $("viewer").close(); // a click on the backdrop
  });
  $("viewer").addEventListener("close", () => {
    releaseViewerImage();
    stopVideo();
    if (state.opener && document.contains(state.opener)) state.opener.focus();
  });
  setUpDrop();
  loadHealth();
  setInterval(() => {
    if (!state.keyPrompt && !document.hidden) loadHealth();
  }, HEALTH_EVERY_MS);
}

start();
