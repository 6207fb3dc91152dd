/* moex browser: renders the pages from the data scripts written by `moex browse` (no network, no libraries).
   Each data script calls MOEX.index / MOEX.page / MOEX.model with its object. */
"use strict";
const MOEX = (window.MOEX = {pieces: null, pending: null});

const $ = (sel) => document.querySelector(sel);
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"})[c]);
const num = (v, d = 3) => (v === null || v === undefined || Number.isNaN(v) ? "–" : Number(v).toFixed(d));
const param = (k) => new URLSearchParams(location.search).get(k);

MOEX.load = function (src, then) {
  const s = document.createElement("script");
  s.src = src;
  s.onload = then || null;
  s.onerror = () => { $("#main").innerHTML = `<p class="error">Could not load ${esc(src)}: is this the directory moex browse wrote?</p>`; };
  document.head.appendChild(s);
};

MOEX.start = function (kind) {
  MOEX.kind = kind;
  if (kind === "index") MOEX.load("data/index.js");
  else if (kind === "model") MOEX.load("data/model.js");
  else {
    const id = parseInt(param("id") || "0", 10);
    const dir = kind === "feature" ? "features" : "experts";
    MOEX.load("assets/pieces.js", () => MOEX.load(`data/${dir}/${id}.js`));
  }
};

/* ---- shading, boards, charts ------------------------------------------------------------------------- */
function shade(tokens, acts, scale, peak) {
  const top = scale > 0 ? scale : Math.max(1e-9, ...acts);
  return tokens.map((t, i) => {
    const a = Math.max(0, acts[i] || 0) / top;
    const text = t.replace(/\n/g, "⏎").replace(/ /g, "\u00a0");
    const cls = i === peak ? "tok peak" : "tok";
    return `<span class="${cls}" style="background:rgba(255,110,0,${Math.min(1, a).toFixed(3)})" title="${num(acts[i], 4)}">${esc(text)}</span>`;
  }).join("");
}

const PIECE_NAMES = {p: "pawn", n: "knight", b: "bishop", r: "rook", q: "queen", k: "king"};

function squareXY(sq, size) { return [(sq % 8) * size, (7 - Math.floor(sq / 8)) * size]; }
function squareIndex(name) { return (name.charCodeAt(0) - 97) + 8 * (parseInt(name[1], 10) - 1); }

/* A board as python-chess draws it (chess.svg.board, no coordinates): its squares, colours and piece art. */
function boardSVG(fen, move, px) {
  const P = MOEX.pieces, s = P.square, C = P.colors;
  const from = move ? squareIndex(move.slice(0, 2)) : -1, to = move ? squareIndex(move.slice(2, 4)) : -1;
  let out = `<svg class="board" xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" viewBox="0 0 ${8 * s} ${8 * s}" width="${px}" height="${px}">`;
  for (let sq = 0; sq < 64; sq++) {
    const [x, y] = squareXY(sq, s);
    const light = (sq % 8 + Math.floor(sq / 8)) % 2 === 1 ? "light" : "dark";
    const last = sq === from || sq === to ? " lastmove" : "";
    const name = String.fromCharCode(97 + (sq % 8)) + (Math.floor(sq / 8) + 1);
    out += `<rect x="${x}" y="${y}" width="${s}" height="${s}" class="square ${light}${last} ${name}" fill="${C["square " + light + last]}"/>`;
  }
  const rows = fen.split(" ")[0].split("/");
  rows.forEach((row, r) => {
    let file = 0;
    for (const ch of row) {
      if (/\d/.test(ch)) { file += parseInt(ch, 10); continue; }
      const id = `${ch === ch.toUpperCase() ? "white" : "black"}-${PIECE_NAMES[ch.toLowerCase()]}`;
      out += `<use href="#${id}" xlink:href="#${id}" transform="translate(${file * s}, ${r * s})"/>`;
      file += 1;
    }
  });
  if (move) {
    const [x1, y1] = squareXY(from, s), [x2, y2] = squareXY(to, s);
    const cx1 = x1 + s / 2, cy1 = y1 + s / 2, cx2 = x2 + s / 2, cy2 = y2 + s / 2;
    const len = Math.hypot(cx2 - cx1, cy2 - cy1), dx = (cx2 - cx1) / len, dy = (cy2 - cy1) / len, head = s * 0.4;
    const bx = cx2 - dx * head, by = cy2 - dy * head;
    out += `<line class="arrow" x1="${cx1}" y1="${cy1}" x2="${bx}" y2="${by}" stroke="${C["arrow green"]}" stroke-width="${s / 5}"/>`;
    out += `<polygon class="arrow" points="${cx2},${cy2} ${bx - dy * head / 2},${by + dx * head / 2} ${bx + dy * head / 2},${by - dx * head / 2}" fill="${C["arrow green"]}"/>`;
  }
  return out + "</svg>";
}

