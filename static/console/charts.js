// The crosshair of the time charts (controlplane/time_charts.py): progressive enhancement on the server's SVG.
// Each point is a <g class="chart-point"> with data-x (in viewBox units), data-time, data-values and data-ys
// ("|"-separated, one per series named in the svg's data-series). Hover a chart, or focus it (Tab) and use
// ← → Home End to see a line at a point and its values; Escape hides them.
// Handlers sit on the document, so charts that htmx swaps in work at once; a refresh keeps the point, the focus
// and any open data table.
(function () {
  "use strict";
  if (window.frontdoorCharts) return; // a refreshed partial brings this script again
  window.frontdoorCharts = true;

  var SVG_NS = "http://www.w3.org/2000/svg";
  var CHART = "svg.chart-time";

  // Keep the stylesheet in <head>: the one a partial brought goes away when htmx replaces the partial.
  var sheet = document.querySelector("link[data-chart-assets]");
  if (sheet && !document.head.querySelector("link[data-chart-assets]")) {
    var copy = sheet.cloneNode();
    document.head.appendChild(copy);
  }

  function pointsOf(svg) {
    if (!svg._chartPoints) {
      svg._chartPoints = Array.prototype.map.call(svg.querySelectorAll(".chart-point"), function (g) {
        return {
          x: parseFloat(g.getAttribute("data-x")),
          time: g.getAttribute("data-time"),
          values: g.getAttribute("data-values").split("|"),
          ys: g.getAttribute("data-ys").split("|"),
        };
      });
    }
    return svg._chartPoints;
  }

  function nearest(points, x) {
    var lo = 0, hi = points.length - 1;
    while (lo < hi) {
      var mid = (lo + hi) >> 1;
      if (points[mid].x < x) lo = mid + 1; else hi = mid;
    }
    if (lo > 0 && x - points[lo - 1].x < points[lo].x - x) lo -= 1;
    return lo;
  }

  function tipOf(svg) {
    var plot = svg.parentNode;
    var tip = plot.querySelector(".chart-tip");
    if (!tip) {
      tip = document.createElement("div");
      tip.className = "chart-tip";
      tip.setAttribute("role", "status");
      tip.hidden = true;
      plot.appendChild(tip);
    }
    return tip;
  }

  function crosshairOf(svg) {
    var group = svg.querySelector(".chart-crosshair");
    if (!group) {
      var box = svg.getAttribute("data-plot").split(" ").map(parseFloat);
      group = document.createElementNS(SVG_NS, "g");
      group.setAttribute("class", "chart-crosshair");
      group.setAttribute("aria-hidden", "true");
      var line = document.createElementNS(SVG_NS, "line");
      line.setAttribute("y1", box[1]);
      line.setAttribute("y2", box[3]);
      group.appendChild(line);
      svg.appendChild(group);
    }
    return group;
  }

  function tones(svg) {
    return Array.prototype.map.call(svg.querySelectorAll("path.line"), function (path) {
      return (path.getAttribute("class").match(/tone-\d+/) || ["tone-0"])[0];
    });
  }

  function show(svg, index) {
    var points = pointsOf(svg);
    if (!points.length) return;
    index = Math.max(0, Math.min(points.length - 1, index));
    svg._chartIndex = index;
    var point = points[index];
    var names = svg.getAttribute("data-series").split("|");
    var lineTones = tones(svg);
    var group = crosshairOf(svg);
    var line = group.querySelector("line");
    line.setAttribute("x1", point.x);
    line.setAttribute("x2", point.x);
    Array.prototype.forEach.call(group.querySelectorAll("circle"), function (dot) { dot.remove(); });
    point.ys.forEach(function (y, i) {
      if (y === "") return;
      var dot = document.createElementNS(SVG_NS, "circle");
      dot.setAttribute("cx", point.x);
      dot.setAttribute("cy", y);
      dot.setAttribute("r", 4);
      dot.setAttribute("class", lineTones[i] || "tone-0");
      group.appendChild(dot);
    });
    group.style.display = "";
    var tip = tipOf(svg);
    tip.textContent = "";
    var time = document.createElement("div");
    time.className = "chart-tip-time";
    time.textContent = point.time + " " + (svg.getAttribute("data-zone") || "");
    tip.appendChild(time);
    names.forEach(function (name, i) {
      var row = document.createElement("div");
      var swatch = document.createElement("span");
      swatch.className = "chart-swatch " + (lineTones[i] || "tone-0");
      row.appendChild(swatch);
      row.appendChild(document.createTextNode(name + ": " + point.values[i]));
      tip.appendChild(row);
    });
    tip.hidden = false;
    var width = svg.getBoundingClientRect().width;
    var viewWidth = svg.viewBox.baseVal.width || width;
    var left = (point.x / viewWidth) * width;
    var tipWidth = tip.offsetWidth;
    tip.style.left = (left + 12 + tipWidth <= width ? left + 12 : Math.max(0, left - 12 - tipWidth)) + "px";
  }

  // The point at ``time`` (a refresh keeps the one shown), else the newest.
  function indexOfTime(svg, time) {
    var points = pointsOf(svg);
    for (var i = points.length - 1; i >= 0; i--) if (points[i].time === time) return i;
    return points.length - 1;
  }

  function hide(svg) {
    var group = svg.querySelector(".chart-crosshair");
    if (group) group.style.display = "none";
    var tip = svg.parentNode.querySelector(".chart-tip");
    if (tip) tip.hidden = true;
  }

  var hovered = null;
  var lastPointer = null;

  function indexAt(svg, clientX) {
    var rect = svg.getBoundingClientRect();
    var x = ((clientX - rect.left) / rect.width) * (svg.viewBox.baseVal.width || rect.width);
    return nearest(pointsOf(svg), x);
  }

  document.addEventListener("pointermove", function (event) {
    var svg = event.target.closest ? event.target.closest(CHART) : null;
    lastPointer = { x: event.clientX, y: event.clientY };
    if (hovered && hovered !== svg && hovered !== document.activeElement) hide(hovered);
    hovered = svg;
    if (svg && pointsOf(svg).length) show(svg, indexAt(svg, event.clientX));
  });
  document.addEventListener("pointerout", function (event) {
    var svg = event.target.closest ? event.target.closest(CHART) : null;
    if (svg && !svg.contains(event.relatedTarget) && svg !== document.activeElement) {
      hide(svg);
      hovered = null;
    }
  });

  var KEYS = { ArrowLeft: -1, ArrowRight: 1 };
  document.addEventListener("keydown", function (event) {
    var svg = event.target.closest ? event.target.closest(CHART) : null;
    if (!svg) return;
    var points = pointsOf(svg);
    var current = svg._chartIndex === undefined ? points.length - 1 : svg._chartIndex;
    if (event.key in KEYS) show(svg, current + KEYS[event.key]);
    else if (event.key === "Home") show(svg, 0);
    else if (event.key === "End") show(svg, points.length - 1);
    else if (event.key === "Escape") hide(svg);
    else return;
    event.preventDefault();
  });
  document.addEventListener("focusin", function (event) {
    var svg = event.target.closest ? event.target.closest(CHART) : null;
    if (!svg) return;
    show(svg, indexOfTime(svg, svg._restoreTime));
  });
  document.addEventListener("focusout", function (event) {
    var svg = event.target.closest ? event.target.closest(CHART) : null;
    if (svg && svg !== hovered) hide(svg);
  });

  // A refresh replaces the charts: carry over the point shown, the focus (htmx refocuses an element by its id)
  // and the open data tables.
  var carried = null;
  document.addEventListener("htmx:beforeSwap", function (event) {
    var target = event.detail.target;
    if (!target || !target.querySelector(CHART + ", details.chart-data")) return;
    carried = { times: {}, open: [] };
    Array.prototype.forEach.call(target.querySelectorAll(CHART), function (svg) {
      var points = pointsOf(svg);
      if (svg._chartIndex !== undefined && points[svg._chartIndex]) carried.times[svg.id] = points[svg._chartIndex].time;
    });
    Array.prototype.forEach.call(target.querySelectorAll("details.chart-data[open]"), function (details) {
      carried.open.push(details.id);
    });
  });
  document.addEventListener("htmx:afterSwap", function () {
    if (!carried) return;
    var was = carried;
    carried = null;
    was.open.forEach(function (id) {
      var details = document.getElementById(id);
      if (details) details.open = true;
    });
    Object.keys(was.times).forEach(function (id) {
      var svg = document.getElementById(id);
      if (!svg) return;
      svg._restoreTime = was.times[id];
      if (svg === document.activeElement) show(svg, indexOfTime(svg, was.times[id]));
    });
    if (lastPointer) {
      var under = document.elementFromPoint(lastPointer.x, lastPointer.y);
      var svg = under && under.closest ? under.closest(CHART) : null;
      if (svg) {
        hovered = svg;
        show(svg, indexAt(svg, lastPointer.x));
      }
    }
  });
})();
