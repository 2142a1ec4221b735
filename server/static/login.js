"use strict";
(function () {
  const form = document.getElementById("login-form");
  const error = document.getElementById("login-error");
  const button = document.getElementById("login-button");
  I18N.setup(document.getElementById("lang"));
  if (document.body.dataset.dashboard) UI.rememberDashboard();
  else UI.linkDashboard();
  if (window.top !== window.self) {
    document.getElementById("iframe-note").hidden = false;
    document.getElementById("open-direct").href = location.href;
  }
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.textContent = "";
    button.disabled = true;
    const input = document.getElementById("password");
    try {
      const r = await fetch(form.dataset.action || "api/login", {
        method: "POST", credentials: "same-origin",
        headers: {"Content-Type": "application/json"},
        body: JSON.stringify({password: input.value}),
      });
      if (r.ok) {
        input.value = "";
        location.reload();
        return;
      }
      if (r.status === 429) {
        error.textContent = I18N.t("login.throttled", {s: r.headers.get("Retry-After") || "?"});
      } else if (r.status === 401) {
        error.textContent = I18N.t("login.wrong");
      } else {
        error.textContent = I18N.t("error.http", {status: r.status});
      }
    } catch (e) {
      error.textContent = I18N.t("error.network");
    } finally {
      button.disabled = false;
    }
  });
})();