function pieceDefs() { return MOEX.pieces ? `<svg class="defs" width="0" height="0" aria-hidden="true">${MOEX.pieces.defs}</svg>` : ""; }

/* Firing rate given a piece type on each square: one 8x8 grid per piece plane. */
function heatmapSVG(rates, plane, px) {
  const s = 10;
  let out = `<svg class="heat" viewBox="0 0 ${8 * s} ${8 * s}" width="${px}" height="${px}">`;
  for (let sq = 0; sq < 64; sq++) {
    const [x, y] = squareXY(sq, s), v = rates[sq];
    const fill = v === null ? "#ddd" : `rgba(200,30,0,${Math.min(1, v).toFixed(3)})`;
    const name = String.fromCharCode(97 + (sq % 8)) + (Math.floor(sq / 8) + 1);
    out += `<rect x="${x}" y="${y}" width="${s}" height="${s}" fill="${fill}" stroke="#eee" stroke-width="0.3"><title>${plane} ${name}: ${v === null ? "never there" : num(v)}</title></rect>`;
  }
  return out + "</svg>";
}

/* A small SVG chart: series of {name, x, y, kind: "line"|"dots"|"bars"}. */
function chartSVG(series, opt = {}) {
  const W = opt.width || 520, H = opt.height || 220, m = {l: 48, r: 10, t: 10, b: 34};
  const xs = series.flatMap((s) => s.x).filter((v) => v !== null), ys = series.flatMap((s) => s.y).filter((v) => v !== null);
  if (!xs.length) return "<p>no data</p>";
  let x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = opt.y0 !== undefined ? opt.y0 : Math.min(...ys), y1 = Math.max(...ys);
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) y1 = y0 + 1;
  const X = (v) => m.l + ((v - x0) / (x1 - x0)) * (W - m.l - m.r), Y = (v) => H - m.b - ((v - y0) / (y1 - y0)) * (H - m.t - m.b);
  const colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];
  let out = `<svg class="chart" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}">`;
  out += `<line x1="${m.l}" y1="${H - m.b}" x2="${W - m.r}" y2="${H - m.b}" stroke="#444"/><line x1="${m.l}" y1="${m.t}" x2="${m.l}" y2="${H - m.b}" stroke="#444"/>`;
  for (const v of [y0, y1]) out += `<text x="${m.l - 4}" y="${Y(v) + 4}" text-anchor="end">${num(v, opt.ydigits === undefined ? 3 : opt.ydigits)}</text>`;
  out += `<text x="${m.l}" y="${H - m.b + 14}">${num(x0, opt.xdigits || 0)}</text><text x="${W - m.r}" y="${H - m.b + 14}" text-anchor="end">${num(x1, opt.xdigits || 0)}</text>`;
  out += `<text x="${(W + m.l) / 2}" y="${H - 4}" text-anchor="middle">${esc(opt.xlabel || "")}</text>`;
  out += `<text transform="translate(12,${(H - m.b) / 2}) rotate(-90)" text-anchor="middle">${esc(opt.ylabel || "")}</text>`;
  series.forEach((s, i) => {
    const c = colors[i % colors.length];
    if (s.kind === "bars") {
      const bw = (W - m.l - m.r) / s.y.length;
      s.y.forEach((v, j) => { out += `<rect class="bar" x="${m.l + j * bw + 1}" y="${Y(v)}" width="${Math.max(1, bw - 2)}" height="${H - m.b - Y(v)}" fill="${c}"><title>${esc(s.labels ? s.labels[j] : j)}: ${v}</title></rect>`; });
    } else if (s.kind === "dots") {
      s.x.forEach((v, j) => { out += `<circle cx="${X(v).toFixed(1)}" cy="${Y(s.y[j]).toFixed(1)}" r="1.6" fill="${c}" fill-opacity="0.35"/>`; });
    } else {
      const pts = s.x.map((v, j) => (s.y[j] === null ? null : `${X(v).toFixed(1)},${Y(s.y[j]).toFixed(1)}`)).filter(Boolean).join(" ");
      out += `<polyline points="${pts}" fill="none" stroke="${c}" stroke-width="1.5"/>`;
      if (s.x.length <= 30) s.x.forEach((v, j) => { if (s.y[j] !== null) out += `<circle cx="${X(v).toFixed(1)}" cy="${Y(s.y[j]).toFixed(1)}" r="2.5" fill="${c}"/>`; });
    }
    if (s.name) out += `<text x="${W - m.r - 4}" y="${m.t + 12 + 14 * i}" text-anchor="end" fill="${c}">${esc(s.name)}</text>`;
  });
  return out + "</svg>";
}

