"use strict";
/* The dashboard's "Client keys" section: keys for friends and apps, each with its own limits (the admin API at
   api/client-keys). A list with today's use and the last 30 days, a form to create one (the full key is shown
   once, with a copy button), editing limits, models and expiry, enabling and disabling, removal. Keys declared
   in CLIENT_KEYS are shown read-only. Separate from dashboard.js: it shares only I18N and UI, and the section
   stays hidden when this Keyloom has no client-keys API (404). */
(function () {
  const $ = (id) => document.getElementById(id);
  const t = (k, v) => I18N.t(k, v);
  const {el, toast} = UI;
  const REFRESH_MS = 5000;
  const LIMITS = ["daily_requests", "daily_tokens", "rpm"];
  const st = {csrf: null, list: null, editing: null, busy: false};

  function fmtNum(n) { return n === null || n === undefined ? "∞" : Number(n).toLocaleString(I18N.lang === "zh" ? "zh-CN" : "en-US"); }
  function svg(tag, attrs) {
    const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    return e;
  }
  async function api(method, path, body) {
    const opts = {method, credentials: "same-origin", headers: {}};
    if (method !== "GET") {
      opts.headers["Content-Type"] = "application/json";
      opts.headers["X-CSRF-Token"] = st.csrf || "";
      if (body !== undefined) opts.body = JSON.stringify(body);
    }
    let r;
    try { r = await fetch("api/" + path, opts); } catch (e) { throw new Error(t("error.network")); }
    let data = null;
    try { data = await r.json(); } catch (e) { data = null; }
    if (!r.ok) {
      const err = new Error(data && data.error && data.error.message ? data.error.message : t("error.http", {status: r.status}));
      err.status = r.status;
      throw err;
    }
    return data;
  }

  // -- the form (create and edit share it) ---------------------------------------------------------
  function field(name, key, input, hint) {
    input.name = name;
    return el("label", {class: "ck-field"}, el("span", {class: "small muted", "data-i18n": key, text: t(key)}), input,
              hint ? el("span", {class: "small muted", "data-i18n": hint, text: t(hint)}) : null);
  }
  function buildForm(form, entry, submitKey, onSubmit, onCancel) {
    form.textContent = "";
    const num = () => el("input", {type: "number", min: "0", step: "1", inputmode: "numeric", "data-i18n-placeholder": "ck.unlimited", placeholder: t("ck.unlimited")});
    form.append(
      field("name", "ck.name", el("input", {type: "text", maxlength: "64", required: true, spellcheck: "false"})),
      field("daily_requests", "ck.daily_requests", num()),
      field("daily_tokens", "ck.daily_tokens", num()),
      field("rpm", "ck.rpm", num()),
      field("models", "ck.models", el("input", {type: "text", spellcheck: "false", "data-i18n-placeholder": "ck.models_placeholder", placeholder: t("ck.models_placeholder")}), "ck.models_hint"),
      field("expires", "ck.expires", el("input", {type: "date"})));
    const error = el("p", {class: "error ck-error", role: "alert"});
    const buttons = el("div", {class: "row ck-buttons"},
      el("button", {type: "submit", class: "primary", "data-i18n": submitKey, text: t(submitKey)}),
      onCancel ? el("button", {type: "button", "data-i18n": "close", text: t("close"), onclick: onCancel}) : null);
    form.append(error, buttons);
    if (entry) {
      form.elements.name.value = entry.name;
      for (const k of LIMITS) form.elements[k].value = entry[k] === null ? "" : String(entry[k]);
      form.elements.models.value = (entry.models || []).join(", ");
      form.elements.expires.value = entry.expires || "";
    }
    form.onsubmit = async (ev) => {
      ev.preventDefault();
      error.textContent = "";
      try { await onSubmit(values(form)); } catch (e) { error.textContent = e.message; }
    };
  }
  function values(form) {
    const v = {name: form.elements.name.value.trim()};
    for (const k of LIMITS) {
      const raw = form.elements[k].value.trim();
      v[k] = raw === "" ? null : Number(raw);
    }
    v.models = form.elements.models.value.split(/[,\s]+/).map((s) => s.trim()).filter(Boolean);
    v.expires = form.elements.expires.value || null;
    return v;
  }

  // -- create: the full key once -------------------------------------------------------------------
  async function create(v) {
    const body = {name: v.name};
    for (const k of [...LIMITS, "expires"]) if (v[k] !== null) body[k] = v[k];
    if (v.models.length) body.models = v.models;
    const r = await api("POST", "client-keys", body);
    $("ck-created-key").textContent = r.key;
    $("ck-created").hidden = false;
    $("ck-create-form").reset();
    $("ck-create").open = false;
    toast(t("ck.created", {name: r.name}));
    await refresh();
  }
  function forgetCreated() {
    $("ck-created-key").textContent = "";
    $("ck-created").hidden = true;
  }

  // -- the list --------------------------------------------------------------------------------------
  function today() { return new Date().toISOString().slice(0, 10); }
  function stateOf(ck) {
    if (!ck.enabled) return "disabled";
    if (ck.expires && ck.expires < today()) return "expired";
    return "enabled";
  }
  function meter(used, limit) {
    const line = el("div", {class: "ck-meter"}, el("span", {class: "count", text: fmtNum(used) + " / " + fmtNum(limit)}));
    if (limit) {
      const fill = el("span", {class: "fill" + (used >= limit ? " exhausted" : used >= 0.9 * limit ? " high" : "")});
      fill.style.width = Math.min(100, 100 * used / limit) + "%";
      line.prepend(el("span", {class: "bar"}, fill));
    }
    return line;
  }
  function sparkline(days) {
    const W = 150, H = 30, n = Math.max(days.length, 1), cw = W / 30;
    const box = svg("svg", {class: "ck-spark", viewBox: `0 0 ${W} ${H}`, role: "img"});
    const max = Math.max(1, ...days.map((d) => d.requests));
    box.append(svg("line", {x1: 0, y1: H - 0.5, x2: W, y2: H - 0.5, class: "base"}));  // visible with no traffic
    days.forEach((d, i) => {
      const x = W - (n - i) * cw;  // the newest day at the right edge, whatever the count
      const g = svg("g", {});
      const tip = svg("title");
      tip.textContent = t("ck.day_title", {day: d.day, r: fmtNum(d.requests), t: fmtNum(d.tokens)});
      g.append(tip, svg("rect", {x, y: 0, width: cw, height: H, class: "hover"}));
      if (d.requests) {
        const h = Math.max(1, (H - 2) * d.requests / max);
        g.append(svg("rect", {x: x + 0.5, y: H - h, width: Math.max(1, cw - 1), height: h, class: "bar-ok"}));
      }
      box.append(g);
    });
    const total = days.reduce((a, d) => a + d.requests, 0);
    box.setAttribute("aria-label", t("ck.days_total", {r: fmtNum(total)}));
    return box;
  }
  function limitsCell(ck) {
    const box = el("div", {class: "ck-limits small"});
    box.append(el("div", {text: t("ck.limit_requests", {n: fmtNum(ck.daily_requests)})}),
               el("div", {text: t("ck.limit_tokens", {n: fmtNum(ck.daily_tokens)})}),
               el("div", {text: t("ck.limit_rpm", {n: fmtNum(ck.rpm)})}),
               el("div", {class: ck.expires && ck.expires < today() ? "error" : "muted",
                          text: ck.expires ? t("ck.expires_on", {day: ck.expires}) : t("ck.no_expiry")}));
    return box;
  }
  function render() {
    const body = $("ck-body");
    body.textContent = "";
    const list = st.list || [];
    for (const ck of list) {
      const s = stateOf(ck);
      const name = el("div", {}, el("strong", {text: ck.name}), " ", el("code", {class: "fp", text: ck.prefix + "…"}));
      const badges = el("div", {class: "ck-badges"}, el("span", {class: "badge st-" + (s === "enabled" ? "active" : "disabled"), text: t("ck.state_" + s)}),
        ck.source === "config" ? el("span", {class: "badge ck-config", title: t("ck.config_title"), text: t("ck.from_config")}) : null);
      const actions = el("div", {class: "actions"});
      if (ck.source === "config") actions.append(el("span", {class: "small muted", text: t("ck.read_only")}));
      else {
        actions.append(
          el("button", {type: "button", class: "small-btn ck-edit", text: t("ck.edit"), onclick: () => openEdit(ck)}),
          el("button", {type: "button", class: "small-btn ck-toggle", text: t(ck.enabled ? "ck.disable" : "ck.enable"),
                        onclick: () => setEnabled(ck, !ck.enabled)}),
          el("button", {type: "button", class: "small-btn danger ck-delete", text: t("ck.delete"), onclick: () => remove(ck)}));
      }
      const u = ck.usage || {today: {requests: 0, tokens: 0}, days: []};
      body.append(el("tr", {"data-id": ck.id, "data-source": ck.source, "data-state": s},
        el("td", {"data-label": t("ck.col_name")}, el("div", {}, name, badges)),
        el("td", {"data-label": t("ck.col_limits")}, limitsCell(ck)),
        el("td", {"data-label": t("ck.col_models")}, el("div", {class: "ck-models", text: ck.models && ck.models.length ? ck.models.join(", ") : t("ck.all_models")})),
        el("td", {"data-label": t("ck.col_today")}, el("div", {class: "ck-today"},
          el("div", {class: "small muted", text: t("ck.requests")}), meter(u.today.requests, ck.daily_requests),
          el("div", {class: "small muted", text: t("ck.tokens")}), meter(u.today.tokens, ck.daily_tokens))),
        el("td", {"data-label": t("ck.col_days")}, el("div", {}, sparkline(u.days || []))),
        el("td", {"data-label": t("keys.col_actions")}, actions)));
    }
    $("ck-empty").hidden = list.length > 0;
  }

  // -- changes ---------------------------------------------------------------------------------------
  function openEdit(ck) {
    st.editing = ck.id;
    const form = $("ck-edit-form");
    buildForm(form, ck, "ck.save", async (v) => {
      await api("PUT", "client-keys/" + encodeURIComponent(ck.id), v);
      $("ck-edit-dialog").close();
      toast(t("ck.saved", {name: v.name}));
      await refresh();
    }, () => $("ck-edit-dialog").close());
    form.prepend(el("h3", {text: t("ck.edit_title", {name: ck.name})}));
    $("ck-edit-dialog").showModal();
  }
  async function setEnabled(ck, enabled) {
    try {
      await api("PUT", "client-keys/" + encodeURIComponent(ck.id), {enabled});
      toast(t(enabled ? "ck.enabled_done" : "ck.disabled_done", {name: ck.name}));
    } catch (e) { toast(e.message, true); }
    refresh();
  }
  async function remove(ck) {
    if (!confirm(t("ck.confirm_delete", {name: ck.name}))) return;
    try {
      await api("DELETE", "client-keys/" + encodeURIComponent(ck.id));
      toast(t("ck.deleted", {name: ck.name}));
    } catch (e) { toast(e.message, true); }
    refresh();
  }

  async function refresh() {
    if (st.busy) return;
    st.busy = true;
    try {
      const r = await api("GET", "client-keys");
      st.list = r.client_keys;
      $("client-keys").hidden = false;
      $("nav-client-keys").hidden = false;
      render();
      $("client-keys").setAttribute("data-ready", "1");
    } catch (e) {
      if (e.status === 404) { $("client-keys").hidden = true; $("nav-client-keys").hidden = true; }
      else if (e.status && e.status !== 401) toast(e.message, true);
    } finally { st.busy = false; }
  }

  async function start() {
    try { st.csrf = (await api("GET", "session")).csrf; } catch (e) { return; }
    buildForm($("ck-create-form"), null, "ck.create_button", create, null);
    $("ck-copy").addEventListener("click", async () => {
      try { await navigator.clipboard.writeText($("ck-created-key").textContent); toast(t("export.copied")); }
      catch (e) {  // no clipboard (plain http): select the key so the owner can copy it by hand
        const range = document.createRange();
        range.selectNodeContents($("ck-created-key"));
        const sel = window.getSelection(); sel.removeAllRanges(); sel.addRange(range);
      }
    });
    $("ck-created-close").addEventListener("click", forgetCreated);
    $("ck-edit-dialog").addEventListener("close", () => { st.editing = null; });
    $("lang").addEventListener("click", render);  // after I18N's own handler: the texts are switched already
    await refresh();
    setInterval(() => { if (!document.hidden) refresh(); }, REFRESH_MS);
  }
  start();
})();
