// csext web UI: small progressive enhancements (everything works without them, except htmx parts).
(function () {
  "use strict";
  // Confirm before destructive or bulk actions: <button data-confirm="...">.
  document.addEventListener("click", function (e) {
    var b = e.target.closest("[data-confirm]");
    if (b && !window.confirm(b.getAttribute("data-confirm"))) { e.preventDefault(); }
  });
  // Tabs on the extension page (README / CHANGELOG / History); #history opens that tab.
  function openTab(tab) {
    var list = tab.closest("[role=tablist]");
    list.querySelectorAll("[role=tab]").forEach(function (t) {
      var on = t === tab;
      t.setAttribute("aria-selected", on ? "true" : "false");
      document.getElementById(t.getAttribute("aria-controls")).hidden = !on;
    });
  }
  document.addEventListener("click", function (e) {
    var tab = e.target.closest("[role=tab]");
    if (tab) { openTab(tab); }
  });
  document.addEventListener("DOMContentLoaded", function () {
    if (location.hash === "#history" || location.search.indexOf("rev=") >= 0) {
      var t = document.getElementById("t-history");
      if (t) { openTab(t); }
    }
    // Test panel: bundled case or ad-hoc payload.
    var form = document.getElementById("test-form");
    if (form) {
      var sync = function () {
        var mode = form.querySelector("input[name=mode]:checked").value;
        form.querySelectorAll("[data-mode]").forEach(function (el) { el.hidden = el.getAttribute("data-mode") !== mode; });
      };
      form.addEventListener("change", sync); sync();
      if (location.search.indexOf("run=1") >= 0) { document.getElementById("run-test").click(); }
    }
  });
  // Keyboard: "/" focuses the search box; "g" then a letter goes to a page.
  var pending = false;
  var pages = { e: "/", n: "/new", d: "/discover", r: "/runs", l: "/dead" };
  document.addEventListener("keydown", function (e) {
    var t = e.target;
    if (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName) || e.ctrlKey || e.metaKey || e.altKey) { return; }
    if (e.key === "/") {
      var s = document.querySelector("[data-search]");
      if (s) { e.preventDefault(); s.focus(); s.select(); }
    } else if (pending && pages[e.key]) {
      location.href = pages[e.key];
    }
    pending = e.key === "g";
  });
})();
