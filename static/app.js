// Progressive enhancement: on result pages, "Where the model looked" is fetched in place; on the upload form,
// drag-and-drop, paste, previews and webcam capture. Without this script the plain links and form do everything.
(function () {
  "use strict";
  for (const link of document.querySelectorAll("a.explain-link")) {
    link.addEventListener("click", async (e) => {
      e.preventDefault();
      const url = new URL(link.href);
      url.searchParams.set("fragment", "1");
      try {
        const response = await fetch(url);
        if (!response.ok) throw new Error(response.status);
        link.closest("p.explain").outerHTML = await response.text();
      } catch (err) {
        window.location.href = link.href;  // the plain page still works
      }
    });
  }
})();

(function () {
  "use strict";
  const input = document.getElementById("file");
  const zone = document.getElementById("dropzone");
  const previews = document.getElementById("previews");
  if (!input || !zone || typeof DataTransfer === "undefined") return;
  zone.hidden = false;

  function addFiles(files) {
    const all = new DataTransfer();
    for (const f of input.files) all.items.add(f);
    for (const f of files) if (f.type.startsWith("image/")) all.items.add(f);
    input.files = all.files;
    showPreviews();
  }

  function showPreviews() {
    previews.replaceChildren();
    for (const f of input.files) {
      const img = document.createElement("img");
      img.src = URL.createObjectURL(f);
      img.alt = "Preview of " + f.name;
      img.onload = () => URL.revokeObjectURL(img.src);
      previews.appendChild(img);
    }
  }

  input.addEventListener("change", showPreviews);
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("active"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("active"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("active");
    addFiles(e.dataTransfer.files);
  });
  document.addEventListener("paste", (e) => {
    const files = [...(e.clipboardData || {}).files || []];
    if (files.length) { e.preventDefault(); addFiles(files); }
  });

  const cam = document.getElementById("webcam");
  if (!cam || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) return;
  cam.hidden = false;
  const video = document.getElementById("webcam-video");
  const start = document.getElementById("webcam-start");
  const capture = document.getElementById("webcam-capture");
  start.addEventListener("click", async () => {
    try {
      video.srcObject = await navigator.mediaDevices.getUserMedia({ video: true });
      video.hidden = false;
      capture.hidden = false;
      start.hidden = true;
    } catch (err) {
      start.textContent = "Webcam unavailable: " + err.name;
      start.disabled = true;
    }
  });
  capture.addEventListener("click", () => {
    const canvas = document.createElement("canvas");
    canvas.width = video.videoWidth;
    canvas.height = video.videoHeight;
    canvas.getContext("2d").drawImage(video, 0, 0);
    canvas.toBlob((blob) => {
      addFiles([new File([blob], "webcam-" + Date.now() + ".png", { type: "image/png" })]);
    }, "image/png");
  });
})();

// "Is this right?": sent in place through POST /api/feedback; without this script the form posts and a page thanks.
(function () {
  "use strict";
  for (const form of document.querySelectorAll("form.feedback")) {
    form.addEventListener("submit", async (e) => {
      const button = e.submitter;
      if (!button) return;
      e.preventDefault();
      const label = button.value === "other" ? form.elements["class"].value : button.value;
      const status = form.querySelector(".feedback-status");
      try {
        const response = await fetch("/api/feedback", {
          method: "POST", headers: {"Content-Type": "application/json"},
          body: JSON.stringify({id: form.dataset.answer, label: label}),
        });
        const answer = await response.json();
        status.textContent = response.ok ? "Thank you: recorded." : answer.error;
      } catch (err) {
        form.submit();  // the plain post still works
      }
    });
  }
})();