function histogram(p) {
  const labels = p.histogram.map((_, i) => `${((i * 100) / p.bins).toFixed(0)}–${(((i + 1) * 100) / p.bins).toFixed(0)}% of f_max`);
  return chartSVG([{kind: "bars", x: [0, 1], y: p.histogram, labels}], {y0: 0, xlabel: "activation / f_max (firing tokens)", ylabel: "tokens", xdigits: 1, ydigits: 0, height: 160});
}

function kv(rows) { return `<table class="kv">${rows.filter((r) => r).map(([k, v]) => `<tr><th>${esc(k)}</th><td>${v}</td></tr>`).join("")}</table>`; }

function explanationBlock(p, scoreRows) {
  if (!p.explanation) return "";
  const judge = p.judge ? `<p class="note judge">${esc(p.judge)}</p>` : "";
  return `<section class="explanation"><h2>Explanation</h2><blockquote>${esc(p.explanation)}</blockquote>${kv(scoreRows)}${judge}</section>`;
}

function windowsBlock(windows, scale) {
  return windows.map((w) => `<div class="window"><span class="score">${num(w.score)}</span> <span class="text">${shade(w.tokens, w.acts, scale)}</span></div>`).join("");
}

/* ---- index ---------------------------------------------------------------------------------------------- */
const PAGE = 100;

MOEX.index = function (data) {
  $("#title").textContent = data.title;
  document.title = `moex: ${data.title}`;
  if (data.experts) $("#nav-experts").hidden = false;
  MOEX.data = data;
  const showExperts = () => data.experts && location.hash === "#experts";
  const render = () => (showExperts() ? MOEX.renderTable("experts") : MOEX.renderTable("features"));
  window.addEventListener("hashchange", render);
  render();
};

const COLUMNS = {
  features: [["id", "feature"], ["frequency", "firing frequency"], ["f_max", "max activation"], ["best_f1", "best BSP F1"],
    ["best_bsp", "best BSP"], ["detection", "detection"], ["fuzzing", "fuzzing"], ["explanation", "explanation"]],
  experts: [["id", "expert"], ["share", "routing share"], ["mean_l0", "mean l0 of units"], ["top_tokens", "top tokens"],
    ["f1", "F1"], ["explanation", "explanation"]],
};

