// earthsnap console: refresh the parts of a page that change while a person watches.
// An element with data-live and data-refresh="URL" is replaced every 2 s by the fragment that URL returns,
// until the fragment comes back without data-live (the run ended, the deployment finished).
// Every page works without this script; it only saves pressing reload.
(function () {
  "use strict";
  var PERIOD = 2000;
  function refresh(el) {
    var url = el.getAttribute("data-refresh");
    fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.text(); })
      .then(function (html) {
        var box = document.createElement("div");
        box.innerHTML = html;
        var fresh = box.querySelector("[data-refresh]");
        if (!fresh) return;
        el.replaceWith(fresh);
        if (fresh.hasAttribute("data-live")) setTimeout(function () { refresh(fresh); }, PERIOD);
        else if (fresh.querySelector("details.report") || fresh.id === "run-live") { /* final state shown */ }
      })
      .catch(function () { setTimeout(function () { refresh(el); }, PERIOD * 3); });
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-live][data-refresh]").forEach(function (el) {
      setTimeout(function () { refresh(el); }, PERIOD);
    });
  });
})();

// The review page: a digit picks the model's answer of that rank, N marks the photo as not in the taxonomy
// (not while typing in a field). Every choice is also a button, so the page works without this.
(function () {
  "use strict";
  document.addEventListener("keydown", function (e) {
    if (!document.querySelector("[data-review]") || e.ctrlKey || e.metaKey || e.altKey) return;
    var t = e.target && e.target.tagName;
    if (t === "INPUT" || t === "SELECT" || t === "TEXTAREA") return;
    var button = document.querySelector('[data-review] button[data-key="' + e.key.toLowerCase() + '"]');
    if (button) { e.preventDefault(); button.click(); }
  });
})();
