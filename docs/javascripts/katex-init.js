// Renders the pages' equations with the vendored KaTeX (docs/assets/katex/). pymdownx.arithmatex (generic mode)
// wraps each $...$ in <span class="arithmatex">\(...\)</span> and each $$...$$ in <div class="arithmatex">\[...\]</div>;
// only those elements are rendered, so a dollar sign in prose or code is never taken for math.
(function () {
  function renderMath(root) {
    root.querySelectorAll(".arithmatex").forEach(function (el) {
      renderMathInElement(el, {
        delimiters: [
          { left: "\\(", right: "\\)", display: false },
          { left: "\\[", right: "\\]", display: true },
        ],
        throwOnError: false,  // a bad formula shows as a red .katex-error, not a blank page
      });
    });
  }
  if (typeof document$ !== "undefined") {
    // mkdocs-material: emits for the first page and again after every instant-navigation page change
    document$.subscribe(function () { renderMath(document.body); });
  } else if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { renderMath(document.body); });
  } else {
    renderMath(document.body);
  }
})();