MOEX.renderTable = function (which) {
  const data = MOEX.data[which];  // columns with no value at all (e.g. explanations not given) are left out
  const cols = COLUMNS[which].filter(([k]) => k in data && (k === "id" || data[k].some((v) => v !== null && v !== undefined)));
  const P = new URLSearchParams(location.search);  // the state lives in the URL: a view can be linked to
  const st = (MOEX.state = MOEX.state && MOEX.state.which === which ? MOEX.state : {which, sort: P.get("sort") || "id",
    desc: P.get("desc") === "1", page: Math.max(0, (parseInt(P.get("page"), 10) || 1) - 1), q: P.get("q") || "",
    minFreq: parseFloat(P.get("min_frequency")) || 0, minMax: parseFloat(P.get("min_max")) || 0, alive: P.get("firing") === "1"});
  if (!(st.sort in data)) st.sort = "id";
  const judge = MOEX.data.judge && MOEX.data.judge[which];
  $("#main").innerHTML = `<h1>${which === "features" ? "Features" : "Experts"} <small>${esc(MOEX.data.title)}</small></h1>${judge ? `<p class="note judge">${esc(judge)}</p>` : ""}
    <div class="filters"><input id="q" type="search" placeholder="search explanations and BSPs" value="${esc(st.q)}">
    ${which === "features" ? `<label>min frequency <input id="minFreq" type="number" step="0.001" min="0" value="${st.minFreq}"></label>
    <label>min max activation <input id="minMax" type="number" step="0.01" value="${st.minMax}"></label>
    <label><input id="alive" type="checkbox" ${st.alive ? "checked" : ""}> firing only</label>` : ""}
    ${MOEX.data.experts ? `<a href="index.html${which === "features" ? "#experts" : "#"}">${which === "features" ? "show experts" : "show features"}</a>` : ""}</div>
    <p id="count"></p><table class="list" id="list"><thead><tr>${cols.map(([k, label]) => `<th data-key="${k}" class="${st.sort === k ? (st.desc ? "desc" : "asc") : ""}">${label}</th>`).join("")}</tr></thead><tbody></tbody></table>
    <div class="pager"><button id="prev">previous</button> <span id="pageno"></span> <button id="next">next</button></div>`;
  const d = MOEX.data[which];
  const n = d.id.length;
  const draw = () => {
    const q = st.q.toLowerCase();
    let idx = [...Array(n).keys()].filter((i) => {
      if (which === "features") {
        if ((d.frequency[i] || 0) < st.minFreq || (d.f_max[i] || 0) < st.minMax) return false;
        if (st.alive && !(d.frequency[i] > 0)) return false;
      }
      if (!q) return true;
      return [d.explanation[i], d.best_bsp && d.best_bsp[i], d.top_tokens && d.top_tokens[i], String(d.id[i])].some((v) => v && String(v).toLowerCase().includes(q));
    });
    const key = st.sort, sign = st.desc ? -1 : 1;
    idx.sort((a, b) => {
      const va = d[key][a], vb = d[key][b];
      if (va === vb) return d.id[a] - d.id[b];
      if (va === null || va === undefined) return 1;
      if (vb === null || vb === undefined) return -1;
      return (va < vb ? -1 : 1) * sign;
    });
    const pages = Math.max(1, Math.ceil(idx.length / PAGE));
    st.page = Math.min(st.page, pages - 1);
    const href = which === "features" ? "feature.html" : "expert.html";
    $("#list tbody").innerHTML = idx.slice(st.page * PAGE, (st.page + 1) * PAGE).map((i) => `<tr>${cols.map(([k]) => {
      const v = d[k][i];
      const cell = k === "id" ? `<a href="${href}?id=${v}">${v}</a>` : typeof v === "number" ? num(v, k === "frequency" || k === "share" ? 4 : 3) : esc(v === null ? "" : v);
      return `<td class="${k}">${cell}</td>`;
    }).join("")}</tr>`).join("");
    $("#count").textContent = `${idx.length} of ${n} ${which}`;
    $("#pageno").textContent = `page ${st.page + 1} of ${pages}`;
    const q2 = new URLSearchParams();
    for (const [k, v, dflt] of [["sort", st.sort, "id"], ["desc", st.desc ? "1" : "0", "0"], ["page", String(st.page + 1), "1"], ["q", st.q, ""],
      ["min_frequency", String(st.minFreq), "0"], ["min_max", String(st.minMax), "0"], ["firing", st.alive ? "1" : "0", "0"]]) if (v !== dflt) q2.set(k, v);
    history.replaceState(null, "", `${location.pathname}${q2.toString() ? "?" + q2 : ""}${location.hash}`);
    $("#prev").disabled = st.page === 0;
    $("#next").disabled = st.page >= pages - 1;
  };
  document.querySelectorAll("#list th").forEach((th) => th.addEventListener("click", () => {
    const k = th.dataset.key;
    st.desc = st.sort === k ? !st.desc : k !== "id";
    st.sort = k;
    document.querySelectorAll("#list th").forEach((h) => (h.className = h.dataset.key === k ? (st.desc ? "desc" : "asc") : ""));
    draw();
  }));
  const bind = (id, prop, parse) => { const el = $("#" + id); if (el) el.addEventListener("input", () => { st[prop] = parse(el); st.page = 0; draw(); }); };
  bind("q", "q", (el) => el.value);
  bind("minFreq", "minFreq", (el) => parseFloat(el.value) || 0);
  bind("minMax", "minMax", (el) => parseFloat(el.value) || 0);
  bind("alive", "alive", (el) => el.checked);
  $("#prev").addEventListener("click", () => { st.page -= 1; draw(); });
  $("#next").addEventListener("click", () => { st.page += 1; draw(); });
  draw();
};

/* ---- feature and expert pages ---------------------------------------------------------------------- */
function prevNext(kind, p) {
  const link = (id, text) => (id >= 0 && id < p.of ? `<a href="${kind}.html?id=${id}">${text}</a>` : "");
  return `<span class="prevnext">${link(p.id - 1, `← ${p.id - 1}`)} ${link(p.id + 1, `${p.id + 1} →`)} <small>of ${p.of}</small></span>`;
}

MOEX.page = function (p) {
  if (MOEX.kind === "expert") return MOEX.expertPage(p);
  document.title = `moex: feature ${p.id}`;
  let html = `${pieceDefs()}<h1>Feature ${p.id} ${prevNext("feature", p)}</h1>` +
    kv([["max activation (f_max)", num(p.f_max, 4)], ["firing frequency", num(p.frequency, 5)]].concat(
      p.expert === null || p.expert === undefined ? [] : [["expert", `<a href="expert.html?id=${p.expert}">expert ${p.expert}</a> (this feature is one of its units)`]])) +
    explanationBlock(p, [["detection accuracy", num(p.detection)], ["fuzzing accuracy", num(p.fuzzing)]]);
  html += `<section><h2>Activation histogram</h2>${histogram(p)}</section>`;
  if (!p.top.length) html += `<p class="dead">This feature never fires on the browsed ${p.kind === "chess" ? "games" : "text"}.</p>`;
  if (p.kind === "chess") {
    html += `<section><h2>Top-activating positions</h2><p class="note">One per game: the board before the move being written at the peak character (arrow), the transcript shaded by activation.</p><div class="boards">` +
      p.top.map((t) => `<figure class="position">${boardSVG(t.fen, t.move, 220)}<figcaption><b>${num(t.score)}</b> game ${t.game}, ${esc(t.label)}<div class="transcript">${shade([...t.text], t.acts, p.f_max, t.peak)}</div></figcaption></figure>`).join("") + "</div></section>";
    html += `<section><h2>Characters it fires on</h2><table class="list"><thead><tr><th>character</th><th>P(fires | character)</th><th>share of its firing</th></tr></thead><tbody>` +
      p.characters.map((c) => `<tr><td class="token">${esc(JSON.stringify(c.char))}</td><td>${num(c.rate)}</td><td>${num(c.share)}</td></tr>`).join("") + "</tbody></table></section>";
    html += `<section><h2>Board-state properties it classifies best</h2><p class="note">Ranked by F1 above the always-true classifier's (2b/(1+b) for base rate b), each at its best threshold with at least 10 true positives on the train games.</p>` +
      (p.bsps.length ? `<table class="list"><thead><tr><th>BSP</th><th>F1</th><th>above base rate</th><th>precision</th><th>recall</th><th>true positives</th><th>on at</th><th>base rate</th><th>threshold (× f_max)</th></tr></thead><tbody>` +
      p.bsps.map((b) => `<tr><td>${esc(b.name)}</td><td>${num(b.f1)}</td><td>${num(b.lift)}</td><td>${num(b.precision)}</td><td>${num(b.recall)}</td><td>${b.tp}</td><td>${b.positives}</td><td>${num(b.base_rate)}</td><td>${num(b.threshold, 1)}</td></tr>`).join("") + "</tbody></table>"
        : `<p class="empty">${p.fires_at_positions === 0 ? `It never fires at the ${p.n_positions} evaluation positions (the '.' before White's moves), where the board labels are: it has no BSP to classify.` : `No BSP qualifies: it fires at ${p.fires_at_positions} of ${p.n_positions} evaluation positions, but no BSP has 10 true positives with an F1 above the always-true classifier's.`}</p>`) + "</section>";
    const planes = ["wP", "wN", "wB", "wR", "wQ", "wK", "bP", "bN", "bB", "bR", "bQ", "bK"];
    html += `<section><h2>Firing rate given each piece on each square</h2><p class="note">P(activation &gt; 0 | the piece is on the square) at the evaluation positions; grey: never there.</p><div class="heatmaps">` +
      p.heatmap.map((rates, i) => `<figure class="heatmap">${heatmapSVG(rates, planes[i], 110)}<figcaption>${planes[i]}</figcaption></figure>`).join("") + "</div></section>";
  } else {
    html += `<section><h2>Top-activating windows</h2>${windowsBlock(p.top, p.f_max)}</section>`;
    html += `<section><h2>Samples by activation decile</h2>` + p.deciles.slice().reverse().map((d) => d.windows.length ? `<h3>decile ${d.decile} (${(d.decile - 1) * 10}–${d.decile * 10}% of f_max)</h3>${windowsBlock(d.windows, p.f_max)}` : "").join("") + "</section>";
  }
  $("#main").innerHTML = html;
};

