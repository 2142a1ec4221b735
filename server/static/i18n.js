"use strict";
/* Texts of the dashboard in English and 中文. The language follows the browser until switched. */
const I18N = (function () {
  const en = {
    "chat.intro": "Sign in to try models in the chat playground.", "chat.password": "Password",
    "chat.hint": "The password is PASSWORD, the one clients use as their API key.",
    "chat.new": "New chat", "chat.search": "Search", "chat.import": "Import JSON", "chat.title": "Title",
    "chat.params": "Parameters", "chat.export_md": "Export .md", "chat.export_json": "Export .json",
    "chat.delete": "Delete", "chat.system": "System prompt", "chat.stream": "Stream", "chat.placeholder": "Message (Enter to send, Shift+Enter for a new line)",
    "chat.send": "Send", "chat.stop": "Stop", "chat.copy": "Copy", "chat.edit": "Edit", "chat.regenerate": "Regenerate",
    "chat.you": "You", "chat.assistant": "Assistant", "chat.reasoning": "Reasoning", "chat.stopped": "Stopped.",
    "chat.usage": "tokens: {p} in, {c} out ({r} reasoning)", "chat.send_edit": "Send from here",
    "chat.renamed": "Renamed", "chat.attach": "Image", "chat.confirm_delete": "Delete this conversation?", "chat.imported": "Imported",
    "demo": "demo", "logout": "Sign out", "close": "Close",
    "nav.overview": "Overview", "nav.keys": "Keys", "nav.requests": "Requests", "nav.settings": "Settings", "nav.audit": "Audit",
    "login.intro": "Sign in to see and manage your key pool.", "login.password": "Admin password", "login.submit": "Sign in",
    "login.hint": "The password is ADMIN_PASSWORD (or PASSWORD when that is not set).",
    "login.iframe": "This page is shown inside another site, where the browser will not keep the sign-in.",
    "login.open": "Open it directly", "login.wrong": "Wrong password.",
    "login.throttled": "Too many wrong passwords. Try again in {s} s.",
    "error.http": "The server answered {status}.", "error.network": "Cannot reach Keyloom.", "error.signed_out": "Signed out.",
    "live.on": "Up to date", "live.off": "Cannot reach Keyloom",
    "dur.dh": "{d} d {h} h", "dur.hm": "{h} h {m} min", "dur.ms": "{m} min {s} s", "dur.s": "{s} s",
    "svc.requests_today": "Requests today", "svc.success": "Success rate", "svc.latency": "Latency, last hour (p50)",
    "svc.keys": "Working keys", "svc.reset": "Quota resets in", "svc.now": "Time now", "svc.uptime": "Uptime",
    "svc.today_sub": "{day} ({tz})", "svc.outcomes": "{ok} ok · {limited} limited · {client} refused · {error} failed",
    "svc.latency_sub": "p95 {p95} · {n} requests", "svc.no_requests_hour": "no requests in the last hour",
    "svc.keys_sub": "{disabled} disabled · {stored} added here · {models} models", "svc.reset_sub": "at {at} ({tz})",
    "svc.in_flight": "{n} in flight",
    "svc.reuse": "Answers not paid twice",
    "svc.reuse_sub": "{shared} shared in flight · {hits} from the cache ({kept} kept now: {spares} spares, {left} unreceived) · {ka} kept alive",
    "chart.minutes": "Requests per minute, last 60 minutes", "chart.days": "Requests per day, last 30 days",
    "outcome.ok": "successful", "outcome.limited": "rate limited (429)", "outcome.client": "refused (4xx)", "outcome.error": "failed (5xx)",
    "keys.filter": "State", "keys.all": "all", "keys.sort": "Sort", "keys.sort_state": "state", "keys.sort_requests": "requests today",
    "keys.sort_errors": "failures today", "keys.sort_key": "key", "keys.test_all": "Test all keys", "keys.export": "Export working keys",
    "keys.add": "Add keys",
    "keys.add_note": "Paste one or many keys, separated by anything. Keys added here are stored in Keyloom's database (file mode 0600) so they survive restarts; they are never shown again unmasked except through \u201cExport\u201d.",
    "keys.add_placeholder": "AIza… (one or many)", "keys.add_button": "Add",
    "keys.added": "{n} added", "keys.duplicates": "{n} already there: {list}", "keys.malformed": "{n} not a Gemini key: {list}",
    "keys.col_key": "Key", "keys.col_state": "State", "keys.col_usage": "Today per model", "keys.col_tokens": "Tokens",
    "keys.col_error": "Last error", "keys.col_actions": "Actions", "keys.none": "No key matches.", "keys.unused": "not used today",
    "keys.usage_title": "{ok} successful, {failed} failed", "keys.fp": "fingerprint (SHA-256 of the key)", "keys.test": "Test", "keys.enable": "Re-enable", "keys.reset": "Reset today",
    "keys.remove": "Remove",
    "keys.confirm_remove": "Remove {key} from the pool and from the database?",
    "keys.confirm_remove_env": "Remove {key}? It comes from GEMINI_API_KEYS: it stays out after restarts until you add it again here; remove it from the environment too.",
    "keys.confirm_reset": "Set today's counters of {key} back to zero and lift its cool-downs?",
    "keys.removed": "{key} removed", "keys.reset_done": "Counters of {key} reset", "keys.enabled": "{key} is back in rotation",
    "test.running": "Testing keys: {done} of {total}…", "test.done": "Tested {total} keys: {ok} working, {failed} failing",
    "test.ok": "works ({ms} ms)", "test.still_disabled": "still disabled: re-enable it to use it", "test.disabled_now": "taken out of rotation",
    "export.note": "The full keys will be shown. Enter the admin password again.", "export.go": "Show keys", "export.copy": "Copy",
    "export.copied": "Copied",
    "state.active": "active", "state.cooling": "cooling", "state.exhausted": "exhausted", "state.resting": "resting", "state.disabled": "disabled",
    "state.cooling_detail": "{model} until {until}", "state.exhausted_detail": "{model} until the reset ({until})", "state.until": "until {until}",
    "source.environment": "environment", "source.dashboard": "changed here", "source.default": "default", "source.demo": "demo", "source.providers": "providers file",
    "req.title": "Recent requests", "req.filter": "Status", "req.ok": "successful", "req.error": "failed", "req.time": "Time",
    "req.model": "Model", "req.attempts": "Attempts", "req.status": "Status", "req.latency": "Latency", "req.none": "No requests yet.",
    "set.note": "Settings marked \u201clive\u201d can be changed here and take effect at once. A value changed here is kept in the database and wins over the environment until you reset it to the environment.",
    "set.name": "Setting", "set.value": "Value in force", "set.source": "From", "set.live": "live", "set.save": "Save",
    "set.reset": "Reset to environment", "set.empty": "(empty)",
    "set.why_dashboard": "Changed here {at}; the environment says {env}.", "set.why_env": "Set in the environment.",
    "set.why_default": "Built-in default.", "set.why_demo": "Set by demo mode.",
    "set.env_changed": "The environment changed since: it said {was} then and says {now} now. Press \u201cReset to environment\u201d to follow it.",
    "set.saved": "{name} saved: in force now", "set.reset_done": "{name} follows the environment again",
    "audit.action": "Action", "audit.target": "Target", "audit.detail": "Detail", "audit.who": "Who",
    "action.login": "signed in", "action.login_failed": "wrong password", "action.logout": "signed out",
    "action.keys_added": "keys added", "action.key_removed": "key removed", "action.key_enabled": "key re-enabled",
    "action.key_reset": "counters reset", "action.keys_tested": "keys tested", "action.keys_exported": "keys exported",
    "action.export_refused": "export refused", "action.setting_changed": "setting changed", "action.setting_reset": "setting reset",
  };
  const zh = {
    "chat.intro": "登录后即可在聊天页面试用模型。", "chat.password": "密码",
    "chat.hint": "密码为 PASSWORD，即客户端用作 API Key 的那个密码。",
    "chat.new": "新对话", "chat.search": "搜索", "chat.import": "导入 JSON", "chat.title": "标题",
    "chat.params": "参数", "chat.export_md": "导出 .md", "chat.export_json": "导出 .json",
    "chat.delete": "删除", "chat.system": "系统提示词", "chat.stream": "流式", "chat.placeholder": "输入消息（Enter 发送，Shift+Enter 换行）",
    "chat.send": "发送", "chat.stop": "停止", "chat.copy": "复制", "chat.edit": "编辑", "chat.regenerate": "重新生成",
    "chat.you": "你", "chat.assistant": "助手", "chat.reasoning": "思考过程", "chat.stopped": "已停止。",
    "chat.usage": "token：输入 {p}，输出 {c}（思考 {r}）", "chat.send_edit": "从这里重新发送",
    "chat.renamed": "已重命名", "chat.attach": "图片", "chat.confirm_delete": "删除这个对话？", "chat.imported": "已导入",
    "demo": "演示", "logout": "退出登录", "close": "关闭",
    "nav.overview": "概览", "nav.keys": "密钥", "nav.requests": "请求", "nav.settings": "设置", "nav.audit": "审计",
    "login.intro": "登录以查看和管理你的密钥池。", "login.password": "管理密码", "login.submit": "登录",
    "login.hint": "密码为 ADMIN_PASSWORD（未设置时为 PASSWORD）。",
    "login.iframe": "此页面嵌在其他网站中显示，浏览器不会保留登录状态。", "login.open": "直接打开", "login.wrong": "密码错误。",
    "login.throttled": "错误次数过多，请 {s} 秒后再试。",
    "error.http": "服务器返回 {status}。", "error.network": "无法连接 Keyloom。", "error.signed_out": "已退出登录。",
    "live.on": "已是最新", "live.off": "无法连接 Keyloom",
    "dur.dh": "{d} 天 {h} 小时", "dur.hm": "{h} 小时 {m} 分", "dur.ms": "{m} 分 {s} 秒", "dur.s": "{s} 秒",
    "svc.requests_today": "今日请求", "svc.success": "成功率", "svc.latency": "近一小时延迟（p50）", "svc.keys": "可用密钥",
    "svc.reset": "距配额重置", "svc.now": "当前时间", "svc.uptime": "运行时长",
    "svc.today_sub": "{day}（{tz}）", "svc.outcomes": "成功 {ok} · 限流 {limited} · 拒绝 {client} · 失败 {error}",
    "svc.latency_sub": "p95 {p95} · {n} 个请求", "svc.no_requests_hour": "近一小时没有请求",
    "svc.keys_sub": "停用 {disabled} · 本页添加 {stored} · 模型 {models}", "svc.reset_sub": "于 {at}（{tz}）",
    "svc.in_flight": "处理中 {n}",
    "svc.reuse": "免重复付费的回答",
    "svc.reuse_sub": "进行中共享 {shared} · 缓存命中 {hits}（当前缓存 {kept}：并发多余 {spares}，未送达 {left}）· 保活 {ka}",
    "chart.minutes": "每分钟请求数（最近 60 分钟）", "chart.days": "每日请求数（最近 30 天）",
    "outcome.ok": "成功", "outcome.limited": "限流（429）", "outcome.client": "拒绝（4xx）", "outcome.error": "失败（5xx）",
    "keys.filter": "状态", "keys.all": "全部", "keys.sort": "排序", "keys.sort_state": "状态", "keys.sort_requests": "今日请求",
    "keys.sort_errors": "今日失败", "keys.sort_key": "密钥", "keys.test_all": "测试全部密钥", "keys.export": "导出可用密钥",
    "keys.add": "添加密钥",
    "keys.add_note": "粘贴一个或多个密钥，任意分隔符均可。在此添加的密钥保存在 Keyloom 的数据库中（文件权限 0600），重启后仍然有效；除“导出”外不会再以完整形式显示。",
    "keys.add_placeholder": "AIza…（一个或多个）", "keys.add_button": "添加",
    "keys.added": "已添加 {n} 个", "keys.duplicates": "{n} 个已存在：{list}", "keys.malformed": "{n} 个不是 Gemini 密钥：{list}",
    "keys.col_key": "密钥", "keys.col_state": "状态", "keys.col_usage": "今日各模型用量", "keys.col_tokens": "Token",
    "keys.col_error": "最近错误", "keys.col_actions": "操作", "keys.none": "没有符合条件的密钥。", "keys.unused": "今日未使用",
    "keys.usage_title": "成功 {ok}，失败 {failed}", "keys.fp": "指纹（密钥的 SHA-256）", "keys.test": "测试", "keys.enable": "重新启用", "keys.reset": "重置今日计数",
    "keys.remove": "移除",
    "keys.confirm_remove": "从密钥池和数据库中移除 {key}？",
    "keys.confirm_remove_env": "移除 {key}？它来自 GEMINI_API_KEYS：重启后仍保持移除，直到你在此重新添加；请同时从环境变量中删除它。",
    "keys.confirm_reset": "将 {key} 今日的计数清零并解除冷却？",
    "keys.removed": "已移除 {key}", "keys.reset_done": "已重置 {key} 的计数", "keys.enabled": "{key} 已重新加入轮询",
    "test.running": "正在测试密钥：{done} / {total}…", "test.done": "已测试 {total} 个密钥：可用 {ok}，失败 {failed}",
    "test.ok": "可用（{ms} 毫秒）", "test.still_disabled": "仍处于停用状态：需重新启用才会使用", "test.disabled_now": "已移出轮询",
    "export.note": "将显示完整密钥。请再次输入管理密码。", "export.go": "显示密钥", "export.copy": "复制", "export.copied": "已复制",
    "state.active": "可用", "state.cooling": "冷却中", "state.exhausted": "今日额度用尽", "state.resting": "暂歇", "state.disabled": "已停用",
    "state.cooling_detail": "{model} 至 {until}", "state.exhausted_detail": "{model} 至重置（{until}）", "state.until": "至 {until}",
    "source.environment": "环境变量", "source.dashboard": "在此修改", "source.default": "默认值", "source.demo": "演示", "source.providers": "上游配置",
    "req.title": "最近请求", "req.filter": "状态", "req.ok": "成功", "req.error": "失败", "req.time": "时间", "req.model": "模型",
    "req.attempts": "尝试次数", "req.status": "状态码", "req.latency": "耗时", "req.none": "还没有请求。",
    "set.note": "标记为“实时”的设置可以在此修改并立即生效。在此修改的值保存在数据库中，优先于环境变量，直到你将其重置为环境变量。",
    "set.name": "设置", "set.value": "当前生效值", "set.source": "来源", "set.live": "实时", "set.save": "保存",
    "set.reset": "重置为环境变量", "set.empty": "（空）",
    "set.why_dashboard": "于 {at} 在此修改；环境变量为 {env}。", "set.why_env": "由环境变量设置。",
    "set.why_default": "内置默认值。", "set.why_demo": "由演示模式设置。",
    "set.env_changed": "环境变量已改变：保存时为 {was}，现在为 {now}。点击“重置为环境变量”以采用它。",
    "set.saved": "{name} 已保存并生效", "set.reset_done": "{name} 已恢复为环境变量",
    "audit.action": "操作", "audit.target": "对象", "audit.detail": "详情", "audit.who": "来源",
    "action.login": "登录", "action.login_failed": "密码错误", "action.logout": "退出登录", "action.keys_added": "添加密钥",
    "action.key_removed": "移除密钥", "action.key_enabled": "重新启用密钥", "action.key_reset": "重置计数",
    "action.keys_tested": "测试密钥", "action.keys_exported": "导出密钥", "action.export_refused": "导出被拒绝",
    "action.setting_changed": "修改设置", "action.setting_reset": "重置设置",
  };
  const texts = {en, zh};
  const api = {
    lang: "en",
    t(key, vars) {
      let s = (texts[api.lang] && texts[api.lang][key]) || en[key] || key;
      if (vars) s = s.replace(/\{(\w+)\}/g, (m, k) => (vars[k] === undefined || vars[k] === null ? m : String(vars[k])));
      return s;
    },
    apply(root) {
      document.documentElement.lang = api.lang === "zh" ? "zh-CN" : "en";
      for (const e of (root || document).querySelectorAll("[data-i18n]")) e.textContent = api.t(e.getAttribute("data-i18n"));
      for (const e of (root || document).querySelectorAll("[data-i18n-placeholder]")) e.placeholder = api.t(e.getAttribute("data-i18n-placeholder"));
    },
    setup(button, onChange) {
      let saved = null;
      try { saved = localStorage.getItem("keyloom.lang"); } catch (e) { saved = null; }
      const browser = (navigator.languages && navigator.languages.length ? navigator.languages : [navigator.language || "en"]);
      api.lang = saved === "zh" || saved === "en" ? saved : (String(browser[0]).toLowerCase().startsWith("zh") ? "zh" : "en");
      const label = () => { button.textContent = api.lang === "zh" ? "English" : "中文"; };
      api.apply(); label();
      button.addEventListener("click", () => {
        api.lang = api.lang === "zh" ? "en" : "zh";
        try { localStorage.setItem("keyloom.lang", api.lang); } catch (e) { /* private mode */ }
        api.apply(); label();
        if (onChange) onChange();
      });
    },
  };
  return api;
})();
