// The memo's admin page: live audience count while the rules are edited, live send
// progress, and "why is this developer included" asked of the same rules, saved or not.
(function () {
  function ready(fn) { document.readyState !== "loading" ? fn() : document.addEventListener("DOMContentLoaded", fn); }
  function getJSON(url) { return fetch(url, { credentials: "same-origin" }).then(function (r) { return r.json(); }); }

  function pollProgress(box) {
    var bar = box.querySelector("progress"), percent = box.querySelector(".percent"), counts = box.querySelector(".counts");
    function tick() {
      getJSON(box.dataset.url).then(function (p) {
        // A cancelled send shows what went out, not a full bar.
        var shown = p.status === "cancelled" && p.total ? Math.floor(p.sent * 100 / p.total) : p.percent;
        bar.value = shown;
        percent.textContent = p.status === "cancelled" ? "cancelled" : (p.total ? p.percent + " %" : "");
        counts.textContent = p.summary;
        box.dataset.status = p.status;
        box.dataset.percent = p.percent;
        if (!p.finished) { setTimeout(tick, 2000); }
      });
    }
    tick();
  }

  function values(id) {
    // The two-list picker (filter_horizontal) renames the original list to id + "_from"
    // and keeps the choice, every option of it, in a new list id + "_to".
    var to = document.getElementById(id + "_to");
    if (to) { return Array.prototype.map.call(to.options, function (o) { return o.value; }); }
    var el = document.getElementById(id);
    if (!el) { return []; }
    return Array.prototype.filter.call(el.options, function (o) { return o.selected; }).map(function (o) { return o.value; });
  }

  function rules() {
    var params = new URLSearchParams({ rules: "1" });
    ["include_countries", "include_regions", "exclude_countries", "traffic_countries", "traffic_regions"].forEach(function (name) {
      values("id_" + name).forEach(function (v) { params.append(name, v); });
    });
    var active = document.getElementById("id_active_only");
    if (active && active.checked) { params.append("active_only", "on"); }
    ["active_since", "attribute_filters", "audience_basis", "traffic_days", "traffic_min_requests"].forEach(function (name) {
      var el = document.getElementById("id_" + name);
      if (el && el.value) { params.append(name, el.value); }
    });
    return params.toString();
  }

  function liveAudience(box, onChange) {
    // A saved memo's count is on the page already; a new memo's is asked for at once.
    var last = box.dataset.saved ? rules() : null;
    function refresh() {
      var now = rules();
      if (now === last) { return; }
      last = now;
      fetch(box.dataset.url + "?" + now, { credentials: "same-origin" }).then(function (r) { return r.json(); }).then(function (j) {
        if (j.errors) { box.querySelector("strong").textContent = "(the rules are not valid yet)"; return; }
        var n = new Intl.NumberFormat("en").format;
        var table = document.createElement("table");
        [["account country", "developers", "in by account", "in by traffic"]].concat(j.by_country.map(function (c) { return [c[0] + " " + c[1], n(c[2]), n(c[3]), n(c[4])]; }))
          .forEach(function (cells, i) {
            var tr = table.insertRow();
            cells.forEach(function (text) { var td = document.createElement(i ? "td" : "th"); td.textContent = text; tr.appendChild(td); });
          });
        var scroller = document.createElement("div");
        scroller.className = "audience-table";
        scroller.appendChild(table);
        var total = document.createElement("strong");
        total.textContent = n(j.total) + " developers";
        var parts = [total, document.createTextNode(" (not saved yet)")];
        if (j.no_activity_date) {
          var warning = document.createElement("p");
          warning.className = "audience-warning";
          warning.id = "no-activity-date";
          warning.textContent = n(j.no_activity_date) + " developer" + (j.no_activity_date === 1 ? "" : "s") +
            " left out for having no activity date: \u201cActive since\u201d takes only those with a last activity on or after that day.";
          parts.push(warning);
        }
        parts.push(scroller);
        box.replaceChildren.apply(box, parts);
        if (onChange) { onChange(); }
      });
    }
    refresh();
    setInterval(refresh, 1500);
  }

  // Asks of the rules as the form has them now (an editable memo) or as saved (a memo
  // that can no longer change shows no rule fields). Enter asks; it does not save the memo.
  function explain(input) {
    var out = document.getElementById("explain-result"), asked = null;
    function ask(force) {
      var id = input.value.trim();
      if (!id) { out.textContent = ""; asked = null; return; }
      var editable = document.querySelector("[name=include_countries]");
      var query = "developer=" + encodeURIComponent(id) + (editable ? "&" + rules() : "");
      if (query === asked && !force) { return; }
      asked = query;
      getJSON(input.dataset.url + "?" + query).then(function (j) { out.textContent = j.explanation; });
    }
    input.addEventListener("keydown", function (event) {
      if (event.key === "Enter") { event.preventDefault(); ask(true); }
    });
    input.addEventListener("change", function () { ask(false); });
    var button = document.getElementById("explain-ask");
    if (button) { button.addEventListener("click", function () { ask(true); }); }
    return function () { if (asked !== null) { ask(false); } };
  }

  ready(function () {
    var again = null;
    var input = document.getElementById("explain-id");
    if (input) { again = explain(input); }
    var box = document.getElementById("send-progress");
    if (box) { pollProgress(box); }
    var audience = document.getElementById("audience-summary");
    if (audience && document.querySelector("[name=include_countries]")) { liveAudience(audience, again); }
  });
})();
