// The deployment pages: the create form shows only the fields of the chosen runtime, and the rollout panel counts
// down to its next step between two polls. Both enhance server-rendered markup that works without them.
(function () {
  "use strict";

  // Each input of the create form names the runtimes it applies to (data-runtimes="builtin external"); the others
  // are hidden and disabled, so they are not sent either. A field the server refused stays visible.
  function showRuntimeFields(form) {
    var runtime = form.querySelector("[name=runtime]");
    if (!runtime) return;
    form.querySelectorAll("[data-runtimes]").forEach(function (input) {
      var applies = input.getAttribute("data-runtimes").split(" ").indexOf(runtime.value) !== -1;
      var field = input.closest(".field") || input;
      if (!applies && field.classList.contains("has-error")) applies = true;
      field.hidden = !applies;
      input.disabled = !applies;
    });
  }

  function enhanceRuntimeForms(root) {
    root.querySelectorAll("form[data-runtime-form]").forEach(function (form) {
      showRuntimeFields(form);
      if (form.dataset.runtimeBound) return;
      form.dataset.runtimeBound = "1";
      form.addEventListener("change", function (event) {
        if (event.target.name === "runtime") showRuntimeFields(form);
      });
    });
  }

  // "in 25 s", "in 3 min", "in 2 h", "now": the words deployments.console.figures.RolloutProgress.until_text uses.
  function untilText(seconds) {
    if (seconds <= 0) return "now";
    if (seconds < 60) return "in " + seconds + " s";
    return seconds < 3600 ? "in " + Math.floor(seconds / 60) + " min" : "in " + Math.floor(seconds / 3600) + " h";
  }

  function countDown() {
    document.querySelectorAll("time[data-countdown]").forEach(function (node) {
      var at = Date.parse(node.getAttribute("datetime"));
      if (!isNaN(at)) node.textContent = untilText(Math.max(0, Math.floor((at - Date.now()) / 1000)));
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    enhanceRuntimeForms(document);
    setInterval(countDown, 1000);
  });
  // The create form may come back in an htmx answer (a refused submission swapped in place).
  document.addEventListener("htmx:afterSettle", function (event) { enhanceRuntimeForms(event.target); });
})();
