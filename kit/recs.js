// Storefront kit: recommendations and their events, for a shop's pages (docs/storefront.md).
// A plain ES module: no build step, no dependency. import {createRecs} from "/kit/recs.js".
// Contracts: DESIGN 3.1 (events), 3.2 (POST /events: same-origin JSON; GET /recommendations),
// 3.3 (each recommended item in the DOM carries data-rec-id and data-item-id).

const KEEPALIVE_BUDGET = 65536; // bytes of keepalive bodies a page may have in flight (Fetch spec)
const BATCH_BYTES = 16384; // one batch: a quarter of the budget, so four can leave on page hide
const BATCH_EVENTS = 500; // the API's limit per request
const DWELL_MS = 1000; // an impression: at least half of the item visible for a second
const ATTRIBUTION_MAX = 50; // items whose rec_id the session keeps (clicked ones)
const Q = "rt.q", A = "rt.attr";

const newId = () => (crypto.randomUUID ? crypto.randomUUID() : [...crypto.getRandomValues(new Uint8Array(16))]
  .map((b) => b.toString(16).padStart(2, "0")).join(""));

function load(storage, key, fallback) {
  try { return JSON.parse(storage.getItem(key)) || fallback; } catch { return fallback; }
}

function save(storage, key, value) {
  try { storage.setItem(key, JSON.stringify(value)); } catch { /* full or blocked: keep going */ }
}

