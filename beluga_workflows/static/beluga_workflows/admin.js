/* Live admin pages: an element with data-bw-live (a URL answering {"version": "..."}) and
   data-bw-version (the version the page shows) makes the page reload itself when the runs it
   shows change — a run moving on after Approve, a new run in the list. It never reloads under
   the user's hands: not while a row is selected, a field has the focus or a detail is open,
   nor while the tab is hidden. A closed run's page stops asking. */
(function () {
  "use strict";
  var root = document.querySelector("[data-bw-live]");
  if (!root) {
    return;
  }
  var url = root.getAttribute("data-bw-live");
  var shown = root.getAttribute("data-bw-version");
  var every = parseInt(root.getAttribute("data-bw-every") || "2000", 10);

  function busy() {
    if (document.hidden) {
      return true;
    }
    if (document.querySelector("input.action-select:checked, #action-toggle:checked")) {
      return true;
    }
    if (document.querySelector(".bw-history details[open], .bw-error details[open]")) {
      return true;
    }
    var focused = document.activeElement;
    return !!focused && /^(INPUT|TEXTAREA|SELECT)$/.test(focused.tagName);
  }

  function poll() {
    if (busy()) {
      window.setTimeout(poll, every);
      return;
    }
    window
      .fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        return response.ok ? response.json() : null;
      })
      .then(function (body) {
        if (body && body.version !== shown) {
          window.location.reload();
          return;
        }
        if (!(body && body.status && body.status !== "running")) {
          window.setTimeout(poll, every);
        }
      })
      .catch(function () {
        window.setTimeout(poll, every * 2);
      });
  }

  window.setTimeout(poll, every);
})();
