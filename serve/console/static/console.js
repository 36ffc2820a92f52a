// ESP console: the overview refreshes itself; the YAML editor scrolls to the first error's line.
(function () {
  "use strict";
  function refresh(box) {
    var url = box.getAttribute("data-refresh");
    var every = parseInt(box.getAttribute("data-every") || "3000", 10);
    function tick() {
      fetch(url, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
        .then(function (r) { return r.ok && !r.redirected ? r.text() : null; })
        .then(function (html) {
          if (html !== null) {
            box.innerHTML = html;
            var stamp = document.getElementById("refreshed");
            if (stamp) { stamp.textContent = new Date().toLocaleTimeString(); }
          }
        })
        .catch(function () {})
        .then(function () { setTimeout(tick, every); });
    }
    setTimeout(tick, every);
  }
  function scrollToError() {
    var first = document.querySelector(".yaml-error[data-line]:not([data-line=''])");
    var area = document.getElementById("yaml");
    if (!first || !area) { return; }
    var line = parseInt(first.getAttribute("data-line"), 10);
    var lines = area.value.split("\n");
    var start = 0;
    for (var i = 0; i < line - 1 && i < lines.length; i++) { start += lines[i].length + 1; }
    area.focus();
    area.setSelectionRange(start, start + (lines[line - 1] || "").length);
  }
  function syncGutter() {
    var area = document.getElementById("yaml");
    var gutter = document.getElementById("gutter");
    if (!area || !gutter) { return; }
    area.addEventListener("scroll", function () { gutter.scrollTop = area.scrollTop; });
  }
  document.addEventListener("DOMContentLoaded", function () {
    var box = document.getElementById("live");
    if (box) { refresh(box); }
    syncGutter();
    scrollToError();
  });
})();
