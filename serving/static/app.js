// Feed explorer: plain JavaScript over the feed API (no framework, no network beyond this server).
//
// Flow: pick a user -> GET history + recommendations side by side. "Click" on a card -> POST
// /v1/events, then both panels reload: the history gains the item and the feed moves (cards that
// entered the feed are marked "new"). "Similar" -> GET /v1/items/{id}/similar; the search form ->
// POST /v1/search (JSON text, or multipart with an image/audio file). API errors are shown as the
// server's message, never swallowed.
"use strict";

const $ = (selector) => document.querySelector(selector);
const HISTORY_SHOWN = 12;

const state = {
  info: null,          // GET /v1/explorer/examples
  user: null,          // the user whose feed is shown
  feedIds: [],         // ids of the feed as last shown (to mark what a click brought in)
  clicked: new Set(),  // items clicked in this page session
  loadToken: 0,        // guards against a slow answer overwriting a newer one
};

// ---------------------------------------------------------------- API access

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function request(method, path, { json, form } = {}) {
  const init = { method, headers: { Accept: "application/json" } };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (form !== undefined) {
    init.body = form;  // the browser sets the multipart boundary
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw new ApiError(0, "network_error", `The server cannot be reached (${err.message}).`);
  }
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch (_) {
    body = null;
  }
  if (!response.ok) {
    const message = body && body.message ? body.message : `${response.statusText || "request failed"}: ${text.slice(0, 200)}`;
    throw new ApiError(response.status, (body && body.code) || "http_error", message);
  }
  return body;
}

const api = {
  get: (path, params = {}) => {
    const query = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== null && v !== undefined));
    return request("GET", query.toString() ? `${path}?${query}` : path);
  },
  post: (path, json) => request("POST", path, { json }),
  postForm: (path, form) => request("POST", path, { form }),
};

const enc = encodeURIComponent;

function newEventId() {
  if (window.crypto && typeof window.crypto.randomUUID === "function") return `explorer-${window.crypto.randomUUID()}`;
  return `explorer-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 12)}`;
}

// ---------------------------------------------------------------- small view helpers

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else if (key in node && typeof value !== "string") node[key] = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

function showError(id, err) {
  const box = $(id);
  if (!err) {
    box.hidden = true;
    box.textContent = "";
    return;
  }
  box.replaceChildren(el("strong", { text: err.message }));
  const where = err.status ? `${err.code}, HTTP ${err.status}` : err.code;
  if (err.code) box.append(el("span", { class: "error-code", text: ` (${where})` }));
  box.hidden = false;
}

function setStatus(message, kind = "info") {
  const status = $("#status");
  status.textContent = message;
  status.dataset.kind = kind;
}

function itemLabel(item) {
  return item.title || `Item ${item.item_id}`;
}

function hue(itemId) {  // a stable colour per item for placeholder tiles
  let h = 0;
  for (const ch of String(itemId)) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
  return h % 360;
}

function selectedMedia() {
  const available = state.info ? state.info.media : ["text", "image", "audio"];
  const checked = [...document.querySelectorAll('#media-filter input[name="media"]:checked')]
    .map((box) => box.value).filter((m) => available.includes(m));
  if (!checked.length) throw new ApiError(0, "no_media_selected", "Choose at least one medium in the Media filter.");
  return checked.length === available.length ? null : checked;
}

function topK() {
  return Number($("#k").value) || 12;
}

// ---------------------------------------------------------------- cards

// kind: "feed" (score, Click, Similar), "history" (Similar), "results" (score, Click, Similar)
function card(item, { kind, rank, files = {}, isNew = false, scoreLabel = "score" }) {
  const title = itemLabel(item);
  const thumb = el("div", { class: "thumb", style: `--hue:${hue(item.item_id)}` });
  if (files.image) {
    thumb.append(el("img", { src: files.image, alt: `Image of ${title}`, loading: "lazy", decoding: "async" }));
  } else {
    thumb.classList.add("placeholder");
    thumb.append(el("span", { class: "thumb-id", "aria-hidden": "true", text: `#${item.item_id}` }));
  }

  const badges = el("p", { class: "badges" });
  for (const medium of item.media || []) badges.append(el("span", { class: `badge medium-${medium}`, text: medium }));
  if (item.known === false) badges.append(el("span", { class: "badge unknown", text: "not in model" }));
  if (isNew) badges.append(el("span", { class: "badge new", text: "new" }));
  if (state.clicked.has(item.item_id)) badges.append(el("span", { class: "badge clicked", text: "clicked" }));

  const meta = el("p", { class: "card-meta" });
  if (rank !== undefined) meta.append(el("span", { class: "rank", text: `#${rank}` }));
  if (item.title) meta.append(el("span", { class: "item-id", text: `id ${item.item_id}` }));  // else the title says it
  if (typeof item.score === "number") {
    meta.append(el("span", { class: "score", title: scoreLabel, text: `${scoreLabel} ${item.score.toFixed(4)}` }));
  }

  const body = el("div", { class: "card-body" }, el("h3", { class: "card-title", text: title }), badges, meta);
  if (files.audio) {
    body.append(el("audio", { controls: true, preload: "none", src: files.audio, "aria-label": `Audio of ${title}` }));
  }
  const actions = el("div", { class: "actions" });
  if (kind !== "history") {
    actions.append(el("button", { type: "button", class: "act-click", "data-action": "click",
      "aria-label": `Click ${title} (records a click event)`, text: "Click" }));
  }
  actions.append(el("button", { type: "button", class: "act-similar", "data-action": "similar",
    "aria-label": `Items similar to ${title}`, text: "Similar" }));
  body.append(actions);

  return el("li", { class: `card card-${kind}${isNew ? " is-new" : ""}`, "data-item-id": item.item_id }, thumb, body);
}

