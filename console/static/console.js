// Live updates for the Phonebook console: the page names a stream in
// data-stream; each event carries values for the elements marked
// data-live="key" (and the overview's connection table). Text only, never
// HTML, so nothing from the server can become markup here.
"use strict";
(function () {
  var root = document.querySelector("[data-stream]");
  var status = document.getElementById("live-status");
  if (!root || !window.EventSource) {
    return;
  }
  var stream = new EventSource(root.getAttribute("data-stream"));
  function setStatus(text) {
    if (status) {
      status.textContent = text;
    }
  }
  function flash(el) {
    el.classList.add("changed");
    setTimeout(function () { el.classList.remove("changed"); }, 700);
  }
  stream.addEventListener("update", function (ev) {
    var u;
    try {
      u = JSON.parse(ev.data);
    } catch (e) {
      return;
    }
    var values = u.values || {};
    var els = document.querySelectorAll("[data-live]");
    for (var i = 0; i < els.length; i++) {
      var key = els[i].getAttribute("data-live");
      if (Object.prototype.hasOwnProperty.call(values, key) && els[i].textContent !== values[key]) {
        els[i].textContent = values[key];
        flash(els[i]);
      }
    }
    var body = document.querySelector("[data-conns]");
    if (body && u.conns) {
      while (body.firstChild) {
        body.removeChild(body.firstChild);
      }
      u.conns.forEach(function (g) {
        var tr = document.createElement("tr");
        [g.node, g.transport, String(g.count)].forEach(function (text, j) {
          var td = document.createElement("td");
          td.textContent = text;
          if (j === 2) {
            td.className = "num";
          }
          tr.appendChild(td);
        });
        body.appendChild(tr);
      });
    }
    setStatus("live");
  });
  stream.addEventListener("error", function () { setStatus("reconnecting…"); });
})();
