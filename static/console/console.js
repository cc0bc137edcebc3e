// Tiny console helpers: copy buttons and the canary slider. No framework; htmx does the rest.
(function () {
  "use strict";
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy-target]");
    if (!button) return;
    var source = document.getElementById(button.getAttribute("data-copy-target"));
    if (!source) return;
    var text = source.textContent.trim();
    var done = function () { button.textContent = "Copied"; setTimeout(function () { button.textContent = "Copy"; }, 2000); };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () { selectText(source); });
    } else {
      selectText(source);
      try { document.execCommand("copy"); done(); } catch (e) { /* the text stays selected for Ctrl+C */ }
    }
  });
  function selectText(node) {
    var range = document.createRange();
    range.selectNodeContents(node);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }
  document.addEventListener("input", function (event) {
    var target = event.target;
    if (target.matches("[data-sync]")) {
      var other = document.getElementById(target.getAttribute("data-sync"));
      if (other) other.value = target.value;
    } else if (target.id === "id_canary_weight") {
      var range = document.getElementById("canary-range");
      if (range) range.value = target.value;
    }
  });
})();
