// tongban console: progressive enhancement only; every page works without it.
"use strict";

function $(id) { return document.getElementById(id); }

function renderVerify(s) {
  var box = $("verify-box");
  if (!box) return;
  box.setAttribute("data-state", s.state);
  var state = $("verify-state");
  var labels = {
    running: ["pending", "⏳ 验证中 Verifying…"],
    passed: ["ok", "✓ 通过 PASSED: the log is intact"],
    failed: ["bad", "✗ 失败 FAILED: the log does not match its checkpoints"],
    error: ["bad", "✗ 出错 ERROR: verification could not run"],
    idle: ["muted", "尚未运行 Not run since the console started"]
  };
  var l = labels[s.state] || labels.idle;
  state.className = "verdict " + l[0];
  state.textContent = l[1];
  var bar = $("verify-progress");
  bar.max = Math.max(s.total, 1);
  bar.value = s.checked;
  $("verify-count").textContent = s.checked + " / " + s.total +
    (s.node ? " · " + s.node : "") + " · " + (s.elapsed_ms / 1000).toFixed(1) + " s";
  $("verify-message").textContent = s.message;
  var list = $("verify-findings");
  while (list.firstChild) list.removeChild(list.firstChild);
  (s.findings || []).forEach(function (f) {
    var li = document.createElement("li");
    li.className = f.severity === "error" ? "bad" : "warn";
    li.textContent = f.node + " · " + f.location + " · " + f.message;
    list.appendChild(li);
  });
  var button = $("verify-button");
  if (button) button.disabled = s.state === "running";
}

function pollVerify() {
  fetch("/integrity/verify/status", { credentials: "same-origin", cache: "no-store" })
    .then(function (r) { return r.ok ? r.json() : null; })
    .then(function (s) {
      if (!s) return;
      renderVerify(s);
      if (s.state === "running") setTimeout(pollVerify, 400);
    })
    .catch(function () { setTimeout(pollVerify, 2000); });
}

document.addEventListener("DOMContentLoaded", function () {
  // Fetch once on load (the page may be older than the job) and keep
  // polling while a verification runs.
  if ($("verify-box")) pollVerify();
  var print = $("print");
  if (print) print.addEventListener("click", function () { window.print(); });
});
