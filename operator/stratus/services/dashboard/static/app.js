// The dashboard's only script (served from /static; the pages have no inline script or
// handler, and the Content-Security-Policy forbids them). It adds: confirmation of
// changes, the project switcher's submit-on-change, and live table rows from the
// server-sent events of a Kubernetes watch. Row HTML comes from the server's own
// (escaped) templates; user data is never turned into markup here.
"use strict";

document.addEventListener("submit", function (event) {
  // The question is on the button pressed (several actions share a row's form) or on the form.
  var button = event.submitter;
  var question = (button && button.getAttribute("data-confirm")) ||
    (event.target.getAttribute && event.target.getAttribute("data-confirm"));
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
}, true);

document.addEventListener("change", function (event) {
  var el = event.target;
  if (el.hasAttribute && el.hasAttribute("data-autosubmit") && el.form) {
    el.form.requestSubmit ? el.form.requestSubmit() : el.form.submit();
  }
});

function liveTable(tbody) {
  var state = document.getElementById("live-state");
  function say(text) { if (state) { state.textContent = text; } }
  var source = new EventSource(tbody.getAttribute("data-live"));
  function rowFor(name) {
    return tbody.querySelector('tr[data-name="' + CSS.escape(name) + '"]');
  }
  source.addEventListener("open", function () { say("Live updates: on"); tbody.setAttribute("data-live-state", "on"); });
  source.addEventListener("error", function () { say("Live updates: reconnecting…"); tbody.setAttribute("data-live-state", "reconnecting"); });
  source.addEventListener("row", function (event) {
    var data = JSON.parse(event.data);
    var template = document.createElement("template");
    template.innerHTML = data.html.trim();
    var row = template.content.firstElementChild;
    var old = rowFor(data.name);
    if (old) {
      old.replaceWith(row);
      return;
    }
    // A paged list spans the names from data-first to data-last (either open-ended);
    // a new object outside them belongs to another page.
    var first = tbody.getAttribute("data-first"), last = tbody.getAttribute("data-last");
    if ((first && data.name < first) || (last && data.name > last)) { return; }
    var next = null;
    tbody.querySelectorAll("tr[data-name]").forEach(function (tr) {
      if (!next && tr.getAttribute("data-name") > data.name) { next = tr; }
    });
    tbody.insertBefore(row, next);
  });
  source.addEventListener("gone", function (event) {
    var old = rowFor(JSON.parse(event.data).name);
    if (old) { old.remove(); }
  });
  source.addEventListener("reload", function () { source.close(); window.location.reload(); });
  source.addEventListener("signin", function () { source.close(); window.location.assign("/signin?note=expired"); });
  source.addEventListener("failed", function (event) {
    source.close();
    say("Live updates stopped: " + JSON.parse(event.data).message + " (reload the page)");
    tbody.setAttribute("data-live-state", "stopped");
  });
}

document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("tbody[data-live]").forEach(liveTable);
});
