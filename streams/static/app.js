// The demo page: plain browser APIs over the worker's JSON API (no framework, works offline).
"use strict";

const $ = (id) => document.getElementById(id);
const RESULTS = 12;

async function getJson(url, options) {
  const response = await fetch(url, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body;
}

function setStatus(element, text, isError = false) {
  element.textContent = text;
  element.classList.toggle("error", isError);
}

function productCard(item, rank) {
  const card = document.createElement("article");
  card.className = "card";
  card.dataset.productId = item.product_id;
  const image = item.thumbnail ? document.createElement("img") : document.createElement("div");
  if (item.thumbnail) {
    image.src = item.thumbnail;
    image.alt = item.title;
  } else {
    image.className = "no-image";
  }
  card.append(image);
  if (rank !== undefined) {
    const badge = document.createElement("span");
    badge.className = "rank";
    badge.textContent = `#${rank}`;
    card.append(badge);
  }
  const title = document.createElement("div");
  title.className = "title";
  title.textContent = item.title;
  const meta = document.createElement("div");
  meta.className = "meta";
  const category = document.createElement("span");
  category.textContent = item.category || "";
  const price = document.createElement("span");
  price.className = "price";
  price.textContent = item.price == null ? "" : `$${item.price.toFixed(2)}`;
  meta.append(category, price);
  card.append(title, meta);
  if (item.score !== undefined) {
    const score = document.createElement("div");
    score.className = "score";
    score.textContent = `score ${item.score.toFixed(3)}`;
    card.append(score);
  }
  return card;
}

// Ranked results (search and recommendations) carry a score and get a rank badge; browsing does not.
function showItems(grid, items, { ranked = true, append = false, highlight = false } = {}) {
  if (!append) grid.replaceChildren();
  const offset = grid.children.length;
  items.forEach((item, index) => {
    const card = productCard(item, ranked ? offset + index + 1 : undefined);
    if (highlight) card.classList.add("fresh");
    grid.append(card);
  });
}

// --- health -------------------------------------------------------------------------------
async function showHealth() {
  const badge = $("health");
  try {
    const response = await fetch("/health");
    const health = await response.json();
    badge.textContent = response.ok ? `online · ${health.products} products` : `starting: ${health.status}`;
    badge.className = `health ${response.ok ? "ok" : "down"}`;
  } catch (error) {
    badge.textContent = "worker unreachable";
    badge.className = "health down";
  }
}

// --- search by photo ----------------------------------------------------------------------
function previewPhoto(file) {
  const preview = $("photo-preview");
  preview.src = URL.createObjectURL(file);
  preview.hidden = false;
  $("photo-hint").hidden = true;
}

async function searchByPhoto(event) {
  event.preventDefault();
  const file = $("photo-input").files[0];
  const status = $("photo-status");
  if (!file) return setStatus(status, "Choose a photo first.", true);
  const form = new FormData();
  form.append("image", file);
  const keywords = $("photo-keywords").value.trim();
  if (keywords) form.append("q", keywords);
  setStatus(status, "Searching…");
  const started = performance.now();
  try {
    const result = await getJson(`/api/search/image?thumbnails=true&k=${RESULTS}`, { method: "POST", body: form });
    showItems($("photo-results"), result.items);
    setStatus(status, `${result.items.length} similar products in ${Math.round(performance.now() - started)} ms` +
      (keywords ? `, photo and “${keywords}” combined` : ""));
  } catch (error) {
    setStatus(status, `Search failed: ${error.message}`, true);
  }
}

function setUpPhotoDrop() {
  const drop = $("photo-drop");
  const input = $("photo-input");
  input.addEventListener("change", () => input.files[0] && previewPhoto(input.files[0]));
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("dragging"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("dragging"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("dragging");
    if (event.dataTransfer.files.length) {
      input.files = event.dataTransfer.files;
      previewPhoto(input.files[0]);
    }
  });
}

// --- search by keywords -------------------------------------------------------------------
async function searchByKeywords(event) {
  event.preventDefault();
  const q = $("keywords-input").value.trim();
  const status = $("keywords-status");
  setStatus(status, "Searching…");
  try {
    const params = new URLSearchParams({ q, k: RESULTS, thumbnails: "true" });
    const result = await getJson(`/api/search/text?${params}`);
    showItems($("keyword-results"), result.items);
    setStatus(status, `${result.items.length} products matching “${q}”`);
  } catch (error) {
    setStatus(status, `Search failed: ${error.message}`, true);
  }
}

// --- live recommendations -----------------------------------------------------------------
let liveStream = null;

function describe(recommendations, when) {
  const interests = recommendations.interests === 1 ? "1 interest" : `${recommendations.interests} interests`;
  return `${recommendations.user_id}: ${recommendations.strategy} (${interests}), ${when}`;
}

async function watchUser(event) {
  if (event) event.preventDefault();
  const userId = $("user-input").value.trim();
  const status = $("live-status");
  if (liveStream) liveStream.close();
  $("played-actions").replaceChildren();
  const user = encodeURIComponent(userId);
  try {
    const current = await getJson(`/api/users/${user}/recommendations?k=10&thumbnails=true`);
    showItems($("live-results"), current.items);
    setStatus(status, describe(current, "waiting for new actions…"));
  } catch (error) {
    return setStatus(status, `Could not load ${userId}: ${error.message}`, true);
  }
  // EventSource reconnects by itself if the worker restarts.
  liveStream = new EventSource(`/api/users/${user}/live?thumbnails=true`);
  liveStream.onmessage = (message) => {
    const recommendations = JSON.parse(message.data);
    showItems($("live-results"), recommendations.items, { highlight: true });
    setStatus(status, describe(recommendations, `updated ${new Date().toLocaleTimeString()}`));
  };
  liveStream.onerror = () => setStatus(status, "Live updates interrupted, reconnecting…", true);
}

async function playSession() {
  const button = $("play-button");
  const userId = $("user-input").value.trim();
  if (!liveStream || !liveStream.url.includes(`/users/${encodeURIComponent(userId)}/`)) await watchUser();
  button.disabled = true;
  button.textContent = "Playing…";
  try {
    const session = await getJson(`/api/users/${encodeURIComponent(userId)}/play`, { method: "POST" });
    const played = $("played-actions");
    played.replaceChildren(...session.actions.map((action) => {
      const item = document.createElement("li");
      item.textContent = `${action.action.replaceAll("_", " ")}: ${action.title}`;
      item.title = action.product_id;
      return item;
    }));
    played.title = `interests: ${session.interests.join(", ")}`;
  } catch (error) {
    setStatus($("live-status"), `Could not play a session: ${error.message}`, true);
  } finally {
    button.disabled = false;
    button.textContent = "Play a browsing session";
  }
}

// --- browse -------------------------------------------------------------------------------
let nextOffset = null;

async function loadCategories() {
  try {
    const { categories } = await getJson("/api/categories");
    $("category-select").append(...categories.map(({ name, products }) => new Option(`${name} (${products})`, name)));
  } catch (error) {
    setStatus($("browse-status"), `Could not load categories: ${error.message}`, true);
  }
}

async function browse(append = false) {
  const category = $("category-select").value;
  const params = new URLSearchParams({ limit: RESULTS * 2 });
  if (category) params.set("category", category);
  if (append && nextOffset) params.set("offset", nextOffset);
  try {
    const page = await getJson(`/api/products?${params}`);
    showItems($("browse-results"), page.items, { ranked: false, append });
    nextOffset = page.next_offset;
    $("browse-more").hidden = !nextOffset;
    setStatus($("browse-status"), `${$("browse-results").children.length} products shown` +
      (category ? ` in ${category}` : ""));
  } catch (error) {
    setStatus($("browse-status"), `Could not browse: ${error.message}`, true);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  showHealth();
  setUpPhotoDrop();
  $("photo-form").addEventListener("submit", searchByPhoto);
  $("keywords-form").addEventListener("submit", searchByKeywords);
  $("live-form").addEventListener("submit", watchUser);
  $("play-button").addEventListener("click", playSession);
  $("category-select").addEventListener("change", () => browse());
  $("browse-more").addEventListener("click", () => browse(true));
  loadCategories();
  browse();
});
