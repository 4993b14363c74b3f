// energyd's page: draws the charts described by <script type="application/json" data-chart>
// blocks with Apache ECharts (embedded in the binary), in the page's language.
(function () {
  "use strict";
  var zh = document.body.getAttribute("data-lang") !== "en";
  function fmtNum(v) {
    if (v === null || v === undefined || !isFinite(v)) return "—";
    if (zh && Math.abs(v) >= 1e8) return (v / 1e8).toFixed(2) + "亿";
    if (zh && Math.abs(v) >= 1e4) return (v / 1e4).toFixed(2) + "万";
    return Number(v).toLocaleString(zh ? "zh-CN" : "en", { maximumFractionDigits: 2 });
  }
  function fmtTime(ms) {
    var d = new Date(ms);
    return zh ? d.getFullYear() + "年" + (d.getMonth() + 1) + "月" + d.getDate() + "日 " + d.toTimeString().slice(0, 5)
              : d.toISOString().slice(0, 16).replace("T", " ");
  }
  function bars(el, spec) {
    return {
      tooltip: { trigger: "axis", valueFormatter: fmtNum },
      legend: { top: 4 },
      grid: { left: 60, right: 20, top: 40, bottom: 30 },
      xAxis: { type: "category", data: spec.labels },
      yAxis: { type: "value", name: spec.unit, axisLabel: { formatter: fmtNum } },
      series: spec.series.map(function (s) { return { name: s.name, type: "bar", data: s.data }; })
    };
  }
  function line(el, spec) {
    var gaps = spec.gaps.map(function (g) { return [{ xAxis: g[0], name: spec.labels.gap }, { xAxis: g[1] }]; });
    var flags = spec.flags.map(function (f) { return { xAxis: f.at, name: f.kind, label: { formatter: f.kind } }; });
    return {
      tooltip: { trigger: "axis", valueFormatter: fmtNum },
      grid: { left: 70, right: 20, top: 30, bottom: 50 },
      xAxis: { type: "time", axisLabel: { formatter: function (v) { return fmtTime(v).slice(0, zh ? 11 : 10); } } },
      yAxis: { type: "value", name: spec.unit, scale: true, axisLabel: { formatter: fmtNum } },
      dataZoom: [{ type: "inside" }, { type: "slider", height: 18, bottom: 8 }],
      series: [
        { name: spec.name, type: "line", showSymbol: false, data: spec.points, connectNulls: false,
          markArea: { itemStyle: { color: "rgba(179,38,30,0.12)" }, data: gaps },
          markLine: { symbol: "none", lineStyle: { color: "#b3261e", type: "dashed" }, data: flags } },
        { name: spec.labels.rejected, type: "scatter", symbolSize: 7, itemStyle: { color: "#b3261e" }, data: spec.rejected }
      ]
    };
  }
  function draw() {
    if (!window.echarts) return;
    document.querySelectorAll("script[data-chart]").forEach(function (s) {
      var el = document.getElementById(s.getAttribute("data-chart"));
      if (!el) return;
      var spec = JSON.parse(s.textContent);
      var chart = echarts.init(el, null, { renderer: "svg" });
      chart.setOption(spec.kind === "line" ? line(el, spec) : bars(el, spec));
      window.addEventListener("resize", function () { chart.resize(); });
      window.addEventListener("beforeprint", function () { chart.resize(); });
    });
    document.body.setAttribute("data-charts-ready", "1");
  }
  // XLSX import: the file is posted as it is, with the session's CSRF token in a header.
  function imports() {
    var csrf = document.querySelector("meta[name=csrf]");
    document.querySelectorAll("form[data-import]").forEach(function (f) {
      f.addEventListener("submit", function (ev) {
        ev.preventDefault();
        var file = f.querySelector("input[type=file]").files[0];
        var out = f.querySelector("output");
        if (!file) return;
        fetch(f.getAttribute("data-import") + (zh ? "" : "?lang=en"), {
          method: "POST", credentials: "same-origin",
          headers: { "X-CSRF-Token": csrf ? csrf.content : "", "Content-Type": "application/octet-stream" }, body: file
        }).then(function (r) { return r.json().then(function (j) { return [r.ok, j]; }); }).then(function (a) {
          if (a[0]) { out.textContent = (zh ? "已导入读数：" : "Readings imported: ") + a[1].recorded; setTimeout(function () { location.reload(); }, 800); }
          else { out.textContent = a[1].error || JSON.stringify(a[1]); out.className = "error"; }
        });
      });
    });
  }
  function start() { draw(); imports(); }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start); else start();
})();