export function createRecs(options = {}) {
  const o = {
    base: "", timeoutMs: 800, maxQueue: 200, flushMs: 5000, consent: false, fetch: (...a) => fetch(...a),
    storage: globalThis.sessionStorage, now: () => Date.now(), ...options,
  };
  let consent = !!o.consent, queue = load(o.storage, Q, []), timer = 0, sending = false, backoff = 0, dirty = false;
  const attribution = load(o.storage, A, {}); // item_id -> {rec_id}: clicked items, for later pages
  const seen = new WeakSet(), lists = new Map(); // rec_id -> {items: [], positions: [], decision}
  const credentials = () => (consent ? "include" : "omit"); // include: also for an API on a sibling host

  function enqueue(event) {
    queue.push({ event_id: newId(), ts: o.now(), ...event });
    if (queue.length > o.maxQueue) queue.splice(0, queue.length - o.maxQueue); // bounded: oldest go
    if (!dirty) { dirty = true; queueMicrotask(() => { dirty = false; save(o.storage, Q, queue); }); }
    if (!timer) timer = setTimeout(() => { timer = 0; flush(); }, o.flushMs + backoff);
  }

  function batches(events, limit) {
    // Consecutive batches, each <= BATCH_BYTES and <= BATCH_EVENTS, until `limit` bytes.
    const out = []; let batch = [], size = 12, total = 0;
    for (const e of events) {
      const n = JSON.stringify(e).length + 1;
      if (batch.length && (size + n > BATCH_BYTES || batch.length >= BATCH_EVENTS)) {
        out.push(batch); total += size; batch = []; size = 12;
      }
      if (total + size + n > limit) break;
      batch.push(e); size += n;
    }
    if (batch.length) out.push(batch);
    return out;
  }

  function flushImpressions() {
    for (const [rec_id, list] of lists) {
      if (!list.items.length) continue;
      const event = { type: "impression", rec_id, items: list.items, positions: list.positions };
      if (list.decision) event.decision = list.decision;
      list.items = []; list.positions = [];
      enqueue(event);
    }
  }

  async function post(batch, keepalive) {
    // Same-origin JSON (DESIGN 3.2); the cookie only with consent. A 202 names the events it
    // could not store ("retry later"): those stay queued with their event_id, so a retry
    // never counts twice; the others it rejected for good are dropped.
    const response = await o.fetch(`${o.base}/events`, {
      method: "POST", keepalive, credentials: credentials(), headers: { "content-type": "application/json" },
      body: JSON.stringify({ events: batch }),
    });
    if (response.status === 202) {
      const answer = await response.json().catch(() => ({}));
      return (answer.rejected || []).filter((r) => /retry/.test(r.error)).map((r) => batch[r.index]);
    }
    if (response.status === 429 || response.status >= 500) throw new Error(`retry ${response.status}`);
    return []; // 4xx: the batch as a whole will never be accepted
  }

  async function flush(keepalive = false) {
    flushImpressions();
    if (keepalive) save(o.storage, Q, queue); // whatever cannot leave now, the next page sends
    if ((sending && !keepalive) || !queue.length) return;
    sending = true;
    const out = batches(queue, keepalive ? KEEPALIVE_BUDGET : Infinity);
    const sent = new Set(out.flat());
    try {
      if (keepalive) { // page hide: all at once, nothing awaited; a resend keeps its event_ids
        out.forEach((b) => post(b, true).catch(() => {}));
        return;
      }
      const retry = [];
      for (const b of out) retry.push(...(await post(b, false)));
      queue = [...retry, ...queue.filter((e) => !sent.has(e))];
      backoff = retry.length ? Math.min(60000, (backoff || 500) * 2) : 0;
    } catch {
      backoff = Math.min(60000, (backoff || 500) * 2); // blocked or offline: quietly, later
    } finally {
      sending = false;
      save(o.storage, Q, queue);
      if (queue.length && !keepalive && !timer) timer = setTimeout(() => { timer = 0; flush(); }, backoff || o.flushMs);
    }
  }

  function remember(item_id, rec_id) {
    delete attribution[item_id];
    attribution[item_id] = { rec_id };
    const keys = Object.keys(attribution);
    keys.slice(0, Math.max(0, keys.length - ATTRIBUTION_MAX)).forEach((k) => delete attribution[k]);
    save(o.storage, A, attribution);
  }

  const visible = new Map(); // element -> timer
  const observer = typeof IntersectionObserver === "undefined" ? null : new IntersectionObserver((entries) => {
    for (const entry of entries) {
      const el = entry.target;
      if (entry.isIntersecting && entry.intersectionRatio >= 0.5) {
        if (!visible.has(el)) visible.set(el, setTimeout(() => seenFor(el), DWELL_MS));
      } else if (visible.has(el)) {
        clearTimeout(visible.get(el)); visible.delete(el);
      }
    }
  }, { threshold: [0, 0.5, 1] });

  function seenFor(el) {
    visible.delete(el);
    if (seen.has(el) || !el.isConnected || document.visibilityState === "hidden") return;
    const r = el.getBoundingClientRect(); // still at least half visible, a second later?
    const shown = Math.max(0, Math.min(r.bottom, innerHeight) - Math.max(r.top, 0)) *
      Math.max(0, Math.min(r.right, innerWidth) - Math.max(r.left, 0));
    if (shown * 2 < r.width * r.height) return; // no: the observer starts again when it is
    seen.add(el); observer.unobserve(el);
    const list = lists.get(el.dataset.recId);
    if (!list) return;
    list.items.push(el.dataset.itemId); list.positions.push(Number(el.dataset.position));
    if (!timer) timer = setTimeout(() => { timer = 0; flush(); }, o.flushMs);
  }

  function defaultRender(items, el, meta) {
    // A minimal accessible list, always as text: an item id is never HTML.
    const ol = document.createElement("ol");
    ol.className = "rt-recs";
    if (meta.label) ol.setAttribute("aria-label", meta.label);
    for (const item of items) {
      const li = document.createElement("li"), a = document.createElement("a");
      a.href = o.itemUrl ? o.itemUrl(item.item_id) : `?item=${encodeURIComponent(item.item_id)}`;
      a.textContent = o.itemLabel ? o.itemLabel(item.item_id) : item.item_id;
      li.dataset.itemId = item.item_id;
      li.append(a); ol.append(li);
    }
    el.replaceChildren(ol);
  }

  async function slot(el, { k = 10, contextItem, fallback = [], render, label, personal = true } = {}) {
    // Recommendations for one slot, or the shop's own list when the answer is late or fails.
    let answer = null;
    const abort = new AbortController(), t = setTimeout(() => abort.abort(), o.timeoutMs);
    try {
      const q = new URLSearchParams({ k: String(k) });
      if (contextItem) q.set("context_item", contextItem);
      const r = await o.fetch(`${o.base}/recommendations?${q}`, {
        signal: abort.signal, credentials: personal ? credentials() : "omit", headers: { accept: "application/json" },
      });
      if (r.ok) answer = await r.json();
    } catch { /* timeout, blocked, offline: the fallback below */ } finally { clearTimeout(t); }
    const ok = answer && Array.isArray(answer.items) && answer.items.length && typeof answer.rec_id === "string";
    const rec_id = ok ? answer.rec_id : null;
    const decision = ok && typeof answer.decision === "string" ? answer.decision : undefined;
    const items = ok ? answer.items.slice(0, k).map((i, n) => ({ item_id: String(i.item_id), score: i.score, position: n + 1, rec_id }))
      : fallback.slice(0, k).map((id, n) => ({ item_id: String(id), position: n + 1, rec_id: null }));
    (render || defaultRender)(items, el, { rec_id, fallback: !ok, label, variant: ok ? answer.variant : null });
    if (!rec_id) {
      el.querySelectorAll("[data-item-id]").forEach((node) => node.setAttribute("data-fallback", ""));
      return { rec_id: null, fallback: true, items };
    }
    lists.set(rec_id, { items: [], positions: [], decision });
    const byId = new Map(items.map((i) => [i.item_id, i]));
    el.querySelectorAll("[data-item-id]").forEach((node) => {
      const item = byId.get(node.dataset.itemId);
      if (!item) return;
      node.dataset.recId = rec_id; node.dataset.position = String(item.position);
      if (observer) observer.observe(node);
      node.addEventListener("click", () => {
        remember(item.item_id, rec_id);
        enqueue({ type: "click", item_id: item.item_id, rec_id, position: item.position });
      });
    });
    return { rec_id, fallback: false, reason: answer.fallback_reason || null, items, variant: answer.variant };
  }

  function action(type, item_id, extra = {}) {
    // add_to_cart / purchase / view: the rec_id of the list that earned the item, if one did.
    // A served answer's `decision` goes into its impression event only (issue 22's contract).
    const a = attribution[item_id];
    enqueue({ type, item_id: String(item_id), ...extra, ...(a ? { rec_id: a.rec_id } : {}) });
  }

  const onHide = () => { if (document.visibilityState === "hidden") flush(true); };
  addEventListener("pagehide", () => flush(true));
  document.addEventListener("visibilitychange", onHide);
  if (queue.length) timer = setTimeout(() => { timer = 0; flush(); }, 0); // left by the previous page

  return {
    slot,
    view: (item_id, extra) => action("view", item_id, extra),
    addToCart: (item_id, extra) => action("add_to_cart", item_id, extra),
    purchase: (item_id, extra) => action("purchase", item_id, extra),
    attribution: (item_id) => (attribution[item_id] ? attribution[item_id].rec_id : null),
    setConsent(value) { consent = !!value; },
    flush: () => flush(false),
    get queued() { return queue.length; },
  };
}