async function filesFor(items) {
  // File URLs come from the catalogue; skip the round trip when the catalogue has no files at all.
  const counts = state.info ? state.info.media_files : {};
  if (!items.length || !Object.values(counts).some((n) => n > 0)) return {};
  const answer = await api.get("/v1/items", { ids: items.map((i) => i.item_id).join(",") });
  return Object.fromEntries(answer.items.map((i) => [i.item_id, i.files || {}]));
}

function emptyNote(text) {
  return el("li", { class: "empty", text });
}

// ---------------------------------------------------------------- panels

async function loadUser(userId, { previousFeed = null } = {}) {
  const token = ++state.loadToken;
  if (userId !== state.user) {  // another user: the previous one's click note and errors do not apply
    setStatus("");
    for (const id of ["#feed-error", "#history-error"]) showError(id, null);
  }
  state.user = userId;
  $("#user-id").value = userId;
  const url = new URL(window.location.href);
  url.searchParams.set("user", userId);
  window.history.replaceState(null, "", url);
  for (const id of ["#history", "#feed"]) $(id).setAttribute("aria-busy", "true");

  let media;
  try {
    media = selectedMedia();
  } catch (err) {
    showError("#feed-error", err);
    for (const id of ["#history", "#feed"]) $(id).removeAttribute("aria-busy");
    return;
  }
  const [history, feed] = await Promise.allSettled([
    api.get(`/v1/users/${enc(userId)}/history`, { n: HISTORY_SHOWN }),
    api.get(`/v1/users/${enc(userId)}/recommendations`, { k: topK(), media: media && media.join(",") }),
  ]);
  if (token !== state.loadToken) return;  // a newer load started meanwhile
  renderHistory(history);
  await renderFeed(feed, previousFeed, token);
}

function renderHistory(result) {
  const list = $("#history");
  list.removeAttribute("aria-busy");
  if (result.status === "rejected") {
    showError("#history-error", result.reason);
    list.replaceChildren();
    $("#history-meta").textContent = "";
    return;
  }
  showError("#history-error", null);
  const h = result.value;
  $("#history-meta").textContent = h.total
    ? `The feed reads the newest ${h.total} event${h.total === 1 ? "" : "s"} (window ${h.window}); ` +
      `${h.items.length < h.total ? `the ${h.items.length} newest are shown` : "newest first"}.`
    : "No history: this user gets the cold-start feed.";
  list.replaceChildren(...(h.items.length
    ? h.items.map((item, i) => card(item, { kind: "history", rank: i + 1, files: item.files }))
    : [emptyNote("Nothing yet. Click a recommendation to start a history.")]));
}

async function renderFeed(result, previousFeed, token) {
  const list = $("#feed");
  if (result.status === "rejected") {
    list.removeAttribute("aria-busy");
    showError("#feed-error", result.reason);
    list.replaceChildren();
    $("#feed-meta").textContent = "";
    return;
  }
  showError("#feed-error", null);
  const feed = result.value;
  let files = {};
  try {
    files = await filesFor(feed.items);
  } catch (err) {
    setStatus(`Media files could not be listed: ${err.message}`, "error");
  }
  if (token !== state.loadToken) return;
  const before = new Set(previousFeed || []);
  const meta = $("#feed-meta");
  meta.replaceChildren(
    el("span", { class: "pill" }, "model ", el("code", { class: "model-version", text: feed.model_version })),
    el("span", { class: "pill" }, "variant ", el("strong", { class: "variant", text: feed.variant })),
    el("span", { class: "pill", text: `${feed.items.length} items` }),
  );
  if (feed.cold_start) meta.append(el("span", { class: "pill warn", text: "cold start: popular + diverse" }));
  list.replaceChildren(...(feed.items.length
    ? feed.items.map((item, i) => card(item, {
      kind: "feed", rank: i + 1, files: files[item.item_id],
      isNew: previousFeed !== null && !before.has(item.item_id),
      scoreLabel: feed.cold_start ? "popularity" : "score",
    }))
    : [emptyNote("No items for this filter.")]));
  list.removeAttribute("aria-busy");
  state.feedIds = feed.items.map((i) => i.item_id);
  list.dataset.modelVersion = feed.model_version;
  list.dataset.variant = feed.variant;
}

