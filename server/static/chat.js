"use strict";
/* Keyloom chat playground: talks to /v1/chat/completions like any client, keeps conversations through
   /api/conversations, shows Markdown that the server rendered and sanitized. No library, no CDN. */
(function () {
  const $ = (id) => document.getElementById(id);
  const t = (k, v) => I18N.t(k, v);
  const PARAMS = ["temperature", "top_p", "top_k", "presence_penalty", "frequency_penalty", "max_tokens"];
  const st = {csrf: null, conv: null, list: [], busy: false, controller: null, images: []};
  const {el, toast} = UI;

  async function api(method, path, body) {
    const opts = {method, credentials: "same-origin", headers: {}};
    if (method !== "GET") {
      opts.headers["Content-Type"] = "application/json";
      opts.headers["X-CSRF-Token"] = st.csrf || "";
      opts.body = JSON.stringify(body || {});
    }
    const r = await fetch(path, opts);
    if (r.status === 401) { location.reload(); throw new Error(t("error.signed_out")); }
    const data = await r.json().catch(() => null);
    if (!r.ok) throw new Error(data && data.error ? data.error.message : t("error.http", {status: r.status}));
    return data;
  }

  // -- rendering -----------------------------------------------------------------------------------
  async function renderMarkdown(texts) {
    const r = await api("POST", "/api/render", {markdown: texts});
    return r.html;
  }
  function addCodeCopies(body) {
    for (const pre of body.querySelectorAll("pre")) {
      const code = pre.textContent;
      pre.append(el("button", {type: "button", class: "copy-code", text: t("chat.copy"),
        onclick: () => navigator.clipboard.writeText(code).then(() => toast(t("export.copied")), () => {})}));
    }
  }
  function setHtml(body, html) {
    // `html` comes from /api/render: markdown-it without raw HTML, then the nh3 sanitizer's allow-list
    body.innerHTML = html;
    body.classList.remove("plain");
    addCodeCopies(body);
  }
  function usageText(u) {
    if (!u) return "";
    return t("chat.usage", {p: u.prompt_tokens || 0, c: u.completion_tokens || 0, r: u.reasoning_tokens || 0});
  }
  function messageView(m, i) {
    const body = el("div", {class: "body plain", text: m.content});
    const actions = el("div", {class: "msg-actions"},
      el("button", {type: "button", text: t("chat.copy"), onclick: () => navigator.clipboard.writeText(m.content)
        .then(() => toast(t("export.copied")), () => {})}));
    if (m.role === "user") actions.append(el("button", {type: "button", class: "edit-btn", text: t("chat.edit"), onclick: () => editMessage(i)}));
    if (m.role === "assistant" && i === st.conv.messages.length - 1)
      actions.append(el("button", {type: "button", class: "regen-btn", text: t("chat.regenerate"), onclick: regenerate}));
    const box = el("div", {class: "msg " + m.role, "data-index": String(i)},
      el("div", {class: "who"}, el("span", {text: m.role === "user" ? t("chat.you") : (m.model || t("chat.assistant"))}), actions));
    if (m.reasoning) box.append(el("details", {class: "reasoning"}, el("summary", {text: t("chat.reasoning")}), el("div", {text: m.reasoning})));
    box.append(body);
    if (m.images && m.images.length) box.append(el("div", {class: "thumbs"}, ...m.images.map((src) => el("img", {src, alt: ""}))));
    if (m.error) box.append(el("div", {class: "error-text", text: m.error}));
    if (m.usage) box.append(el("div", {class: "usage", text: usageText(m.usage)}));
    return box;
  }
  async function renderMessages() {
    const list = $("messages");
    list.textContent = "";
    const msgs = st.conv ? st.conv.messages : [];
    const views = msgs.map((m, i) => messageView(m, i));
    views.forEach((v) => list.append(v));
    const idx = msgs.map((m, i) => (m.role === "assistant" && m.content ? i : -1)).filter((i) => i >= 0);
    if (idx.length) {
      try {
        const html = await renderMarkdown(idx.map((i) => msgs[i].content));
        idx.forEach((i, k) => setHtml(views[i].querySelector(".body"), html[k]));
      } catch (e) { /* plain text stays */ }
    }
    list.scrollTop = list.scrollHeight;
    document.body.setAttribute("data-ready", "1");
  }

  // -- conversations -------------------------------------------------------------------------------
  function readParams() {
    const p = {system: $("p-system").value, stream: $("p-stream").checked};
    for (const name of PARAMS) {
      const v = $("p-" + name).value;
      if (v !== "") p[name] = name === "top_k" || name === "max_tokens" ? parseInt(v, 10) : parseFloat(v);
    }
    if ($("p-reasoning_effort").value) p.reasoning_effort = $("p-reasoning_effort").value;
    return p;
  }
  function showParams(p) {
    p = p || {};
    $("p-system").value = p.system || "";
    $("p-stream").checked = p.stream !== false;
    for (const name of PARAMS) $("p-" + name).value = p[name] === undefined ? "" : p[name];
    $("p-reasoning_effort").value = p.reasoning_effort || "";
  }
  async function loadList() {
    const q = $("search").value;
    st.list = (await api("GET", "/api/conversations" + (q ? "?q=" + encodeURIComponent(q) : ""))).conversations;
    const ul = $("conv-list");
    ul.textContent = "";
    for (const c of st.list) {
      ul.append(el("li", {class: st.conv && st.conv.id === c.id ? "current" : "", "data-id": c.id,
        onclick: () => openConversation(c.id)}, el("span", {class: "conv-title", text: c.title})));
    }
  }
  function hasModel(id) { return [...$("model").options].some((o) => o.value === id && !o.disabled); }
  async function openConversation(id) {
    st.conv = await api("GET", "/api/conversations/" + id);
    $("title").value = st.conv.title;
    if (st.conv.model && hasModel(st.conv.model)) $("model").value = st.conv.model;
    showParams(st.conv.params);
    history.replaceState(null, "", "#" + id);
    $("side").classList.remove("open");
    await renderMessages();
    await loadList();
  }
  function newConversation() {
    st.conv = {id: null, title: "", model: $("model").value, params: readParams(), messages: []};
    $("title").value = "";
    history.replaceState(null, "", "#");
    renderMessages();
    loadList();
  }
  async function save() {
    const body = {model: $("model").value, params: readParams(), messages: st.conv.messages};
    if ($("title").value.trim()) body.title = $("title").value.trim();
    st.conv = st.conv.id ? await api("PUT", "/api/conversations/" + st.conv.id, body)
                         : await api("POST", "/api/conversations", body);
    $("title").value = st.conv.title;
    history.replaceState(null, "", "#" + st.conv.id);
    await loadList();
  }

  // -- sending -------------------------------------------------------------------------------------
  function apiMessages() {
    const out = [];
    const sys = $("p-system").value;
    if (sys.trim()) out.push({role: "system", content: sys});
    for (const m of st.conv.messages) {
      if (m.role === "assistant" && m.error && !m.content) continue;
      if (m.images && m.images.length) {
        out.push({role: m.role, content: [{type: "text", text: m.content},
          ...m.images.map((url) => ({type: "image_url", image_url: {url}}))]});
      } else out.push({role: m.role, content: m.content});
    }
    return out;
  }
  function setBusy(b) {
    st.busy = b;
    $("send").hidden = b; $("stop").hidden = !b;
  }
  async function complete() {
    if (!$("model").value) { toast(t("chat.no_models"), true); return; }
    const p = readParams();
    const req = {model: $("model").value, messages: apiMessages(), stream: p.stream};
    for (const name of PARAMS) if (p[name] !== undefined) req[name] = p[name];
    if (p.reasoning_effort) req.reasoning_effort = p.reasoning_effort;
    if (p.stream) req.stream_options = {include_usage: true};
    const reply = {role: "assistant", content: "", model: req.model};
    st.conv.messages.push(reply);
    await renderMessages();
    const view = $("messages").lastElementChild;
    const body = view.querySelector(".body");
    let reasoningBox = null;
    st.controller = new AbortController();
    setBusy(true);
    try {
      const r = await fetch("/v1/chat/completions", {method: "POST", credentials: "same-origin",
        headers: {"Content-Type": "application/json", "X-CSRF-Token": st.csrf, "X-Keyloom-Cancel": "on-close"},
        body: JSON.stringify(req),
        signal: st.controller.signal});
      if (!r.ok) {
        const data = await r.json().catch(() => null);
        throw new Error(data && data.error ? data.error.message : t("error.http", {status: r.status}));
      }
      if (!p.stream) {
        const data = await r.json();
        const m = data.choices[0].message;
        reply.content = m.content || "";
        if (m.reasoning_content) reply.reasoning = m.reasoning_content;
        reply.usage = usageOf(data.usage);
      } else {
        const reader = r.body.getReader();
        const dec = new TextDecoder();
        let buf = "";
        for (;;) {
          const {value, done} = await reader.read();
          if (done) break;
          buf += dec.decode(value, {stream: true});
          let cut;
          while ((cut = buf.indexOf("\n\n")) >= 0) {
            const event = buf.slice(0, cut); buf = buf.slice(cut + 2);
            for (const line of event.split("\n")) {
              if (!line.startsWith("data: ") || line === "data: [DONE]") continue;
              const chunk = JSON.parse(line.slice(6));
              if (chunk.error) throw new Error(chunk.error.message);
              if (chunk.usage) reply.usage = usageOf(chunk.usage);
              const d = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
              if (!d) continue;
              if (d.reasoning_content) {
                reply.reasoning = (reply.reasoning || "") + d.reasoning_content;
                if (!reasoningBox) {
                  reasoningBox = el("details", {class: "reasoning"}, el("summary", {text: t("chat.reasoning")}), el("div"));
                  view.insertBefore(reasoningBox, body);
                }
                reasoningBox.lastChild.textContent = reply.reasoning;
              }
              if (d.content) { reply.content += d.content; body.textContent = reply.content; }
            }
          }
          $("messages").scrollTop = $("messages").scrollHeight;
        }
      }
    } catch (e) {
      if (e.name === "AbortError") reply.error = t("chat.stopped");
      else reply.error = e.message;
    } finally {
      st.controller = null;
      setBusy(false);
    }
    await save();
    await renderMessages();
  }
  function usageOf(u) {
    if (!u) return null;
    return {prompt_tokens: u.prompt_tokens || 0, completion_tokens: u.completion_tokens || 0,
      reasoning_tokens: (u.completion_tokens_details && u.completion_tokens_details.reasoning_tokens) || 0};
  }
  async function send() {
    const text = $("input").value;
    if (st.busy || (!text.trim() && !st.images.length)) return;
    if (!$("model").value) { toast(t("chat.no_models"), true); return; }  // nothing to send it to: say why
    if (!st.conv) newConversation();
    const m = {role: "user", content: text};
    if (st.images.length) m.images = st.images.slice();
    st.conv.messages.push(m);
    $("input").value = ""; st.images = []; showAttachments();
    await complete();
  }
  async function regenerate() {
    if (st.busy) return;
    if (st.conv.messages.length && st.conv.messages[st.conv.messages.length - 1].role === "assistant") st.conv.messages.pop();
    await complete();
  }
  function editMessage(i) {
    const view = $("messages").querySelector(`.msg[data-index="${i}"]`);
    const body = view.querySelector(".body");
    const area = el("textarea", {class: "edit"});
    area.value = st.conv.messages[i].content;
    const go = el("button", {type: "button", class: "primary save-edit", text: t("chat.send_edit"), onclick: async () => {
      st.conv.messages = st.conv.messages.slice(0, i + 1);
      st.conv.messages[i].content = area.value;
      await complete();
    }});
    body.replaceWith(el("div", {class: "editing"}, area, go));
    area.focus();
  }
  function showAttachments() {
    const box = $("attachments");
    box.textContent = "";
    st.images.forEach((src) => box.append(el("img", {src, alt: ""})));
  }

  // -- export / import -----------------------------------------------------------------------------
  async function download(fmt) {
    if (!st.conv || !st.conv.id) return;
    const r = await fetch(`/api/conversations/${st.conv.id}/export?format=${fmt}`, {credentials: "same-origin"});
    const blob = await r.blob();
    const a = el("a", {href: URL.createObjectURL(blob), download: `conversation-${st.conv.id}.${fmt}`});
    document.body.append(a); a.click(); a.remove();
  }

  async function loadModels() {
    let models = [];
    try {
      const r = await fetch("/v1/models", {credentials: "same-origin"});
      if (r.ok) models = (await r.json()).data || [];
    } catch (e) { models = []; }
    const select = $("model");
    select.textContent = "";
    for (const m of models) select.append(el("option", {value: m.id, text: m.id}));
    const pick = models.find((m) => m.id === "gemini-2.5-flash") || models[0];
    if (pick) select.value = pick.id;
    else select.append(el("option", {value: "", text: t("chat.no_model_option"), "data-i18n": "chat.no_model_option", disabled: true, selected: true}));
    // no model means no key (or none that works): say how to add keys instead of sending a request without a model
    $("no-models").hidden = models.length > 0;
    $("send").disabled = models.length === 0;
  }
  async function signOut() {
    const opts = {method: "POST", credentials: "same-origin",
                  headers: {"Content-Type": "application/json", "X-CSRF-Token": st.csrf || ""}, body: "{}"};
    try {
      await fetch("/chat/session", opts);  // ends the chat session
      // Still let in? Then it is the dashboard's session (its cookie reaches /chat when the dashboard is at /):
      // end that one too, so that "Sign out" signs out.
      const r = await fetch("/chat/session", {credentials: "same-origin"});
      if (r.ok) {
        const s = await r.json();
        await fetch("/api/logout", {...opts, headers: {...opts.headers, "X-CSRF-Token": s.csrf}});
      }
    } catch (e) { /* the reload shows where things stand */ }
    location.reload();
  }

  async function start() {
    UI.linkDashboard();
    I18N.setup($("lang"), () => renderMessages());
    try { st.csrf = (await api("GET", "/chat/session")).csrf; } catch (e) { return; }
    $("chat-logout").addEventListener("click", signOut);
    await loadModels();
    $("send").addEventListener("click", send);
    $("stop").addEventListener("click", () => { if (st.controller) st.controller.abort(); });
    $("input").addEventListener("keydown", (ev) => { if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); send(); } });
    $("new-chat").addEventListener("click", newConversation);
    $("params-toggle").addEventListener("click", () => { $("params").hidden = !$("params").hidden; });
    $("search").addEventListener("input", () => { clearTimeout(start.q); start.q = setTimeout(loadList, 200); });
    $("title").addEventListener("change", async () => { if (st.conv && st.conv.id) { await save(); toast(t("chat.renamed")); } });
    $("export-md").addEventListener("click", () => download("md"));
    $("export-json").addEventListener("click", () => download("json"));
    $("delete-conv").addEventListener("click", async () => {
      if (!st.conv || !st.conv.id || !confirm(t("chat.confirm_delete"))) return;
      await api("DELETE", "/api/conversations/" + st.conv.id);
      newConversation();
    });
    $("import-file").addEventListener("change", async (ev) => {
      const f = ev.target.files[0];
      if (!f) return;
      try {
        const c = await api("POST", "/api/conversations/import", JSON.parse(await f.text()));
        await openConversation(c.id);
        toast(t("chat.imported"));
      } catch (e) { toast(e.message, true); }
      ev.target.value = "";
    });
    $("attach").addEventListener("change", (ev) => {
      const f = ev.target.files[0];
      if (!f) return;
      const reader = new FileReader();
      reader.onload = () => { st.images.push(reader.result); showAttachments(); };
      reader.readAsDataURL(f);
      ev.target.value = "";
    });
    $("side-open").addEventListener("click", () => $("side").classList.add("open"));
    $("side-close").addEventListener("click", () => $("side").classList.remove("open"));
    await loadList();
    const id = location.hash.slice(1);
    if (id) { try { await openConversation(id); return; } catch (e) { /* gone */ } }
    newConversation();
  }
  start();
})();
