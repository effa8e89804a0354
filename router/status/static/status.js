// The status page's script: no dependencies, no build step. It asks for the admin key, keeps it in
// sessionStorage (this tab only), polls GET /admin/status with it every POLL_MS (one request at a
// time, each bounded by TIMEOUT_MS) and draws the answer; data is only ever set as text, never as HTML.
"use strict";
(() => {
  const STORE = "router-status-admin-key";
  // ?every=<ms> polls faster or slower (250 ms at the least): the browser tests poll fast
  const POLL_MS = Math.max(250, Number(new URLSearchParams(location.search).get("every")) || 2000);
  const TIMEOUT_MS = 8000;
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);
  let dim = "model";
  let last = null;
  let skew = 0;  // server clock minus this browser's, in seconds: countdowns use the server's
  let timer = null;

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function row(tbody, cells) {
    const tr = document.createElement("tr");
    for (const c of cells) tr.appendChild(c instanceof Node ? c : el("td", c));
    tbody.appendChild(tr);
    return tr;
  }
  function num(v) { return el("td", v === null || v === undefined ? "–" : v, "num"); }
  function td(node) { const t = el("td"); t.appendChild(node); return t; }
  function pill(text, kind) { return el("span", text, "pill " + (kind || "")); }
  function clear(tbody) { while (tbody.firstChild) tbody.removeChild(tbody.firstChild); }
  function clock(at) { return at ? new Date(at * 1000).toLocaleTimeString() : "–"; }
  function now() { return Date.now() / 1000 + skew; }

  // --- charts: one inline SVG per series set --------------------------------------------------
  function chart(box, series, colors, width, height) {
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.setAttribute("preserveAspectRatio", "none");
    let max = 0;
    for (const s of series) for (const v of s) if (v !== null && v > max) max = v;
    max = max || 1;
    series.forEach((s, i) => {
      const step = s.length > 1 ? width / (s.length - 1) : width;
      const pts = [];
      s.forEach((v, j) => { if (v !== null) pts.push(`${(j * step).toFixed(1)},${(height - 2 - (v / max) * (height - 4)).toFixed(1)}`); });
      const line = document.createElementNS(SVG, "polyline");
      line.setAttribute("points", pts.join(" "));
      line.setAttribute("fill", "none");
      line.setAttribute("stroke", colors[i]);
      line.setAttribute("stroke-width", "1.5");
      line.setAttribute("vector-effect", "non-scaling-stroke");
      svg.appendChild(line);
      if (pts.length) {  // the newest point as a dot: a lone point draws no line
        const [x, y] = pts[pts.length - 1].split(",");
        const dot = document.createElementNS(SVG, "circle");
        dot.setAttribute("cx", x); dot.setAttribute("cy", y); dot.setAttribute("r", "2");
        dot.setAttribute("fill", colors[i]);
        svg.appendChild(dot);
      }
    });
    if (box) {  // a full chart: its scale; a sparkline goes without
      const label = document.createElementNS(SVG, "text");
      label.setAttribute("x", "2"); label.setAttribute("y", "10");
      label.setAttribute("font-size", "9"); label.setAttribute("fill", "#6b7585");
      label.textContent = `max ${Math.round(max * 100) / 100}`;
      svg.appendChild(label);
      clear(box);
      box.appendChild(svg);
    }
    return svg;
  }

  // --- sections ---------------------------------------------------------------------------------
  function drawHeader(d) {
    const c = d.config;
    $("generation").textContent = c.generation;
    $("reloads").textContent = `reloads: ${c.reloads.ok} ok, ${c.reloads.failed} failed` +
      (c.workers ? ` · ${c.workers.length} workers` : "");
    $("listen").textContent = d.listen;
    $("answered").textContent = d.worker !== undefined ? `answered by worker ${d.worker}` : "single process";
    $("auth-mode").textContent = d.auth.mode;
    $("auth-summary").textContent = d.auth.summary;
    const t = d.traffic.totals;
    $("total-rps").textContent = t.rps;
    $("total-detail").textContent = `${t.requests} requests · ${t.errors} errors · p99 ${t.p99_ms ?? "–"} ms`;
    for (const w of document.querySelectorAll(".window")) w.textContent = d.traffic.window_seconds;
    const err = c.last_error;
    const box = $("last-error");
    if (err && err.errors.length) {
      // fixed by a later good reload: still shown (where it was), greyed, with the reload that fixed it
      const fixed = err.fixed_by;
      box.className = fixed ? "fixed" : "bad";
      box.dataset.fixedBy = fixed ? fixed.generation : "";
      box.textContent = (fixed ? `fixed by generation ${fixed.generation} (reloaded ${clock(fixed.at)}) · ` : "") +
        `${clock(err.at)} (${err.reason}): ` + err.errors.map((e) => e.text).join("\n");
    } else {
      box.className = "muted";
      box.textContent = "none";
    }
  }

  function drawProviders(d) {
    const tb = $("providers").tBodies[0];
    clear(tb);
    for (const p of d.providers) {
      const kind = p.state === "live" ? "ok" : p.state === "unavailable" ? "bad" : "warn";
      const label = p.state === "simulated" ? "SIMULATED" : p.state;
      const circuit = p.circuit ? p.circuit.state : "off";
      const ckind = circuit === "closed" ? "ok" : circuit === "off" ? "" : "bad";
      row(tb, [el("td", p.name), td(pill(label, kind)), num(p.accounts),
        td(pill(circuit, ckind)), el("td", p.summary, "small muted")]).dataset.provider = p.name;
    }
  }

  function cooling(a) {  // the time left of a cooldown, or of an ejection (an open circuit)
    const until = a.cooling_until || a.ejected_until;
    if (!until) {
      const models = Object.keys(a.cooling_models || {});
      return models.length ? `models: ${models.join(", ")}` : "–";
    }
    const left = Math.max(0, until - now());
    return `${left.toFixed(1)} s` + (a.cooling_until ? "" : " (ejected)");
  }

  function drawAccounts(d) {
    const tb = $("accounts").tBodies[0];
    clear(tb);
    for (const a of d.accounts) {
      const state = a.disabled ? "disabled" : a.state;
      const kind = state === "ok" ? "ok" : state === "disabled" || state === "ejected" ? "bad" : "warn";
      const circuit = a.circuit ? a.circuit.state : "off";  // none: its provider has no circuit breaking
      const ckind = circuit === "closed" ? "ok" : circuit === "off" ? "" : "bad";
      const tr = row(tb, [el("td", a.key, "mono"), el("td", a.email), td(pill(state, kind)),
        el("td", cooling(a), "num countdown"), td(pill(circuit, ckind)),
        num(a.requests), num(a.in_flight), num(a.error_rate)]);
      tr.dataset.account = a.key;
      tr.dataset.state = state;
    }
  }

  function drawTraffic(d) {
    const t = d.traffic.totals;
    chart($("chart-requests"), [t.requests_per_s], ["#2b6cb0"], 300, 90);
    chart($("chart-errors"), [t.errors_per_s], ["#c53030"], 300, 90);
    chart($("chart-latency"), [t.p50_ms_series, t.p99_ms_series], ["#2b6cb0", "#b7791f"], 300, 90);
    const tb = $("traffic").tBodies[0];
    clear(tb);
    for (const n of d.traffic[dim]) {
      const spark = el("td", null, "spark");
      spark.appendChild(chart(null, [n.series], ["#2b6cb0"], 120, 24));
      row(tb, [el("td", n.name || "(none)"), num(n.rps), num(n.requests), num(n.errors), num(n.p50_ms), num(n.p99_ms),
        num(n.ttfb_p50_ms), num(n.tokens_in), num(n.tokens_out), spark]).dataset.name = n.name;
    }
  }

  function drawFailed(d) {
    const tb = $("failed").tBodies[0];
    clear(tb);
    for (const f of d.failed) {
      row(tb, [el("td", clock(f.at)), el("td", f.request_id, "mono"), td(pill(f.status, "bad")), el("td", f.handler),
        el("td", f.model), el("td", f.key), el("td", f.provider), el("td", (f.attempts || []).join(" → ")),
        el("td", f.error, "small")]).dataset.requestId = f.request_id;
    }
    const hb = $("history").tBodies[0];
    clear(hb);
    for (const r of d.config.history) {
      row(hb, [el("td", clock(r.at)), td(pill(r.ok ? "ok" : "rejected", r.ok ? "ok" : "bad")), num(r.generation),
        el("td", r.reason), el("td", r.errors.map((e) => e.text).join("\n"), "small mono")]);
    }
  }

  function draw(d) {
    last = d;
    drawHeader(d);
    drawProviders(d);
    drawAccounts(d);
    drawTraffic(d);
    drawFailed(d);
    $("updated").textContent = `updated ${clock(d.at)}`;
  }

  // --- polling and sign-in ----------------------------------------------------------------------
  function showLogin(message) {
    sessionStorage.removeItem(STORE);
    if (timer) { clearTimeout(timer); timer = null; }
    $("dash").hidden = true;
    $("signout").hidden = true;
    $("login").hidden = false;
    $("conn").textContent = "not signed in";
    const e = $("login-error");
    e.hidden = !message;
    e.textContent = message || "";
    $("key").focus();
  }

  async function poll() {
    timer = null;
    const key = sessionStorage.getItem(STORE);  // none: a gateway without admin keys may answer anyway
    const abort = new AbortController();
    const cut = setTimeout(() => abort.abort(), TIMEOUT_MS);
    try {
      const r = await fetch("/admin/status", { headers: key ? { Authorization: "Bearer " + key } : {}, signal: abort.signal,
        cache: "no-store" });
      if (r.status === 401 || r.status === 403) {
        showLogin(key ? "That key was refused: an admin key is needed." : "");
        return;
      }
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      const d = await r.json();
      skew = d.at - Date.now() / 1000;
      $("login").hidden = true;
      $("dash").hidden = false;
      $("signout").hidden = false;
      $("conn").textContent = "live";
      draw(d);
    } catch (e) {
      $("conn").textContent = `connection problem (${e.message || e}); retrying`;
    } finally {
      clearTimeout(cut);
    }
    if (!$("dash").hidden || sessionStorage.getItem(STORE)) timer = setTimeout(poll, POLL_MS);
  }

  function tick() {  // the countdowns move between polls
    if (!last) return;
    for (const tr of $("accounts").tBodies[0].rows) {
      const a = last.accounts.find((x) => x.key === tr.dataset.account);
      if (a) tr.querySelector(".countdown").textContent = cooling(a);
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("login-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      sessionStorage.setItem(STORE, $("key").value.trim());
      $("key").value = "";
      poll();
    });
    $("signout").addEventListener("click", () => showLogin());
    for (const b of $("dims").querySelectorAll("button")) {
      b.addEventListener("click", () => {
        dim = b.dataset.dim;
        for (const o of $("dims").querySelectorAll("button")) o.classList.toggle("on", o === b);
        if (last) drawTraffic(last);
      });
    }
    setInterval(tick, 250);
    poll();
  });
})();
