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
