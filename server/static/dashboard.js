"use strict";
/* Keyloom dashboard: fetches the admin API every few seconds and redraws; no library, no CDN. */
(function () {
  const $ = (id) => document.getElementById(id);
  const t = (k, v) => I18N.t(k, v);
  const REFRESH_MS = 5000;
  const OUTCOMES = ["ok", "limited", "client", "error"];
  const state = {csrf: null, tz: "UTC", status: null, charts: null, requests: null, settings: null, audit: null,
                 editing: false, job: null,
                 meta: null, openKey: null, history: {}, keyEditing: false};  // notes, tags, the opened key's 30 days

  // -- helpers -----------------------------------------------------------------------------------
  const {el, toast} = UI;
  function svg(tag, attrs) {
    const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    return e;
  }
  function fmtTime(ts, withDate) {
    if (!ts) return "–";
    const opts = {timeZone: state.tz, hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false};
    if (withDate) Object.assign(opts, {month: "2-digit", day: "2-digit"});
    try { return new Intl.DateTimeFormat(I18N.lang === "zh" ? "zh-CN" : "en-GB", opts).format(new Date(ts * 1000)); }
    catch (e) { return new Date(ts * 1000).toISOString(); }
  }
  function fmtDuration(s) {
    s = Math.max(0, Math.round(s));
    const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
    if (d) return t("dur.dh", {d, h});
    if (h) return t("dur.hm", {h, m});
    if (m) return t("dur.ms", {m, s: s % 60});
    return t("dur.s", {s});
  }
  function fmtNum(n) { return n === null || n === undefined ? "–" : Number(n).toLocaleString(I18N.lang === "zh" ? "zh-CN" : "en-US"); }

  async function api(method, path, body) {
    const opts = {method, credentials: "same-origin", headers: {}};
    if (method !== "GET") {
      opts.headers["Content-Type"] = "application/json";
      opts.headers["X-CSRF-Token"] = state.csrf || "";
      opts.body = JSON.stringify(body || {});
    }
    let r;
    try { r = await fetch("api/" + path, opts); }
    catch (e) { setLive(false); throw new Error(t("error.network")); }
    if (r.status === 401 && path !== "keys/export") { location.reload(); throw new Error(t("error.signed_out")); }
    let data = null;
    try { data = await r.json(); } catch (e) { data = null; }
    if (!r.ok) {
      const msg = data && data.error && data.error.message ? data.error.message : t("error.http", {status: r.status});
      const err = new Error(msg); err.status = r.status; err.retryAfter = r.headers.get("Retry-After");
      throw err;
    }
    setLive(true);
    return data;
  }
  function setLive(ok) {
    const dot = $("live-dot");
    dot.className = "live " + (ok ? "on" : "off");
    dot.title = ok ? t("live.on") : t("live.off");
  }

  // -- service cards -----------------------------------------------------------------------------
  function renderService() {
    const s = state.status && state.status.service;
    if (!s) return;
    state.tz = s.tz;
    $("demo-badge").hidden = !s.demo;
    $("svc-requests").textContent = fmtNum(s.requests_today);
    $("svc-requests-sub").textContent = t("svc.today_sub", {day: s.today, tz: s.tz});
    $("svc-success").textContent = s.success_rate === null ? "–" : s.success_rate + "%";
    const o = s.outcomes_today;
    $("svc-success-sub").textContent = t("svc.outcomes", {ok: o.ok, limited: o.limited, client: o.client, error: o.error});
    $("svc-latency").textContent = s.p50_ms === null ? "–" : fmtDur(s.p50_ms);
    $("svc-latency-sub").textContent = s.p95_ms === null ? t("svc.no_requests_hour")
      : t("svc.latency_sub", {p95: fmtDur(s.p95_ms), n: s.requests_last_hour});
    $("svc-keys").textContent = s.keys.active + " / " + s.keys.total;
    $("svc-keys-sub").textContent = t("svc.keys_sub", {disabled: s.keys.disabled, stored: s.stored_keys, models: s.models});
    $("svc-reset").textContent = fmtDuration(s.quota_reset_in);
    // the reset in TZ, then the zone whose midnight it is with that zone's own abbreviation (PST/PDT)
    $("svc-reset-sub").textContent = t(s.tz === s.quota_reset_tz ? "svc.reset_sub_same" : "svc.reset_sub",
      {at: s.quota_reset_local, tz: s.tz, rtz: s.quota_reset_tz, abbr: s.quota_reset_abbr});
    $("svc-now").textContent = fmtTime(s.now, true);
    $("svc-now-sub").textContent = s.tz;
    const r = s.reuse;
    $("svc-reuse").textContent = fmtNum(r.shared + r.cache_hits);
    $("svc-reuse-sub").textContent = t("svc.reuse_sub", {shared: r.shared, hits: r.cache_hits, kept: r.cached_now,
      spares: r.cached_spares, left: r.cached_unreceived, ka: r.keepalive_bodies});
    $("svc-uptime").textContent = fmtDuration(s.uptime_seconds);
    $("svc-version").textContent = "v" + s.version + (s.in_flight ? " · " + t("svc.in_flight", {n: s.in_flight}) : "");
  }
  function fmtDur(ms) { return ms >= 1000 ? (ms / 1000).toFixed(ms >= 10000 ? 0 : 1) + " s" : Math.round(ms) + " ms"; }

  // -- charts ------------------------------------------------------------------------------------
  function niceMax(v) {
    if (v <= 4) return 4;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }
  // Drawn in CSS pixels at the chart's own width (one user unit = one pixel), so the 11 px labels stay 11 px
  // on a phone instead of being scaled down with a fixed viewBox; redrawn when the width changes.
  function drawBars(box, labels, series, tickEvery, labelOf) {
    while (box.firstChild) box.removeChild(box.firstChild);
    const shown = Math.round(box.getBoundingClientRect().width);
    const W = shown > 200 ? shown : 640;
    const H = W < 480 ? 170 : 200, L = 40, R = 8, T = 10, B = 26;
    box.setAttribute("viewBox", `0 0 ${W} ${H}`);
    const n = labels.length;
    const totals = labels.map((_, i) => OUTCOMES.reduce((a, k) => a + (series[k] ? series[k][i] : 0), 0));
    const max = niceMax(Math.max(0, ...totals));
    const cw = (W - L - R) / n, bw = Math.max(1, cw * 0.72);
    const LABEL_PX = 44;  // room for one "HH:MM" or "MM-DD" label and a gap
    while (tickEvery * cw < LABEL_PX) tickEvery *= 2;
    const y = (v) => T + (H - T - B) * (1 - v / max);
    for (let g = 0; g <= 4; g++) {
      const v = max * g / 4, yy = y(v);
      box.append(svg("line", {x1: L, x2: W - R, y1: yy, y2: yy, class: "grid"}));
      const lab = svg("text", {x: L - 6, y: yy + 4, class: "axis", "text-anchor": "end"});
      lab.textContent = Number.isInteger(v) ? v : v.toFixed(1);
      box.append(lab);
    }
    labels.forEach((label, i) => {
      let base = 0;
      const x = L + i * cw + (cw - bw) / 2;
      const g = svg("g", {class: "col"});
      const tip = svg("title", {});
      tip.textContent = labelOf(label) + ": " + OUTCOMES.map((k) => t("outcome." + k) + " " + series[k][i]).join(", ");
      g.append(tip);
      g.append(svg("rect", {x: L + i * cw, y: T, width: cw, height: H - T - B, class: "hover"}));
      for (const k of OUTCOMES) {
        const v = series[k][i];
        if (!v) continue;
        g.append(svg("rect", {x, y: y(base + v), width: bw, height: Math.max(0.5, y(base) - y(base + v)), class: "bar-" + k}));
        base += v;
      }
      box.append(g);
      // every tickEvery-th bar, and the last one when it is not too close to the tick before it
      if (i % tickEvery === 0 || (i === n - 1 && (n - 1) % tickEvery * cw >= LABEL_PX)) {
        const last = i === n - 1;  // ends at the right edge instead of being cut there
        const lab = svg("text", {x: last ? W - 1 : L + i * cw + cw / 2, y: H - 8, class: "axis x-label",
                                 "text-anchor": last ? "end" : "middle"});
        lab.textContent = labelOf(label);
        box.append(lab);
      }
    });
    box.setAttribute("aria-label", labels.length + " bars; total " + totals.reduce((a, b) => a + b, 0));
  }
  function renderCharts() {
    const c = state.charts;
    if (!c) return;
    const start = c.minutes.start, step = c.minutes.step;
    const mins = c.minutes.series.ok.map((_, i) => start + i * step);
    drawBars($("chart-minutes"), mins, c.minutes.series, 10, (ts) => fmtTime(ts).slice(0, 5));
    drawBars($("chart-days"), c.days.days, c.days.series, 5, (d) => d.slice(5));
    const legend = $("legend");
    legend.textContent = "";
    for (const k of OUTCOMES) legend.append(el("span", {class: "key"}, el("i", {class: "swatch bar-" + k}), t("outcome." + k)));
  }

  // -- keys --------------------------------------------------------------------------------------
  const STATE_ORDER = {disabled: 0, resting: 1, cooling: 2, exhausted: 3, active: 4};
  function stateCell(k) {
    const box = el("div", {class: "state"}, el("span", {class: "badge st-" + k.state, text: t("state." + k.state)}));
    let detail = "";
    if (k.state === "disabled" && metaOf(k.fp).disabled_by_hand)
      detail = t("keys.by_hand") + (metaOf(k.fp).note ? ": " + metaOf(k.fp).note : "");
    else if (k.state === "disabled") detail = k.why || "";
    else if (k.state === "cooling") detail = t("state.cooling_detail", {model: k.why, until: fmtTime(k.until)});
    else if (k.state === "exhausted") detail = t("state.exhausted_detail", {model: k.why, until: fmtTime(k.until, true)});
    else if (k.state === "resting") detail = t("state.until", {until: fmtTime(k.until)});
    if (detail) box.append(el("div", {class: "small muted clip", title: detail, text: detail}));
    return box;
  }
  function usageCell(k) {
    if (!k.models.length) return el("span", {class: "muted", text: t("keys.unused")});
    const box = el("div", {class: "usage"});
    for (const m of k.models) {
      // the limit in force: the configured one, or the daily limit Google named when that is lower
      const lday = m.learned && m.learned.per_day != null ? m.learned.per_day : null;
      const limit = lday != null && (!m.limit || lday < m.limit) ? lday : m.limit;
      const pct = limit ? Math.min(100, 100 * m.requests / limit) : 0;
      const bar = el("span", {class: "fill" + (m.state !== "active" ? " " + m.state : pct >= 90 ? " high" : "")});
      bar.style.width = (limit ? pct : Math.min(100, m.requests)) + "%";
      const learned = m.learned ? [m.learned.per_day != null ? t("keys.learned_day", {n: m.learned.per_day}) : "",
        m.learned.per_minute != null ? t("keys.learned_minute", {n: m.learned.per_minute}) : "",
        m.learned.tokens_per_minute != null ? t("keys.learned_tpm", {n: fmtNum(m.learned.tokens_per_minute)}) : ""]
        .filter(Boolean).join(" · ") : "";
      const title = t("keys.usage_title", {ok: m.successes, failed: m.failures}) +
        " · " + t("keys.limit_configured", {n: m.limit || "∞"}) + (learned ? " · " + t("keys.limit_learned", {list: learned}) : "") +
        (m.state !== "active" ? " · " + t("state." + m.state) + " " + fmtTime(m.until, m.state === "exhausted") : "");
      box.append(el("div", {class: "model-row", title},
        el("span", {class: "model-name", text: m.model}),
        el("span", {class: "bar"}, bar),
        el("span", {class: "count", text: m.requests + " / " + (limit || "∞")}),
        learned ? el("span", {class: "small muted learned-limits", text: t("keys.limit_learned", {list: learned})}) : null));
    }
    return box;
  }
  function actionsCell(k) {
    const box = el("div", {class: "actions"});
    box.append(el("button", {type: "button", class: "small-btn", text: t("keys.test"), onclick: () => startTest([k.fp])}));
    if (k.state === "disabled")
      box.append(el("button", {type: "button", class: "small-btn", text: t("keys.enable"), onclick: () => keyAction(k, "enable")}));
    else box.append(el("button", {type: "button", class: "small-btn key-disable", text: t("keys.disable"), onclick: () => openDisable(k)}));
    box.append(el("button", {type: "button", class: "small-btn key-open", "aria-expanded": state.openKey === k.fp ? "true" : "false",
      text: t(state.openKey === k.fp ? "keys.close_details" : "keys.details"), onclick: () => toggleKey(k.fp)}));
    box.append(el("button", {type: "button", class: "small-btn", text: t("keys.reset"), onclick: () => keyAction(k, "reset")}));
    box.append(el("button", {type: "button", class: "small-btn danger", text: t("keys.remove"), onclick: () => keyAction(k, "remove")}));
    return box;
  }
  // UPSTREAM_PROXIES: the proxy a key leaves through (scheme://host:port, never a credential), and their health
  function proxyBadge(k) {
    const p = k.proxy;
    if (!p) return null;
    const moved = p.n !== p.home;
    return el("span", {class: "badge proxy" + (moved ? " moved" : ""),
      title: moved ? t("keys.proxy_moved", {n: p.n, url: p.url, home: p.home, home_url: p.home_url}) : t("keys.proxy_title", {n: p.n, url: p.url}),
      text: "#" + p.n + " " + p.url});
  }
  function renderProxies() {
    const list = state.status && state.status.proxies ? state.status.proxies : [];
    $("proxies-panel").hidden = list.length === 0;
    const ul = $("proxies-list");
    ul.textContent = "";
    for (const p of list) {
      const ok = p.state === "ok";
      ul.append(el("li", {"data-state": p.state},
        el("code", {text: "#" + p.n + " " + p.url}), " ",
        el("span", {class: "badge " + (ok ? "st-active" : "st-resting"),
                    text: ok ? t("proxies.ok") : t("proxies.resting", {until: fmtTime(p.until)})}), " ",
        el("span", {class: "small muted", text: t("proxies.keys", {n: p.keys, now: p.carrying})}),
        p.last_error && !ok ? el("div", {class: "small muted clip error-text", title: p.last_error, text: p.last_error}) : null));
    }
  }
  function renderKeys() {
    const keys = state.status ? state.status.keys.slice() : [];
    const filter = $("key-filter").value, sort = $("key-sort").value;
    const tag = $("key-tag").value;
    const shown = keys.filter((k) => (!filter || k.state === filter) && (!tag || metaOf(k.fp).tags.includes(tag)));
    shown.sort((a, b) => {
      if (sort === "requests") return b.requests - a.requests;
      if (sort === "errors") return b.failures - a.failures;
      if (sort === "key") return a.masked.localeCompare(b.masked);
      return STATE_ORDER[a.state] - STATE_ORDER[b.state] || b.requests - a.requests;
    });
    const body = $("keys-body");
    body.textContent = "";
    for (const k of shown) {
      const err = k.last_error ? el("div", {class: "clip error-text", title: k.last_error, text: k.last_error}) : el("span", {class: "muted", text: "–"});
      const errBox = el("div", {}, err);
      if (k.last_error_at) errBox.append(el("div", {class: "small muted", text: fmtTime(k.last_error_at, true)}));
      body.append(el("tr", {"data-fp": k.fp, "data-state": k.state},
        el("td", {"data-label": t("keys.col_key")}, el("div", {}, el("code", {text: k.masked}), " ",
           el("span", {class: "fp", title: t("keys.fp"), text: "#" + k.fp.slice(0, 6)})),
           el("span", {class: "badge src-" + k.source, text: t("source." + k.source)}),
           k.provider !== "gemini" ? el("span", {class: "badge provider", text: k.provider}) : null,
           k.project ? el("span", {class: "badge project", title: t("keys.project_title"), text: t("keys.project", {p: k.project})}) : null,
           proxyBadge(k),
           tagsOf(k)),
        el("td", {"data-label": t("keys.col_state")}, stateCell(k)),
        el("td", {"data-label": t("keys.col_usage")}, usageCell(k)),
        el("td", {"data-label": t("keys.col_tokens"), class: "num"}, fmtNum(k.tokens)),
        el("td", {"data-label": t("keys.col_error")}, errBox),
        el("td", {"data-label": t("keys.col_actions")}, actionsCell(k))));
      if (state.openKey === k.fp) body.append(detailRow(k));
    }
    renderKeyTools();
    // no key at all: say how to add some (and open the form) rather than "no key matches"
    const none = !!state.status && keys.length === 0;
    $("keys-empty").hidden = shown.length > 0;
    $("keys-empty").textContent = t(none ? "keys.none_yet" : "keys.none");
    if (none && !state.openedAdd) { $("add-keys").open = true; state.openedAdd = true; }
  }
  async function keyAction(k, action) {
    try {
      if (action === "remove") {
        const msg = k.source === "environment" ? t("keys.confirm_remove_env", {key: k.masked}) : t("keys.confirm_remove", {key: k.masked});
        if (!confirm(msg)) return;
        await api("DELETE", "keys/" + k.fp);
        toast(t("keys.removed", {key: k.masked}));
      } else if (action === "reset") {
        if (!confirm(t("keys.confirm_reset", {key: k.masked}))) return;
        await api("POST", "keys/" + k.fp + "/reset");
        toast(t("keys.reset_done", {key: k.masked}));
      } else {
        await api("POST", "keys/" + k.fp + "/enable");
        toast(t("keys.enabled", {key: k.masked}));
      }
    } catch (e) { toast(e.message, true); }
    refresh();
  }
  async function addKeys() {
    const text = $("add-text").value;
    if (!text.trim()) return;
    $("add-button").disabled = true;
    try {
      const r = await api("POST", "keys", {keys: text});
      $("add-text").value = "";
      const parts = [t("keys.added", {n: r.added.length})];
      if (r.duplicates.length) parts.push(t("keys.duplicates", {n: r.duplicates.length, list: r.duplicates.join(", ")}));
      if (r.malformed.length) parts.push(t("keys.malformed", {n: r.malformed.length, list: r.malformed.join(", ")}));
      $("add-result").textContent = parts.join(" · ");
      $("add-result").className = "result" + (r.malformed.length || r.duplicates.length ? " warn" : " good");
      if (r.added.length) startTest(r.added.map((k) => k.fp));
    } catch (e) {
      $("add-result").textContent = e.message;
      $("add-result").className = "result bad";
    } finally { $("add-button").disabled = false; }
    refresh();
  }

  // -- key notes, tags, disabling by hand, the keys Google called invalid, a key's 30 days ----------
  const NO_META = {note: "", tags: [], disabled_by_hand: false, invalid: false};
  function metaOf(fp) { return (state.meta && state.meta.keys[fp]) || NO_META; }
  function tagsOf(k) {
    const m = metaOf(k.fp);
    if (!m.tags.length && !m.note) return null;
    const box = el("div", {class: "key-tags"}, ...m.tags.map((tag) => el("span", {class: "badge tag", text: tag})));
    if (m.note && !m.disabled_by_hand) box.append(el("div", {class: "small muted clip key-note", title: m.note, text: m.note}));
    return box;
  }
  function renderKeyTools() {
    // the tag filter lists the tags in use; a tag chosen and then removed everywhere falls back to "all"
    const select = $("key-tag"), tags = state.meta ? state.meta.tags : [];
    const chosen = select.value;
    select.textContent = "";
    select.append(el("option", {value: "", text: t("keys.all_tags")}), ...tags.map((tag) => el("option", {value: tag, text: tag})));
    select.value = tags.includes(chosen) ? chosen : "";
    $("key-tag-label").hidden = !tags.length;
    const invalid = state.meta ? state.meta.invalid : [];
    $("remove-invalid").hidden = !invalid.length;
    $("remove-invalid").textContent = t("keys.remove_invalid", {n: invalid.length});
  }
  function detailRow(k) {
    const m = metaOf(k.fp);
    const editing = () => { state.keyEditing = true; };
    const done = () => { state.keyEditing = false; };
    const tags = el("input", {type: "text", class: "key-tags-input", spellcheck: "false", autocomplete: "off", maxlength: "300",
      placeholder: t("keys.tags_placeholder"), onfocus: editing, onblur: done});
    tags.value = m.tags.join(", ");
    const note = el("textarea", {class: "key-note-input", rows: "2", maxlength: "500", placeholder: t("keys.note_placeholder"),
      onfocus: editing, onblur: done});
    note.value = m.note;
    const save = el("button", {type: "button", class: "small-btn primary key-meta-save", text: t("keys.save_meta"),
      onclick: () => saveMeta(k, tags.value, note.value)});
    const h = state.history[k.fp];
    const chart = svg("svg", {class: "key-history", role: "img"});
    const total = el("div", {class: "small muted key-history-total"});
    if (h) {
      drawHistory(chart, h.days);
      const r = h.days.reduce((a, d) => a + d.requests, 0), tk = h.days.reduce((a, d) => a + d.tokens, 0);
      total.textContent = t("keys.history_total", {r: fmtNum(r), t: fmtNum(tk), tz: h.quota_tz});
    } else total.textContent = "…";
    return el("tr", {class: "key-detail", "data-detail-for": k.fp},
      el("td", {colspan: "6"}, el("div", {class: "key-detail-grid"},
        el("div", {class: "key-meta"},
          el("label", {}, el("span", {class: "small muted", text: t("keys.tags")}), tags),
          el("label", {}, el("span", {class: "small muted", text: t("keys.note")}), note),
          el("div", {class: "row"}, save, el("span", {class: "small muted", text: t("keys.tags_hint")}))),
        el("figure", {class: "key-history-box"},
          el("figcaption", {class: "small muted", text: t("keys.history")}), chart, total))));
  }
  function drawHistory(box, days) {
    // requests per day as bars, tokens as the title of each bar: small, no axes but the first and last day
    const W = 300, H = 90, B = 16, n = days.length, cw = W / n;
    box.setAttribute("viewBox", `0 0 ${W} ${H}`);
    const max = Math.max(1, ...days.map((d) => d.requests));
    days.forEach((d, i) => {
      const h = (H - B - 4) * d.requests / max;
      const g = svg("g", {class: "col"});
      const tip = svg("title");
      tip.textContent = t("keys.history_day", {day: d.day, r: fmtNum(d.requests), ok: fmtNum(d.successes), t: fmtNum(d.tokens)});
      g.append(tip, svg("rect", {x: i * cw, y: 0, width: cw, height: H - B, class: "hover"}));
      if (d.requests) g.append(svg("rect", {x: i * cw + 1, y: H - B - h, width: Math.max(1, cw - 2), height: Math.max(1, h),
                                            class: d.failures && !d.successes ? "bar-error" : "bar-ok", "data-day": d.day}));
      box.append(g);
    });
    for (const [i, anchor] of [[0, "start"], [n - 1, "end"]]) {
      const lab = svg("text", {x: anchor === "start" ? 0 : W, y: H - 3, class: "axis", "text-anchor": anchor});
      lab.textContent = days[i].day.slice(5);
      box.append(lab);
    }
    box.setAttribute("aria-label", t("keys.history"));
  }
  async function loadHistory(fp) {
    try { state.history[fp] = await api("GET", "keys/" + fp + "/history"); }
    catch (e) { toast(e.message, true); }
    if (state.openKey === fp && !state.keyEditing) renderKeys();
  }
  function toggleKey(fp) {
    state.openKey = state.openKey === fp ? null : fp;
    state.keyEditing = false;
    renderKeys();
    if (state.openKey) loadHistory(fp);
  }
  async function saveMeta(k, tagText, note) {
    const tags = tagText.split(",").map((s) => s.trim()).filter(Boolean);
    try {
      await api("PUT", "keys/" + k.fp + "/meta", {tags, note});
      state.keyEditing = false;
      toast(t("keys.meta_saved", {key: k.masked}));
    } catch (e) { toast(e.message, true); }
    refresh();
  }
  function openDisable(k) {
    state.disabling = k;
    $("disable-key").textContent = k.masked;
    $("disable-note").value = "";
    $("disable-error").textContent = "";
    $("disable-dialog").showModal();
    $("disable-note").focus();
  }
  async function doDisable() {
    const k = state.disabling;
    if (!k) return;
    try {
      await api("POST", "keys/" + k.fp + "/disable", {note: $("disable-note").value});
      $("disable-dialog").close();
      toast(t("keys.disabled_done", {key: k.masked}));
    } catch (e) { $("disable-error").textContent = e.message; }
    refresh();
  }
  async function removeInvalid() {
    const fps = state.meta ? state.meta.invalid.slice() : [];
    if (!fps.length) return;
    const masked = (state.status ? state.status.keys : []).filter((k) => fps.includes(k.fp)).map((k) => k.masked);
    if (!confirm(t("keys.confirm_remove_invalid", {n: fps.length, list: masked.join(", ")}))) return;
    try {
      const r = await api("POST", "keys/remove-invalid", {confirm: true, fps});
      toast(t("keys.invalid_removed", {n: r.count}));
    } catch (e) { toast(e.message, true); }
    refresh();
  }

  // -- key tests with progress -------------------------------------------------------------------
  async function startTest(fps) {
    try {
      const job = await api("POST", "keys/test", fps ? {keys: fps} : {});
      state.job = job.id;
      showJob(job);
      pollJob(job.id);
    } catch (e) { toast(e.message, true); }
  }
  async function pollJob(id) {
    while (state.job === id) {
      await new Promise((res) => setTimeout(res, 400));
      let job;
      try { job = await api("GET", "jobs/" + id); } catch (e) { toast(e.message, true); return; }
      showJob(job);
      if (job.finished) { refresh(); return; }
    }
  }
  function showJob(job) {
    $("test-progress").hidden = false;
    $("test-progress-text").textContent = job.finished
      ? t("test.done", {ok: job.ok, failed: job.failed, total: job.total})
      : t("test.running", {done: job.done, total: job.total});
    $("test-progress-bar").style.width = (job.total ? 100 * job.done / job.total : 100) + "%";
    const list = $("test-results");
    list.textContent = "";
    for (const r of job.results) {
      const line = r.ok ? t("test.ok", {ms: r.ms}) + (r.disabled ? " · " + t("test.still_disabled") : "")
                        : r.kind + ": " + r.message + (r.disabled ? " · " + t("test.disabled_now") : "");
      list.append(el("li", {class: r.ok ? "good" : "bad"}, el("code", {text: r.key}), " ", line));
    }
  }

  // -- export ------------------------------------------------------------------------------------
  function openExport() {
    $("export-password").value = "";
    $("export-text").value = "";
    $("export-text").hidden = true;
    $("export-copy").hidden = true;
    $("export-error").textContent = "";
    $("export-dialog").showModal();
    $("export-password").focus();
  }
  async function doExport() {
    $("export-error").textContent = "";
    try {
      const r = await api("POST", "keys/export", {password: $("export-password").value});
      $("export-password").value = "";
      $("export-text").value = r.keys.join("\n");
      $("export-text").hidden = false;
      $("export-copy").hidden = false;
    } catch (e) {
      $("export-error").textContent = e.status === 429 ? t("login.throttled", {s: e.retryAfter || "?"})
        : e.status === 401 ? t("login.wrong") : e.message;
    }
  }
  function closeExport() { $("export-text").value = ""; $("export-dialog").close(); }

  // -- requests ----------------------------------------------------------------------------------
  function renderRequests() {
    const rows = state.requests || [];
    const body = $("req-body");
    body.textContent = "";
    for (const r of rows) {
      const status = el("span", {class: "badge out-" + r.outcome, text: String(r.status)});
      const statusCell = el("td", {"data-label": t("req.status")}, status, r.stream ? el("span", {class: "small muted", text: " SSE"}) : null);
      body.append(el("tr", {class: r.error ? "failed" : ""},
        el("td", {"data-label": t("req.time")}, fmtTime(r.ts, true),
          r.replica ? el("div", {class: "small muted", text: r.replica}) : null),  // Redis mode: who served it
        el("td", {"data-label": t("req.model")}, r.model || "–",
          r.client ? el("div", {class: "small muted", text: t("req.by") + " " + r.client}) : null),
        el("td", {"data-label": t("keys.col_key")}, el("code", {text: r.key || (r.key_fp ? r.key_fp : "–")})),
        el("td", {"data-label": t("req.attempts"), class: "num"}, String(r.attempts)),
        statusCell,
        el("td", {"data-label": t("req.latency"), class: "num"}, fmtDur(r.latency_ms)),
        el("td", {"data-label": t("keys.col_tokens"), class: "num"}, fmtNum(r.prompt_tokens + r.completion_tokens))));
      if (r.error) body.append(el("tr", {class: "error-row"}, el("td", {colspan: "7", class: "error-text", text: r.error})));
    }
    $("req-empty").hidden = rows.length > 0;
  }

  // -- settings ----------------------------------------------------------------------------------
  function valueInput(s) {
    let input;
    if (s.type === "bool") {
      input = el("select", {}, el("option", {value: "true", text: "true"}), el("option", {value: "false", text: "false"}));
    } else if (s.choices) {
      input = el("select", {}, ...s.choices.map((c) => el("option", {value: c, text: c})));
    } else {
      input = el("input", {type: "text", spellcheck: "false", autocomplete: "off"});
    }
    input.value = s.value;
    input.className = "set-input";
    input.setAttribute("data-name", s.name);
    input.addEventListener("focus", () => { state.editing = true; });
    input.addEventListener("blur", () => { state.editing = false; });
    input.addEventListener("keydown", (ev) => { if (ev.key === "Enter") saveSetting(s.name, input.value); });
    return input;
  }
  function shownValue(s) {
    // what is in force, also when nothing was set: a password generated into DATA_DIR, DATA_DIR resolved at start
    if (s.source === "generated" && s.kept_in) return t("set.generated", {path: s.kept_in});
    if (s.from) return t("set.set_from", {name: s.from});
    if (s.secret && s.value === "(set)") return t("set.secret_set");
    return s.value === "" ? t("set.empty") : s.value;
  }
  function renderSettings() {
    const list = state.settings || [];
    const body = $("set-body");
    body.textContent = "";
    for (const s of list) {
      const help = I18N.lang === "zh" ? s.help_zh : s.help;
      const name = el("td", {"data-label": t("set.name")}, el("code", {text: s.name}),
        s.live ? el("span", {class: "badge live-badge", text: t("set.live")}) : null,
        el("div", {class: "small muted", text: help}));
      const value = el("td", {"data-label": t("set.value")});
      const actions = el("td", {class: "set-actions-cell"});
      if (s.live) {
        const input = valueInput(s);
        value.append(input);
        const buttons = el("div", {class: "set-actions"},
          el("button", {type: "button", class: "small-btn", text: t("set.save"), onclick: () => saveSetting(s.name, input.value)}));
        if (s.source === "dashboard")
          buttons.append(el("button", {type: "button", class: "small-btn", text: t("set.reset"), onclick: () => resetSetting(s.name)}));
        actions.setAttribute("data-label", t("set.actions"));
        actions.append(buttons);
      } else {
        value.append(el("code", {class: "ro", text: shownValue(s)}));
      }
      const why = el("div", {class: "small muted"});
      if (s.source === "generated") why.textContent = t("set.why_generated");
      else if (s.resolved) why.textContent = t("set.why_resolved");
      else if (s.from) why.textContent = t("set.why_alias", {name: s.from});
      else if (s.source === "dashboard") {
        why.textContent = t("set.why_dashboard", {at: fmtTime(s.changed_at, true), env: s.environment === "" ? t("set.empty") : s.environment});
        if (s.environment_changed_since) {
          value.append(el("div", {class: "warn small", text: t("set.env_changed", {was: s.environment_when_changed === "" ? t("set.empty") : s.environment_when_changed, now: s.environment === "" ? t("set.empty") : s.environment})}));
        }
      } else if (s.source === "environment") why.textContent = t("set.why_env");
      else if (s.source === "demo") why.textContent = t("set.why_demo");
      else why.textContent = t("set.why_default");
      const source = s.resolved ? t("source.resolved", {source: t("source." + s.source)}) : t("source." + s.source);
      body.append(el("tr", {"data-setting": s.name, "data-source": s.source}, name, value,
        el("td", {"data-label": t("set.source")}, el("span", {class: "badge src-" + s.source, text: source}), why),
        actions));
    }
  }
  async function saveSetting(name, value) {
    try {
      const r = await api("PUT", "settings", {[name]: value});
      state.settings = r.settings;
      state.editing = false;
      renderSettings();
      toast(t("set.saved", {name}));
    } catch (e) { toast(e.message, true); }
  }
  async function resetSetting(name) {
    try {
      const r = await api("DELETE", "settings/" + name);
      state.settings = r.settings;
      renderSettings();
      toast(t("set.reset_done", {name}));
    } catch (e) { toast(e.message, true); }
  }

  // -- audit -------------------------------------------------------------------------------------
  function renderAudit() {
    const body = $("audit-body");
    body.textContent = "";
    for (const a of state.audit || []) {
      body.append(el("tr", {},
        el("td", {"data-label": t("req.time")}, fmtTime(a.ts, true)),
        el("td", {"data-label": t("audit.action")}, t("action." + a.action)),
        el("td", {"data-label": t("audit.target"), class: "clip", title: a.target || ""}, a.target || "–"),
        el("td", {"data-label": t("audit.detail"), class: "clip", title: a.detail || ""}, a.detail || "–"),
        el("td", {"data-label": t("audit.who")}, (a.client_ip || "–") + " · " + a.via)));
    }
  }

  // -- refresh loop ------------------------------------------------------------------------------
  let busy = false, tick = 0;
  async function refresh() {
    if (busy) return;
    busy = true;
    try {
      const filter = $("req-filter").value;
      const wantSettings = !state.settings || (tick % 6 === 0 && !state.editing);
      const [status, charts, reqs, audit, settings, meta] = await Promise.all([
        api("GET", "status"), api("GET", "charts"), api("GET", "requests" + (filter ? "?status=" + encodeURIComponent(filter) : "")),
        api("GET", "audit"), wantSettings ? api("GET", "settings") : Promise.resolve(null), api("GET", "keys/meta")]);
      state.status = status; state.charts = charts; state.requests = reqs.requests; state.audit = audit.audit;
      state.meta = meta;
      if (state.openKey && !state.keyEditing) loadHistory(state.openKey);
      if (settings && !state.editing) state.settings = settings.settings;
      renderAll(!!settings);
      tick++;
    } catch (e) {
      if (e.status) toast(e.message, true);
    } finally { busy = false; }
  }
  function renderAll(withSettings) {
    renderService(); renderCharts(); if (!state.keyEditing) renderKeys(); renderProxies(); renderRequests(); renderAudit();
    if (withSettings) renderSettings();
    document.body.setAttribute("data-ready", "1");
  }

  async function start() {
    UI.rememberDashboard();
    I18N.setup($("lang"), () => renderAll(true));
    try {
      const s = await api("GET", "session");
      state.csrf = s.csrf;
    } catch (e) { return; }
    $("key-filter").addEventListener("change", renderKeys);
    $("key-sort").addEventListener("change", renderKeys);
    $("key-tag").addEventListener("change", renderKeys);
    $("remove-invalid").addEventListener("click", removeInvalid);
    $("disable-go").addEventListener("click", doDisable);
    $("disable-note").addEventListener("keydown", (ev) => { if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); doDisable(); } });
    $("disable-close").addEventListener("click", () => $("disable-dialog").close());
    $("req-filter").addEventListener("change", refresh);
    $("add-button").addEventListener("click", addKeys);
    $("test-all").addEventListener("click", () => startTest(null));
    $("export-open").addEventListener("click", openExport);
    $("export-go").addEventListener("click", doExport);
    $("export-password").addEventListener("keydown", (ev) => { if (ev.key === "Enter") { ev.preventDefault(); doExport(); } });
    $("export-copy").addEventListener("click", async () => {
      try { await navigator.clipboard.writeText($("export-text").value); toast(t("export.copied")); }
      catch (e) { $("export-text").select(); }
    });
    $("export-close").addEventListener("click", closeExport);
    let chartWidth = 0;
    new ResizeObserver(() => {
      const w = Math.round($("chart-days").getBoundingClientRect().width);
      if (w !== chartWidth) { chartWidth = w; renderCharts(); }
    }).observe(document.querySelector(".charts"));
    $("export-dialog").addEventListener("close", () => { $("export-text").value = ""; });
    $("logout").addEventListener("click", async () => {
      try { await api("POST", "logout"); } catch (e) { /* signed out either way */ }
      location.reload();
    });
    await refresh();
    setInterval(() => { if (!document.hidden) refresh(); }, REFRESH_MS);
    document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); });
  }
  start();
})();
