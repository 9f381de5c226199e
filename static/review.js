// Keyboard shortcuts on the review queue: j/k move between items, a accepts, r rejects. The buttons work without it.
(function () {
  "use strict";
  const rows = Array.from(document.querySelectorAll("tr.review-item"));
  if (!rows.length) return;
  let current = 0;
  rows[0].focus();
  function press(value) {
    const button = rows[current].querySelector(`button[value="${value}"]`);
    if (button) button.click();
  }
  document.addEventListener("keydown", (e) => {
    if (e.target.tagName === "SELECT" || e.altKey || e.ctrlKey || e.metaKey) return;
    if (e.key === "j" || e.key === "k") {
      current = Math.max(0, Math.min(rows.length - 1, current + (e.key === "j" ? 1 : -1)));
      rows[current].focus();
    } else if (e.key === "a") {
      press("accept");
    } else if (e.key === "r") {
      press("reject");
    }
  });
})();
