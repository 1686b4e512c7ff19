// The live console: polls the summary every 1.5 s and draws it (all values as text).
const $ = (id) => document.getElementById(id);
const fmt = (v, digits = 0) => (v === null || v === undefined ? "-" : Number(v).toFixed(digits));

function spark(svg, values) {
  const points = values.map((v, i) => [i, v]).filter(([, v]) => v !== null && v !== undefined);
  svg.replaceChildren();
  if (points.length < 2) return;
  const max = Math.max(...points.map(([, v]) => v), 1e-9), n = values.length - 1 || 1;
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", points.map(([i, v]) => `${(i / n) * 300},${58 - (v / max) * 56}`).join(" "));
  svg.append(line);
}

function show(summary) {
  const now = summary.now, history = summary.history.slice(-120);
  $("updated").textContent = `updated ${new Date(now.t * 1000).toLocaleTimeString()}`;
  $("events_per_s").textContent = fmt(now.events_per_s, 1);
  $("ingest_lag_ms").textContent = fmt(now.ingest_lag_ms);
  for (const key of ["quarantined", "snapshot_age_s", "stockouts"]) $(key).textContent = fmt(now[key], key === "snapshot_age_s" ? 1 : 0);
  for (const key of ["experiment", "champion", "challenger", "state"]) $(key).textContent = now[key] || "-";
  if (now.flags_error) $("state").textContent = "unknown (flags unreadable)";
  $("share").textContent = now.share === null ? "-" : `${(100 * now.share).toFixed(2)}%`;
  $("served_share").textContent = now.served_challenger_share == null ? "-" : `${(100 * now.served_challenger_share).toFixed(2)}%`;
  $("reason").textContent = now.reason || (now.decision ? now.decision.reason : "");
  $("variants").replaceChildren(...Object.entries(now.variants || {}).map(([name, c]) => {
    const tr = document.createElement("tr");
    for (const v of [name, c.impressions, c.clicks, c.add_to_carts, c.purchases, `${(100 * c.conversion).toFixed(2)}%`]) {
      const td = document.createElement("td"); td.textContent = String(v); tr.append(td);
    }
    tr.dataset.variant = name;
    return tr;
  }));
  spark($("chart-events"), history.map((s) => s.events_per_s));
  spark($("chart-lag"), history.map((s) => s.ingest_lag_ms));
  spark($("chart-share"), history.map((s) => s.served_challenger_share));
  $("controls").hidden = !summary.controls;
  document.body.dataset.state = now.state || "";
}

async function poll() {
  // A failed read leaves the last figures up, marked stale, with what the route answered.
  let problem = "";
  try {
    const r = await fetch("/console/api/summary", { cache: "no-store" });
    if (r.ok) show(await r.json());
    else problem = ((await r.json().catch(() => ({}))).message || `HTTP ${r.status}`);
  } catch { problem = "the console's server is unreachable"; }
  document.body.dataset.stale = problem ? "true" : "";
  $("problem").textContent = problem;
  setTimeout(poll, 1500);
}

$("controls").addEventListener("click", async (event) => {
  const command = event.target.dataset && event.target.dataset.command;
  if (!command) return;
  const body = { command, share: Number($("share-input").value), challenger: $("challenger-model").value };
  const r = await fetch("/console/api/experiment", {
    method: "POST", headers: { "content-type": "application/json", "x-console-token": $("token").value },
    body: JSON.stringify(body),
  });
  $("control-result").textContent = (await r.json()).message;
});
poll();
