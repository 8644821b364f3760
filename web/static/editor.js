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
  document.body.classList.add("has-editor");
  document.addEventListener("keydown", function (e) {
    if ((e.ctrlKey || e.metaKey) && e.key === "s") {
      e.preventDefault();
      document.getElementById("editor-form").requestSubmit();
    }
  });
}
