// The entry point editor: CodeJar (a contenteditable with undo, tab and indent handling)
// highlighted by Prism, mirrored into the form's textarea so the page also works without it.
import { CodeJar } from "/static/vendor/codejar.js";

function loadPrism() {
  return new Promise(function (resolve) {
    if (window.Prism && window.Prism.highlightElement) { resolve(window.Prism); return; }
    var s = document.createElement("script");
    s.src = "/static/vendor/prism.min.js";
    s.onload = function () { resolve(window.Prism); };
    s.onerror = function () { resolve(null); };
    document.head.appendChild(s);
  });
}

const code = document.getElementById("code");
const area = document.getElementById("content");
if (code && area) {
  const prism = await loadPrism();
  const lang = code.dataset.lang || "bash";
  code.classList.add("language-" + lang);
  const jar = CodeJar(code, function (el) {
    if (prism && prism.languages[lang]) {
      el.innerHTML = prism.highlight(el.textContent, prism.languages[lang], lang);
    }
  }, { tab: "    " });
  jar.updateCode(area.value);
  jar.onUpdate(function (text) { area.value = text; });
  // Typing is covered by onUpdate; paste-like input (IME, drag and drop, assistive tools) and
  // the final state are synced too, so what is saved is always what is shown.
  code.addEventListener("input", function () { area.value = jar.toString(); });
  document.getElementById("editor-form").addEventListener("submit", function () {
    area.value = jar.toString();
  });
  document.body.classList.add("has-editor");
  document.addEventListener("keydown", function (e) {
    if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "s") {
      e.preventDefault();
      document.getElementById("editor-form").requestSubmit();
    }
  });
}
