"use strict";
/* What the dashboard and the chat playground share: building DOM nodes (text only through textContent,
   so nothing a server or model sends becomes markup by accident) and the status toast. */
const UI = (function () {
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
  }
  function toast(msg, bad) {
    const box = document.getElementById("toast");
    box.textContent = msg;
    box.className = "toast" + (bad ? " bad" : "");
    box.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { box.hidden = true; }, 4500);
  }
  // Where the dashboard is (DASHBOARD_PATH): the chat pages cannot know it unless this browser has been
  // there, so the dashboard's pages remember their path; "/" (the default) otherwise.
  const DASHBOARD_KEY = "keyloom.dashboard";
  function rememberDashboard() {
    try { localStorage.setItem(DASHBOARD_KEY, location.pathname); } catch (e) { /* private mode */ }
  }
  function dashboardPath() {
    let p = null;
    try { p = localStorage.getItem(DASHBOARD_KEY); } catch (e) { p = null; }
    return p && /^\/(?!\/)[^\s?#\\]*$/.test(p) ? p : "/";
  }
  function linkDashboard() {
    for (const a of document.querySelectorAll("#to-dashboard, .to-dashboard")) a.href = dashboardPath();
  }
  return {el, toast, rememberDashboard, dashboardPath, linkDashboard};
})();
