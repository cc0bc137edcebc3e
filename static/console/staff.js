// Staff forms (data-staff-form) answer a refused submission with 422 and the form again, its errors on the fields.
// htmx leaves 4xx answers unswapped by default, which would make such a form fail silently: swap it, then move the
// focus to the first field in error. No framework; htmx does the rest.
(function () {
  "use strict";
  function fromStaffForm(detail) {
    // The element that sent the request (detail.elt is the swap target by the time the event fires).
    var sender = detail.requestConfig && detail.requestConfig.elt;
    return Boolean(sender && sender.closest && sender.closest("[data-staff-form]"));
  }
  document.addEventListener("htmx:beforeSwap", function (event) {
    var detail = event.detail;
    if (detail.xhr && detail.xhr.status === 422 && fromStaffForm(detail)) {
      detail.shouldSwap = true;
      detail.isError = false;
    }
  });
  document.addEventListener("htmx:afterSwap", function (event) {
    var detail = event.detail;
    if (!detail.xhr || detail.xhr.status !== 422 || !fromStaffForm(detail)) return;
    var field = detail.target.querySelector(".has-error input, .has-error select, .has-error textarea");
    if (field) field.focus();
  });
})();
