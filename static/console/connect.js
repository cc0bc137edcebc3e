// The Connect panel (templates/includes/connect.html): tabs over the snippets that work with the keyboard, and the
// playground, which sends one request from this browser to the gateway with the key its user pasted. The key is
// read from its input for that one fetch and kept nowhere: no storage, no cookie, no request to the console.
// Copy buttons are console.js's (data-copy-target).
(function () {
  "use strict";
  if (window.frontdoorConnect) return; // the panel's script tag may come twice (an htmx swap)
  window.frontdoorConnect = true;

  var TIMEOUT_MS = 60000;
  var MODEL_NAME = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;
  var KEY_CHARS = /^[\x21-\x7e]+$/; // what an Authorization header can carry: visible ASCII, no spaces

  // ---------------------------------------------------------------- tabs (WAI-ARIA tabs, automatic activation)

  function tabsOf(panel) {
    return Array.prototype.slice.call(panel.querySelectorAll('[role="tab"]'));
  }

  function select(tab, focus) {
    var panel = tab.closest("[data-connect]");
    tabsOf(panel).forEach(function (other) {
      var chosen = other === tab;
      other.setAttribute("aria-selected", chosen ? "true" : "false");
      other.tabIndex = chosen ? 0 : -1;
      var content = document.getElementById(other.getAttribute("aria-controls"));
      if (content) content.hidden = !chosen;
    });
    if (focus) tab.focus();
  }

  function setUp(panel) {
    if (panel.hasAttribute("data-ready")) return;
    panel.setAttribute("data-ready", "");
    var tablist = panel.querySelector('[role="tablist"]');
    var tabs = tabsOf(panel);
    if (tablist && tabs.length) {
      tablist.hidden = false;
      select(tabs[0], false);
    }
    var playground = panel.querySelector("[data-playground]");
    if (playground) playground.hidden = false;
  }

  function setUpAll(root) {
    if (root.matches && root.matches("[data-connect]")) setUp(root);
    Array.prototype.forEach.call(root.querySelectorAll("[data-connect]"), setUp);
  }

  document.addEventListener("click", function (event) {
    var tab = event.target.closest('[data-connect] [role="tab"]');
    if (tab) select(tab, false);
  });

  document.addEventListener("keydown", function (event) {
    var tab = event.target.closest('[data-connect] [role="tab"]');
    if (!tab) return;
    var tabs = tabsOf(tab.closest("[data-connect]"));
    var at = tabs.indexOf(tab);
    var next = {
      ArrowRight: tabs[(at + 1) % tabs.length],
      ArrowLeft: tabs[(at - 1 + tabs.length) % tabs.length],
      Home: tabs[0],
      End: tabs[tabs.length - 1],
    }[event.key];
    if (!next) return;
    event.preventDefault();
    select(next, true);
  });

  // ---------------------------------------------------------------- the playground

  function field(form, name) {
    return form.querySelector("[data-playground-" + name + "]");
  }

  // What to send: [url, body] for the panel's protocol and the kind of request chosen, or null after showing why not.
  function request(panel, form, model) {
    var gateway = panel.getAttribute("data-gateway");
    if (panel.getAttribute("data-protocol") === "v2") {
      var text = field(form, "body");
      var body;
      try {
        body = JSON.parse(text.value);
      } catch (e) {
        text.setCustomValidity("The request body is not JSON: " + e.message);
        text.reportValidity();
        return null;
      }
      return [gateway + "/v2/models/" + encodeURIComponent(model) + "/infer", body];
    }
    var prompt = field(form, "prompt").value;
    var kind = form.querySelector("[data-playground-kind]:checked");
    if (kind && kind.value === "image") {
      var image = { model: model, prompt: prompt, size: "256x256", response_format: "b64_json" };
      return [gateway + "/v1/images/generations", image];
    }
    var chat = { model: model, messages: [{ role: "user", content: prompt }], max_tokens: 256 };
    return [gateway + "/v1/chat/completions", chat];
  }

  // The answer as a person reads it: the reply's text, the tensors, or the error's message.
  function readable(answer, ok) {
    if (!answer || typeof answer !== "object") return String(answer);
    if (!ok) {
      var error = answer.error;
      return typeof error === "string" ? error : (error && error.message) || JSON.stringify(answer, null, 2);
    }
    if (answer.choices && answer.choices[0] && answer.choices[0].message) {
      var usage = answer.usage ? "\n\n(" + answer.usage.prompt_tokens + " prompt + " + answer.usage.completion_tokens + " completion tokens)" : "";
      return answer.choices[0].message.content + usage;
    }
    if (Array.isArray(answer.outputs)) {
      return answer.outputs.map(function (output) {
        var shape = Array.isArray(output.shape) ? output.shape.join(" × ") : "?";
        return output.name + " (" + output.datatype + ", " + shape + "): " + JSON.stringify(output.data);
      }).join("\n");
    }
    if (answer.data && answer.data[0] && answer.data[0].b64_json) return "";
    return JSON.stringify(answer, null, 2);
  }

  function show(result, status, latency, rid, text, image) {
    field(result, "status").textContent = status;
    field(result, "latency").textContent = latency;
    field(result, "rid").textContent = rid || "—";
    var shown = field(result, "answer");
    shown.textContent = text;
    shown.hidden = !text;
    var img = field(result, "image");
    if (image) {
      img.src = "data:image/png;base64," + image;
      img.hidden = false;
    } else {
      img.removeAttribute("src");
      img.hidden = true;
    }
    result.hidden = false;
  }

  function send(panel, form) {
    var keyInput = field(form, "key");
    var modelInput = field(form, "model");
    var bodyInput = field(form, "body");
    if (bodyInput) bodyInput.setCustomValidity("");
    var key = keyInput.value.trim();
    var keyProblem = "An API key has no spaces or accents: paste it as it was shown (fd_live_…).";
    keyInput.setCustomValidity(key === "" || KEY_CHARS.test(key) ? "" : keyProblem);
    var model = modelInput.value.trim();
    modelInput.setCustomValidity(MODEL_NAME.test(model) ? "" : "Use a deployment's name: lowercase letters, digits and hyphens.");
    if (!form.checkValidity()) {
      form.reportValidity();
      return;
    }
    var asked = request(panel, form, model);
    if (!asked) return;
    var result = panel.querySelector("[data-playground-result]");
    var button = field(form, "send");
    var controller = new AbortController();
    var timer = setTimeout(function () { controller.abort(); }, TIMEOUT_MS);
    var started = performance.now();
    button.disabled = true;
    button.textContent = "Sending…";
    fetch(asked[0], {
      method: "POST",
      // The key goes in this header only, to the gateway: no cookie (credentials omitted), nothing cached.
      headers: { "Authorization": "Bearer " + key, "Content-Type": "application/json" },
      body: JSON.stringify(asked[1]),
      credentials: "omit",
      cache: "no-store",
      referrerPolicy: "no-referrer",
      signal: controller.signal,
    })
      .then(function (response) {
        return response.text().then(function (text) {
          var latency = Math.round(performance.now() - started) + " ms";
          var answer;
          try { answer = JSON.parse(text); } catch (e) { answer = text; }
          var image = response.ok && answer && answer.data && answer.data[0] && answer.data[0].b64_json;
          var status = response.status + (response.statusText ? " " + response.statusText : "");
          show(result, status, latency, response.headers.get("x-request-id"), readable(answer, response.ok), image);
        });
      })
      .catch(function (error) {
        var why = error && error.name === "AbortError"
          ? "No answer within " + TIMEOUT_MS / 1000 + " s."
          : "The gateway could not be reached from this browser: it is down, or it does not allow this console's origin (FRONTDOOR_GATEWAY_CORS_ORIGINS).";
        show(result, "No answer", Math.round(performance.now() - started) + " ms", "", why, null);
      })
      .then(function () {
        clearTimeout(timer);
        button.disabled = false;
        button.textContent = "Send";
      });
  }

  document.addEventListener("submit", function (event) {
    var form = event.target.closest("[data-playground-form]");
    if (!form) return;
    event.preventDefault(); // method="dialog" would go nowhere anyway: nothing of the form ever leaves by submission
    send(form.closest("[data-connect]"), form);
  });

  document.addEventListener("input", function (event) {
    if (event.target.matches("[data-playground-body]")) event.target.setCustomValidity("");
  });

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { setUpAll(document); });
  } else {
    setUpAll(document);
  }
  document.addEventListener("htmx:load", function (event) { setUpAll(event.target); });
})();