MOEX.expertPage = function (p) {
  document.title = `moex: expert ${p.id}`;
  let html = `<h1>Expert ${p.id} ${prevNext("expert", p)}</h1>` +
    kv([["routing share (tokens routed to it)", num(p.share, 4)], ["mean l0 of its units on routed tokens", `${num(p.mean_l0, 1)} of ${p.units}`],
      p.units_are_features ? ["its units", `features <a href="feature.html?id=${p.id * p.units}">${p.id * p.units}</a> to <a href="feature.html?id=${(p.id + 1) * p.units - 1}">${(p.id + 1) * p.units - 1}</a> of the MLP code`] : null]) +
    explanationBlock(p, [["F1", num(p.f1)], ["precision", num(p.precision)], ["recall", num(p.recall)]]);
  if (p.token_baseline) {
    const t = p.token_baseline;
    html += `<section><h2>Token baseline (no LLM)</h2><p class="note">The tokens over-represented where this expert is routed, scored on the same held-out and negative windows; routing F1: those tokens as a predictor of the positions routed to it.</p><blockquote>${esc(t.explanation)}</blockquote>` +
      kv([["detection F1", num(t.f1)], ["random tokens' F1", num(t.random_f1)], ["routing F1", num(t.routing_f1)]]) + "</section>";
  }
  html += `<section><h2>Tokens most often routed to it</h2><table class="list"><thead><tr><th>token</th><th>routed</th><th>share of the token's occurrences</th></tr></thead><tbody>` +
    p.top_tokens.map((t) => `<tr><td class="token">${esc(JSON.stringify(t.token))}</td><td>${t.count}</td><td>${num(t.share_of_token)}</td></tr>`).join("") + "</tbody></table></section>";
  html += `<section><h2>Top windows by expert-level activation</h2><p class="note">Router weight × norm of the expert's output, 0 where the token is not routed to it.</p>${windowsBlock(p.top, 0)}</section>`;
  $("#main").innerHTML = html;
};

