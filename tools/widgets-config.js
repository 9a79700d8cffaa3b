// Loaded before the ipywidgets HTML manager (see nb_ipywidgets_js in _config.yml); copied to
// _vendor/ by tools/vendor-js. It adapts the manager to a site that works offline.
(function () {
  // 1. RequireJS would resolve the manager's module next to each page, and webpack would load its
  //    fonts from there: point it at _vendor/html-manager, wherever the page is.
  var here = document.currentScript.src;
  var base = here.slice(0, here.lastIndexOf("/") + 1);
  require.config({ paths: { "@jupyter-widgets/html-manager/dist": base + "html-manager" } });

  // 2. The manager typesets widget labels with MathJax 2's MathJax.Hub.Queue; the book loads
  //    MathJax 3, which has no Hub, so every label threw "reading 'Queue'". Give MathJax 3 a Hub
  //    whose Queue typesets the element with MathJax 3's API once MathJax has started.
  var hub = {
    Queue: function (job) {
      var element = job && job[2];
      var mathjax = window.MathJax;
      if (mathjax && mathjax.startup && mathjax.startup.promise && mathjax.typesetPromise) {
        mathjax.startup.promise.then(function () { return mathjax.typesetPromise(element ? [element] : undefined); });
      }
    },
  };
  var current = window.MathJax;
  if (current && !current.Hub) current.Hub = hub;
  Object.defineProperty(window, "MathJax", {
    configurable: true,
    get: function () { return current; },
    set: function (value) { current = value; if (value && typeof value === "object" && !value.Hub) value.Hub = hub; },
  });
})();
