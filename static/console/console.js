// Tiny console helpers: copy buttons, the canary slider, and what htmx does not do by itself: swap refused forms in,
// say when a request failed, show messages where the action happened and move focus to the first bad field.
// No framework.
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

  // ---- htmx answers -------------------------------------------------------------------------------------------
  // A refused form answers 4xx with its partial (the fields and their errors): swap it in like a success. A whole
  // page (the console's 403/404 pages, a CSRF refusal), a 5xx or no answer at all becomes a notice instead, shown
  // where the request was made; the next answer there clears it.
  var MESSAGES_HEADER = "X-Console-Messages";

  function isWholePage(text) {
    return /^\s*(<!doctype html|<html)/i.test(text || "");
  }

  function failureText(xhr) {
    var status = xhr.status;
    var text;
    if (status === 401 || status === 403) text = "You can't do this here any more: your session or your role changed. Reload the page.";
    else if (status === 404) text = "This is no longer there. Reload the page to see what is.";
    else if (status === 429) text = "Too many requests: wait a minute, then try again.";
    else if (status >= 500) text = "The console could not finish this (error " + status + "). Try again in a moment.";
    else text = "The console refused this (error " + status + "). Reload the page and try again.";
    var requestId = xhr.getResponseHeader("x-request-id");
    return requestId ? text + " Request id: " + requestId + "." : text;
  }

  // Where a notice or a message goes: just before the element the answer was for. Inside a table that is the
  // table's scroll box, so a banner never lands between rows; for the whole page, the top of <main>.
  function anchorFor(element) {
    if (!element || !element.isConnected || element === document.body || element === document.documentElement) {
      return document.getElementById("main");
    }
    var table = element.closest("table");
    if (table) return table.closest(".table-wrap") || table;
    return element;
  }

  function flashBox(anchor, create) {
    if (!anchor) return null;
    if (anchor.id === "main") {
      var first = anchor.firstElementChild;
      if (first && first.hasAttribute("data-flash")) return first;
      if (!create) return null;
      var top = newBox();
      anchor.insertBefore(top, anchor.firstChild);
      return top;
    }
    var previous = anchor.previousElementSibling;
    if (previous && previous.hasAttribute("data-flash")) return previous;
    if (!create) return null;
    var box = newBox();
    anchor.parentNode.insertBefore(box, anchor);
    return box;
  }

  function newBox() {
    var box = document.createElement("div");
    box.className = "messages flash";
    box.setAttribute("data-flash", "");
    return box;
  }

  function banner(kind, level, text) {
    var p = document.createElement("p");
    var alert = level === "error" || level === "warning";
    p.className = "banner " + (alert ? "error" : level);
    p.setAttribute("role", alert ? "alert" : "status");
    p.setAttribute("data-flash-kind", kind);
    p.textContent = text;
    return p;
  }

  // Replace the banners of one kind ("message" or "notice") in the box before ``anchor``; none left: no box.
  function show(anchor, kind, banners) {
    var box = flashBox(anchor, banners.length > 0);
    if (!box) return;
    Array.prototype.forEach.call(box.querySelectorAll('[data-flash-kind="' + kind + '"]'), function (old) { old.remove(); });
    banners.forEach(function (node) { box.appendChild(node); });
    if (!box.children.length) box.remove();
  }

  function messagesOf(xhr) {
    var raw = xhr.getResponseHeader(MESSAGES_HEADER);
    if (!raw) return [];
    try {
      return JSON.parse(raw).map(function (m) { return banner("message", m.level, m.text); });
    } catch (e) {
      return [];
    }
  }

  function isAction(detail) {
    var verb = detail.requestConfig && detail.requestConfig.verb;
    return !!verb && verb.toLowerCase() !== "get";
  }

  document.addEventListener("htmx:beforeSwap", function (event) {
    var detail = event.detail;
    var status = detail.xhr.status;
    var anchor = anchorFor(detail.target);
    var failed = status >= 500 || (status >= 400 && isWholePage(detail.serverResponse));
    if (status >= 400 && !failed) {
      detail.shouldSwap = true;
      detail.isError = false;
    } else if (failed) {
      detail.shouldSwap = false;
    }
    show(anchor, "notice", failed ? [banner("notice", "error", failureText(detail.xhr))] : []);
    var pending = messagesOf(detail.xhr);
    // A new action replaces the messages of the one before; a poll only adds what it brings.
    if (pending.length || isAction(detail)) show(anchor, "message", pending);
  });

  function noAnswer(event) {
    var detail = event.detail;
    var text = "No answer from the console: check your connection, then try again.";
    show(anchorFor(detail.target || detail.elt), "notice", [banner("notice", "error", text)]);
  }
  document.addEventListener("htmx:sendError", noAnswer);
  document.addEventListener("htmx:timeout", noAnswer);

  // ---- focus on a refused form --------------------------------------------------------------------------------
  // After a refused submit (a page load or an htmx swap), focus goes to the first field marked aria-invalid, or to
  // the error summary when only the form as a whole was refused; the summary's role=alert announces the errors.
  function focusFirstError(root) {
    var summary = root.matches && root.matches("[data-error-summary]") ? root : root.querySelector("[data-error-summary]");
    if (!summary) return false;
    var form = summary.closest("form") || root;
    var field = form.querySelector('[aria-invalid="true"]');
    (field || summary).focus();
    return true;
  }

  document.addEventListener("click", function (event) {
    var link = event.target.closest("[data-error-summary] a[href^='#']");
    if (!link) return;
    var field = document.getElementById(link.getAttribute("href").slice(1));
    if (!field) return;
    event.preventDefault();
    field.focus();
  });

  document.addEventListener("htmx:afterSettle", function (event) {
    var detail = event.detail;
    if (!isAction(detail) || detail.xhr.consoleFocused || !(event.target instanceof Element)) return;
    if (focusFirstError(event.target)) detail.xhr.consoleFocused = true;
  });

  document.addEventListener("DOMContentLoaded", function () {
    focusFirstError(document.getElementById("main") || document.body);
  });
})();