/* ---- model page ---------------------------------------------------------------------------------------- */
MOEX.model = function (m) {
  document.title = `moex: ${m.model.name}`;
  $("#title").textContent = `${m.model.name}: ${m.site} layer ${m.layer}`;
  let html = `<h1>Model ${esc(m.model.name)}</h1>` + kv(Object.entries(m.model).map(([k, v]) => [k, esc(v)]).concat([
    ["browsed", `${esc(m.site)} of layer ${m.layer}: ${m.width} features, ${m.alive} fire; mean l0 ${num(m.mean_l0, 1)} per token`],
    ["corpus", `${m.kind}: ${m.rows} rows, ${m.tokens} tokens`], ["fingerprint", esc(m.fingerprint)]]));
  if (m.loss) {
    html += `<section><h2>Loss</h2>${chartSVG([{name: "train", x: m.loss.step, y: m.loss.train_loss}, {name: "val", x: m.loss.val_step, y: m.loss.val_loss}], {xlabel: "step", ylabel: "loss"})}</section>`;
  }
  if (m.chess) {
    const c = m.chess, t = c.coverage_by_threshold.map((_, i) => i / 10);
    html += `<section><h2>Coverage and reconstruction</h2>` + kv([["coverage", num(c.coverage)], ["reconstruction", num(c.reconstruction)],
      ["coverage (B.2, threshold per BSP)", num(c.coverage_per_bsp)], ["reconstruction (B.3, mean per board)", num(c.reconstruction_per_board)],
      ["alive features", `${c.alive} of ${c.features}`], ["games / positions", `${c.n_games} / ${c.n_positions}`]]) +
      chartSVG([{name: "coverage", x: t, y: c.coverage_by_threshold}, {name: "reconstruction", x: t, y: c.reconstruction_by_threshold}], {xlabel: "threshold (× f_max)", ylabel: "score", xdigits: 1, y0: 0}) + "</section>";
  }
  if (m.chess_eval) {
    const e = m.chess_eval, phases = Object.keys(e.legal.greedy.by_phase);
    const pct = (v) => v === null || v === undefined ? "–" : `${(100 * v).toFixed(1)}%`;
    html += `<section><h2>Does it play chess?</h2><p class="note">Legal next moves after ${e.n_prefixes} held-out game prefixes (moex eval chess).</p>` +
      `<table class="list"><thead><tr><th>writer</th><th>legal</th><th>the game's move</th>${phases.map((p) => `<th>${esc(p)}</th>`).join("")}</tr></thead><tbody>` +
      [["greedy", "model, greedy"], ["sampled", `model, sampled (T = ${e.temperature})`], ["chance", "random characters"]].map(([k, label]) =>
        `<tr><td>${label}</td><td>${pct(e.legal[k].rate)}</td><td>${pct(e.legal[k].game_move_rate)}</td>${phases.map((p) => `<td>${pct(e.legal[k].by_phase[p])}</td>`).join("")}</tr>`).join("") + "</tbody></table>";
    if (e.probes) {
      html += `<h3>Linear board probes (13-class state of each square, test accuracy)</h3><table class="list"><thead><tr><th>probe from</th><th>accuracy</th></tr></thead><tbody>` +
        `<tr><td>baseline: most common class per square</td><td>${num(e.probes.baseline)}</td></tr><tr><td>baseline: the same per move number</td><td>${num(e.probes.move_baseline)}</td></tr>` +
        Object.entries(e.probes.layers).map(([l, a]) => `<tr><td>layer ${l}${Number(l) === e.probes.best_layer ? " (best)" : ""}</td><td>${num(a)}</td></tr>`).join("") + "</tbody></table>";
    }
    if (e.match) {
      html += `<h3>Games against Stockfish</h3><table class="list"><thead><tr><th>player</th><th>level</th><th>games</th><th>W / D / L</th><th>forfeits</th><th>illegal tries</th><th>Elo (95%)</th></tr></thead><tbody>` +
        e.match.map((r) => `<tr><td>${esc(r.player)}</td><td>${esc(String(r.level))}</td><td>${r.games}</td><td>${r.wins} / ${r.draws} / ${r.losses}</td><td>${r.forfeits}</td><td>${pct(r.illegal_rate)}</td><td>${r.elo ? (r.elo.bounded ? `${Math.round(r.elo.elo)} (${Math.round(r.elo.low)}–${Math.round(r.elo.high)})` : r.elo.n_games ? (r.elo.low <= -1000 ? `below ${Math.round(r.elo.high)}` : `above ${Math.round(r.elo.low)}`) : "–") : ""}</td></tr>`).join("") + "</tbody></table>";
    }
    html += "</section>";
  }
  if (m.router) {
    const r = m.router;
    html += `<section><h2>Router analysis</h2>` + kv([["router", esc(r.router)], ["Pearson r, gate logit vs counted l0", num(r.pearson_r_gate_vs_l0)],
      ["mean l0 of the selected experts", `${num(r.mean_l0_selected, 1)} of ${r.d_expert}`], ["mean l0 of all experts", num(r.mean_l0_all, 1)], ["tokens", r.tokens]]) +
      chartSVG([{kind: "dots", x: r.sample_gate, y: r.sample_l0}], {xlabel: "gate logit", ylabel: "counted l0 of the expert", xdigits: 2, ydigits: 0}) + "</section>";
  }
  if (m.autointerp) {
    const a = m.autointerp;
    html += `<section><h2>Automated interpretability</h2>` + kv([["LLM", esc(a.llm)], ["scorer", esc(a.scorer)], ["activation rule", esc(a.activation_rule)],
      ["features scored", a.features_scored], ["detection accuracy", num(a.detection)], ["fuzzing accuracy", num(a.fuzzing)],
      ["judge's yes rate", num(a.yes_rate)], ["token baseline (no LLM): detection accuracy", num(a.token_detection)],
      ["random tokens: detection accuracy", num(a.random_detection)]]) + (a.judge ? `<p class="note judge">${esc(a.judge)}</p>` : "") + "</section>";
  }
  if (m.experts_explained) html += `<section><h2>Expert auto-interpretation</h2>${kv([["mean F1 of this layer's experts", m.experts_explained.mean_f1 == null ? "no LLM" : num(m.experts_explained.mean_f1)], ["scorer", esc(m.experts_explained.scorer || "-")], ["token baseline (no LLM): mean F1", num(m.experts_explained.mean_token_f1)], ["random tokens: mean F1", num(m.experts_explained.mean_random_token_f1)], ["routing F1 of the token baseline", num(m.experts_explained.mean_routing_f1)]])}${m.experts_explained.judge ? `<p class="note judge">${esc(m.experts_explained.judge)}</p>` : ""}</section>`;
  if (m.probe) {
    const ks = m.probe.ks;
    html += `<section><h2>k-sparse probing (this layer)</h2><table class="list"><thead><tr><th>concept</th><th>pos</th><th>neg</th>${ks.map((k) => `<th>k=${k}</th>`).join("")}</tr></thead><tbody>` +
      Object.entries(m.probe.concepts).map(([name, c]) => `<tr><td>${esc(name)}</td><td>${c.positives}</td><td>${c.negatives}</td>${ks.map((k) => `<td>${num(c.best[k])}</td>`).join("")}</tr>`).join("") + "</tbody></table></section>";
  }
  $("#main").innerHTML = html;
};
