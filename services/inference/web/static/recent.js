// The "recent predictions" view: GET /v1/predictions/recent, drawn as an inline SVG chart of
// stacked columns (one column per time bucket, one coloured segment per category; each segment
// names its category and count on hover) plus tables with the same numbers, which is also
// what a screen reader gets. Plain JavaScript, no dependencies.
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const COLOURS = ["#1f6feb", "#c2410c", "#15803d", "#7e22ce", "#b91c1c", "#0e7490",
    "#a16207", "#be185d", "#4b5563"];
  const REFRESH_MS = 10000;

  const $ = (id) => document.getElementById(id);
  const controls = $("controls");
  const windowSel = $("window");
  const auto = $("auto");
  let timer = null;
  let loading = false;

  controls.addEventListener("submit", (e) => { e.preventDefault(); load(); });
  windowSel.addEventListener("change", load);
  auto.addEventListener("change", schedule);

  async function load() {
    if (loading) return;
    loading = true;
    $("status").textContent = "Loading…";
    try {
      const res = await fetch(`/v1/predictions/recent?minutes=${encodeURIComponent(windowSel.value)}`,
        { headers: { accept: "application/json" } });
      let data = null;
      try { data = await res.json(); } catch (_) { data = null; }
      if (!res.ok) {
        const why = data && data.message ? data.message : res.statusText;
        showError(`The service answered HTTP ${res.status}: ${why}`);
        $("status").textContent = "";
        return;
      }
      $("error").hidden = true;
      render(data);
      $("status").textContent =
        `${data.count} prediction${data.count === 1 ? "" : "s"} · updated ${clock(data.now)}`;
    } catch (_) {
      showError("Could not reach the service. Check that it is running, then try again.");
      $("status").textContent = "";
    } finally {
      loading = false;
    }
  }

  function schedule() {
    if (timer) clearInterval(timer);
    timer = auto.checked ? setInterval(load, REFRESH_MS) : null;
  }

  function showError(message) {
    $("error-message").textContent = message;
    $("error").hidden = false;
  }

  // --- drawing ---

  function render(d) {
    $("bucket-words").textContent = bucketWords(d.bucket_seconds);
    const empty = d.count === 0;
    $("empty").hidden = !empty;
    $("chart-figure").hidden = empty;
    drawChart(d);
    fillTotals(d);
    fillLatest(d);
  }

  function drawChart(d) {
    // Stacked columns: one column per time bucket, one segment per category.
    const W = 760, H = 300, L = 48, R = 16, T = 16, B = 40;
    const n = d.bucket_starts.length;
    const stacked = d.bucket_starts.map((_, i) => d.series.reduce((a, s) => a + s.counts[i], 0));
    const yMax = niceCeil(Math.max(1, ...stacked));
    const step = (W - L - R) / Math.max(1, n);
    const barW = Math.max(1, step * 0.8);
    const x = (i) => L + i * step + (step - barW) / 2;
    const y = (v) => T + (H - T - B) * (1 - v / yMax);

    const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, role: "img",
      "aria-labelledby": "chart-title chart-desc", class: "chart" });
    svg.append(svgEl("title", { id: "chart-title" }, "Predictions per category over time"),
      svgEl("desc", { id: "chart-desc" }, describe(d)));

    // grid and y axis
    const ticks = 4;
    for (let k = 0; k <= ticks; k++) {
      const v = (yMax * k) / ticks;
      svg.append(svgEl("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid" }),
        svgEl("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end", class: "tick" },
          fmtCount(v)));
    }
    // x axis: about 6 time labels, at the left edge of their bucket
    const every = Math.max(1, Math.ceil(n / 6));
    for (let i = 0; i < n; i += every) {
      svg.append(svgEl("text", { x: L + i * step, y: H - B + 18, "text-anchor": "middle",
        class: "tick" }, clock(d.bucket_starts[i])));
    }

    const base = new Array(n).fill(0);
    const legend = $("legend");
    legend.replaceChildren();
    d.series.forEach((s, k) => {
      const colour = COLOURS[k % COLOURS.length];
      const g = svgEl("g", { class: "series", "data-category": s.category, fill: colour });
      s.counts.forEach((v, i) => {
        if (v <= 0) return;
        const top = y(base[i] + v);
        const rect = svgEl("rect", { x: x(i), y: top, width: barW,
          height: Math.max(1, y(base[i]) - top), class: "segment" });
        rect.append(svgEl("title", {}, `${s.category}: ${v} from ${clock(d.bucket_starts[i])}`));
        g.append(rect);
        base[i] += v;
      });
      svg.append(g);

      const item = document.createElement("span");
      item.className = "legend-item";
      const key = svgEl("svg", { width: 14, height: 14, "aria-hidden": "true" });
      key.append(svgEl("rect", { x: 0, y: 0, width: 14, height: 14, fill: colour }));
      const total = s.counts.reduce((a, b) => a + b, 0);
      item.append(key, document.createTextNode(` ${s.category} (${total})`));
      legend.append(item);
    });
    svg.append(svgEl("line", { x1: L, x2: W - R, y1: y(0), y2: y(0), class: "axis" }));

    $("chart").replaceChildren(svg);
  }

  function describe(d) {
    if (!d.series.length) return "No predictions in this window.";
    const parts = d.series.map((s) => `${s.category}: ${s.counts.reduce((a, b) => a + b, 0)}`);
    return `${d.count} predictions in the last ${windowWords(d.minutes)}, by category: ` +
      `${parts.join(", ")}. The tables below give the same numbers.`;
  }

  function fillTotals(d) {
    const body = $("totals");
    body.replaceChildren();
    if (!d.totals.length) {
      body.append(row(["No predictions in this window."], 5));
      return;
    }
    for (const t of d.totals) {
      const tr = document.createElement("tr");
      tr.dataset.category = t.category;
      tr.append(cell("th", t.category, { scope: "row" }));
      for (const k of ["negative", "neutral", "positive", "total"]) {
        tr.append(cell("td", String(t[k]), { class: "num" }));
      }
      body.append(tr);
    }
  }

  function fillLatest(d) {
    const body = $("latest");
    body.replaceChildren();
    if (!d.latest.length) {
      body.append(row(["None yet."], 6));
      return;
    }
    for (const p of d.latest) {
      const tr = document.createElement("tr");
      const label = cell("td", "");
      label.append(cell("span", p.label, { class: `label label-${p.label}` }));
      tr.append(cell("td", clock(p.ts, true)), cell("td", p.category || "unknown"),
        cell("td", p.product || "–"), label,
        cell("td", (p.modalities || []).map((m) => (m === "image" ? "photo" : m)).join(" + ")),
        cell("td", p.model_version || "–"));
      body.append(tr);
    }
  }

  // --- helpers ---

  function svgEl(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function cell(tag, text, attrs) {
    const e = document.createElement(tag);
    e.textContent = text;
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    return e;
  }

  function row(texts, span) {
    const tr = document.createElement("tr");
    tr.append(cell("td", texts[0], { colspan: String(span), class: "hint" }));
    return tr;
  }

  function niceCeil(v) {
    // The top of the y axis: 4 ticks of a round whole step (1, 2, 5 × 10^k) covering v.
    for (let p = 1; ; p *= 10) {
      for (const m of [1, 2, 5]) if (4 * m * p >= v) return 4 * m * p;
    }
  }

  function fmtCount(v) { return Number.isInteger(v) ? String(v) : v.toFixed(1); }

  function clock(ts, seconds) {
    const opts = { hour: "2-digit", minute: "2-digit" };
    if (seconds) opts.second = "2-digit";
    return new Date(ts * 1000).toLocaleTimeString([], opts);
  }

  function bucketWords(s) {
    if (s % 3600 === 0) return s === 3600 ? "hour" : `${s / 3600} hours`;
    if (s % 60 === 0) return s === 60 ? "minute" : `${s / 60} minutes`;
    return `${s} seconds`;
  }

  function windowWords(m) {
    if (m % 60 === 0) return m === 60 ? "hour" : `${m / 60} hours`;
    return `${m} minutes`;
  }

  load();
  schedule();
})();