async function showResults(title, loader) {
  const list = $("#results");
  $("#results-title").textContent = title;
  $("#results-title").hidden = false;
  list.setAttribute("aria-busy", "true");
  try {
    const answer = await loader();
    const files = await filesFor(answer.items);
    showError("#results-error", null);
    const meta = $("#results-meta");
    meta.replaceChildren(el("span", { class: "pill" }, "model ", el("code", { text: answer.model_version })));
    if (answer.query_medium) meta.append(el("span", { class: "pill", text: `${answer.query_medium} query` }));
    meta.hidden = false;
    list.replaceChildren(...(answer.items.length
      ? answer.items.map((item, i) => card(item, { kind: "results", rank: i + 1, files: files[item.item_id] }))
      : [emptyNote("No results.")]));
  } catch (err) {
    $("#results-meta").hidden = true;
    list.replaceChildren();
    showError("#results-error", err);
  } finally {
    list.removeAttribute("aria-busy");
  }
}

// ---------------------------------------------------------------- actions

async function recordClick(itemId, button) {
  if (!state.user) {
    setStatus("Pick a user first: the click is recorded for the user whose feed is shown.", "error");
    return;
  }
  button.disabled = true;
  const previousFeed = state.feedIds;
  try {
    const answer = await api.post("/v1/events", {
      event_id: newEventId(), user_id: state.user, item_id: itemId, event_type: "click",
    });
    state.clicked.add(itemId);
    await loadUser(state.user, { previousFeed });
    const entered = state.feedIds.filter((id) => !previousFeed.includes(id)).length;
    const word = answer.accepted === 1 ? "recorded" : "already recorded";
    setStatus(`Click on item ${itemId} ${word} for user ${state.user}: it heads the history, and ` +
      `${entered} new item${entered === 1 ? "" : "s"} entered the feed.`, "ok");
  } catch (err) {
    setStatus(`The click could not be recorded: ${err.message}`, "error");
  } finally {
    button.disabled = false;
  }
}

function similar(itemId) {
  let media;
  try {
    media = selectedMedia();
  } catch (err) {
    showError("#results-error", err);
    return Promise.resolve();
  }
  return showResults(`Similar to item ${itemId}`, () => api.get(`/v1/items/${enc(itemId)}/similar`,
    { k: topK(), media: media && media.join(",") }));
}

function mediumOfFile(file) {
  if (file.type.startsWith("image/")) return "image";
  if (file.type.startsWith("audio/")) return "audio";
  const ext = (file.name.split(".").pop() || "").toLowerCase();
  if (["png", "jpg", "jpeg", "gif", "webp", "bmp"].includes(ext)) return "image";
  if (["wav", "flac", "ogg", "mp3", "m4a", "aiff"].includes(ext)) return "audio";
  return null;
}

// Why the served model cannot embed a query of `medium` (null when it can), from /v1/explorer/examples.
function searchProblem(medium) {
  const reasons = (state.info && state.info.search_media) || {};
  return reasons[medium] || null;
}

function search(event) {
  event.preventDefault();
  const textInput = $("#search-text");
  const text = textInput.disabled ? "" : textInput.value.trim();
  const fileInput = $("#search-file");
  const file = fileInput.files && fileInput.files[0];
  let media;
  try {
    media = selectedMedia();
    if (!file && !text) throw new ApiError(0, "empty_query", "Type some text, or choose an image or audio file.");
    if (file && !mediumOfFile(file)) throw new ApiError(0, "unsupported_file", `${file.name} is neither an image nor an audio file.`);
    if (file && searchProblem(mediumOfFile(file))) {
      fileInput.value = "";
      throw new ApiError(0, "medium_not_searchable",
        `This model cannot search by ${mediumOfFile(file)}: ${searchProblem(mediumOfFile(file))}.`);
    }
  } catch (err) {
    $("#results-title").hidden = true;
    $("#results-meta").hidden = true;
    $("#results").replaceChildren();
    showError("#results-error", err);
    return;
  }
  if (file) {
    const form = new FormData();
    form.append(mediumOfFile(file), file);
    form.append("k", String(topK()));
    if (media) form.append("media", media.join(","));
    fileInput.value = "";  // the next search is by text unless a file is chosen again
    showResults(`Search: ${file.name}`, () => api.postForm("/v1/search", form));
    return;
  }
  const body = { text, k: topK() };
  if (media) body.media = media;
  showResults(`Search: “${text}”`, () => api.post("/v1/search", body));
}

