// normbook: accessibility fixes to what the theme and the widget manager draw in the browser (Jupyter Book
// adds every .js file in _static/ to every page). tests/test_browser.py runs axe-core on every page.
// (Faults in the page body are mended at build time, in _ext/normbook_site.py.)
(() => {
  function mend(root) {
    // The theme's search field is named "Search" but shows "Search Ctrl+K": a speech user saying what
    // they see must match its name, so its visible text names it.
    root.querySelectorAll(".search-button-field[aria-label]").forEach((button) => {
      if (button.textContent.trim()) button.removeAttribute("aria-label");
    });
    // The colour-mode button is named "Color mode"; its icons (Font Awesome's SVGs) carry titles such as
    // "Light" that are not part of that name. The icons are decoration: the button's name says it all.
    root.querySelectorAll(".theme-switch-button svg, .theme-switch-button i").forEach((icon) => {
      icon.setAttribute("aria-hidden", "true");
      icon.removeAttribute("aria-labelledby");
      icon.removeAttribute("title");
      icon.querySelectorAll("title").forEach((title) => title.remove());
    });
    // ipywidgets' sliders (noUiSlider) have no accessible name: give each the slider's own label.
    root.querySelectorAll(".widget-slider").forEach((widget) => {
      const label = widget.querySelector(".widget-label");
      const name = label && label.textContent.trim();
      if (!name) return;
      widget.querySelectorAll('[role="slider"]:not([aria-label])').forEach((h) => h.setAttribute("aria-label", name));
    });
    // ipywidgets' Image has no alt text (and setting its tooltip breaks html-manager 1.0.15's ImageView):
    // a figure explorer's image (normlab.widgets.figure_explorer) is named after the sliders that draw it.
    root.querySelectorAll("img.widget-image:not([alt])").forEach((img) => {
      const box = img.parentElement;
      const names = box ? [...box.querySelectorAll(".widget-label")].map((l) => l.textContent.trim()).filter(Boolean) : [];
      img.setAttribute("alt", names.length
        ? `The figure for the values of the sliders above (${names.join(", ")}); it is redrawn when one moves.`
        : "A figure drawn by an interactive widget.");
    });
  }
  function start() {
    mend(document);
    // Font Awesome swaps icons in, and widgets are drawn, after the page has loaded.
    new MutationObserver(() => mend(document)).observe(document.body, { childList: true, subtree: true });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
