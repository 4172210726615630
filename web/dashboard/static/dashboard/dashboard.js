/* Live refresh and charts for the dashboard; small and dependency-free apart from Chart.js. */
(function () {
  "use strict";

  // A run page follows its run while it is pending or running: it polls the run's JSON state
  // and reloads when anything changed, so graph, waterfall, errors and logs stay current.
  function followRun(el) {
    var url = el.getAttribute("data-status-url");
    var seen = el.getAttribute("data-fingerprint");
    var stopped = false;
    function tick() {
      if (stopped) return;
      fetch(url, { headers: { "Accept": "application/json" }, credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (state) {
          if (!state) return;
          if (state.fingerprint !== seen) { stopped = true; window.location.reload(); return; }
          if (!state.active) { stopped = true; return; }
        })
        .catch(function () {})
        .then(function () { if (!stopped) setTimeout(tick, 1000); });
    }
    setTimeout(tick, 1000);
  }

  // The first page of the runs list refreshes its rows every 2 s while "live" is ticked.
  function liveList(el) {
    var url = el.getAttribute("data-live-url");
    var box = document.getElementById("live-toggle");
    var body = el.querySelector("tbody");
    function tick() {
      if (!box || box.checked) {
        fetch(url, { credentials: "same-origin" })
          .then(function (r) {
            var count = r.headers.get("X-Run-Count"), label = document.getElementById("run-count");
            if (count && label) label.textContent = count;
            return r.ok ? r.text() : null;
          })
          .then(function (html) { if (html !== null && html.trim() !== body.innerHTML.trim()) body.innerHTML = html; })
          .catch(function () {});
      }
      setTimeout(tick, 2000);
    }
    setTimeout(tick, 2000);
  }

  function charts() {
    var node = document.getElementById("chart-data");
    if (!node || typeof Chart === "undefined") return;
    var data = JSON.parse(node.textContent);
    var colors = { succeeded: "#1a8f4c", failed: "#c62f2f", active: "#2a6fdb", cancelled: "#98a2b3" };
    var common = { responsive: true, maintainAspectRatio: false, animation: false,
                   plugins: { legend: { position: "bottom" } } };
    new Chart(document.getElementById("chart-runs"), {
      type: "bar",
      data: { labels: data.labels, datasets: Object.keys(colors).map(function (k) {
        return { label: k, data: data.series[k], backgroundColor: colors[k], stack: "runs" };
      }) },
      options: Object.assign({}, common, { scales: { x: { stacked: true, ticks: { maxTicksLimit: 12 } },
        y: { stacked: true, beginAtZero: true, title: { display: true, text: "runs per " + data.bucket } } } })
    });
    new Chart(document.getElementById("chart-rates"), {
      type: "bar",
      data: { labels: data.rates.labels, datasets: [
        { label: "succeeded", data: data.rates.succeeded, backgroundColor: colors.succeeded },
        { label: "failed", data: data.rates.failed, backgroundColor: colors.failed } ] },
      options: Object.assign({}, common, { indexAxis: "y", scales: { x: { stacked: true, beginAtZero: true }, y: { stacked: true } } })
    });
    new Chart(document.getElementById("chart-latency"), {
      type: "bar",
      data: { labels: data.latency.labels, datasets: [
        { label: "p50 (ms)", data: data.latency.p50, backgroundColor: "#5b8cff" },
        { label: "p95 (ms)", data: data.latency.p95, backgroundColor: "#f59e0b" } ] },
      options: Object.assign({}, common, { indexAxis: "y", scales: { x: { beginAtZero: true, title: { display: true, text: "ms" } } } })
    });
  }

  function selectAll() {
    var all = document.getElementById("select-all");
    if (!all) return;
    all.addEventListener("change", function () {
      document.querySelectorAll("input[name=run_id]").forEach(function (b) { b.checked = all.checked; });
    });
  }

  function confirms() {
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (e) {
        if (!window.confirm(form.getAttribute("data-confirm"))) e.preventDefault();
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var run = document.querySelector("[data-live-run]");
    if (run && run.getAttribute("data-active") === "1") followRun(run);
    var list = document.querySelector("[data-live-url]");
    if (list) liveList(list);
    charts();
    selectAll();
    confirms();
  });
})();
