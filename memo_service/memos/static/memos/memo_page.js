// The memo's admin page: live send progress, and "why is this developer included".
(function () {
  function ready(fn) { document.readyState !== "loading" ? fn() : document.addEventListener("DOMContentLoaded", fn); }

  function pollProgress(box) {
    var bar = box.querySelector("progress"), percent = box.querySelector(".percent"), counts = box.querySelector(".counts");
    function tick() {
      fetch(box.dataset.url, { credentials: "same-origin" }).then(function (r) { return r.json(); }).then(function (p) {
        bar.value = p.percent;
        percent.textContent = p.percent + " %";
        counts.textContent = "queued " + p.queued + " · sent " + p.sent + " · delivered " + p.delivered + " · failed " + p.failed + " · of " + p.total;
        box.dataset.percent = p.percent;
        if (p.percent < 100) { setTimeout(tick, 2000); }
      });
    }
    tick();
  }

  function explain(input) {
    var out = document.getElementById("explain-result");
    input.addEventListener("change", function () {
      fetch(input.dataset.url + "?developer=" + encodeURIComponent(input.value), { credentials: "same-origin" })
        .then(function (r) { return r.json(); }).then(function (j) { out.textContent = j.explanation; });
    });
  }

  ready(function () {
    var box = document.getElementById("send-progress");
    if (box) { pollProgress(box); }
    var input = document.getElementById("explain-id");
    if (input) { explain(input); }
  });
})();
