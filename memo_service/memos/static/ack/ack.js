// Marks an answer as coming from a person: a pointer, touch or key on the page before
// the button. Mail scanners that submit forms do none of these.
(function () {
  function mark() {
    document.querySelectorAll('input[name="interacted"]').forEach(function (input) { input.value = "1"; });
  }
  ["pointerdown", "touchstart", "keydown"].forEach(function (type) {
    document.addEventListener(type, mark, { once: true, passive: true });
  });
})();