function onCardAction(event) {
  const button = event.target.closest("button[data-action]");
  if (!button) return;
  const itemId = button.closest(".card").dataset.itemId;
  if (button.dataset.action === "click") recordClick(itemId, button);
  else if (button.dataset.action === "similar") similar(itemId);
}

// ---------------------------------------------------------------- start-up

// Search inputs for media the served model cannot embed are disabled, each with its reason on screen.
function renderSearchMedia() {
  const textInput = $("#search-text");
  const textProblem = searchProblem("text");
  textInput.disabled = Boolean(textProblem);
  textInput.title = textProblem ? `No text search: ${textProblem}` : "";
  if (textProblem) textInput.placeholder = "no text search (see below)";
  const fileMedia = ["image", "audio"].filter((m) => !searchProblem(m));
  const fileInput = $("#search-file");
  fileInput.disabled = !fileMedia.length;
  fileInput.accept = fileMedia.map((m) => `${m}/*`).join(",");
  fileInput.title = fileMedia.length === 2 ? "" : ["image", "audio"].filter(searchProblem)
    .map((m) => `No ${m} search: ${searchProblem(m)}`).join("\n");
  $("label[for='search-file']").textContent = fileMedia.length === 1 ? `or an ${fileMedia[0]} file` : "or a file";
  $("#search-form button[type='submit']").disabled = textInput.disabled && fileInput.disabled;
  const off = ["text", "image", "audio"].filter(searchProblem);
  const note = $("#search-note");
  note.replaceChildren(...off.map((m) => el("span", {
    class: "search-off", "data-medium": m, text: `No ${m} search: ${searchProblem(m)}.`,
  })));
  note.hidden = !off.length;
}

function renderInfo(info) {
  $("#model-info").replaceChildren(
    el("span", { class: "pill", title: info.dataset }, "dataset ", el("strong", { text: info.dataset.split("/").pop() })),
    el("span", { class: "pill" }, "model ", el("code", { text: info.model_version })),
    el("span", { class: "pill", text: `variants ${info.variants.join(" / ")}` }),
  );
  for (const box of document.querySelectorAll('#media-filter input[name="media"]')) {
    const served = info.media.includes(box.value);
    box.disabled = !served;
    box.checked = served;
    box.closest("label").title = served ? "" : `this catalogue has no ${box.value} items`;
  }
  const options = [...info.users.map((u) => u.user_id), info.new_user_id];
  $("#example-users").replaceChildren(...options.map((id) => el("option", { value: id })));
  $("#example-buttons").replaceChildren(...info.users.map((u) => el("li", {}, el("button", {
    type: "button", class: "example", "data-user": u.user_id,
    text: u.n_train ? `${u.user_id} (${u.n_train} event${u.n_train === 1 ? "" : "s"})` : u.user_id,
  }))), el("li", {}, el("button", {
    type: "button", class: "example", "data-user": info.new_user_id, text: `${info.new_user_id} (new user)`,
  })));
}

async function start() {
  $("#user-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const userId = $("#user-id").value.trim();
    if (userId) loadUser(userId);
  });
  $("#example-buttons").addEventListener("click", (event) => {
    const button = event.target.closest("button[data-user]");
    if (button) loadUser(button.dataset.user);
  });
  $("#search-form").addEventListener("submit", search);
  for (const id of ["#feed", "#history", "#results"]) $(id).addEventListener("click", onCardAction);
  $("#media-filter").addEventListener("change", () => state.user && loadUser(state.user));
  $("#k").addEventListener("change", () => state.user && loadUser(state.user));

  try {
    state.info = await api.get("/v1/explorer/examples");
    renderInfo(state.info);
    renderSearchMedia();
  } catch (err) {
    $("#model-info").textContent = `Model information unavailable: ${err.message}`;
  }
  const wanted = new URLSearchParams(window.location.search).get("user");
  if (wanted) loadUser(wanted);
  document.body.dataset.ready = "true";
}

document.addEventListener("DOMContentLoaded", start);
