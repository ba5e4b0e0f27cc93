// The preview page's only script (the email never has one): reload when the preview's inputs
// change, keep each pane's scroll position across reloads, and show a reader once chosen.
"use strict";
(() => {
  const root = document.documentElement;
  const version = root.dataset.version;
  const every = Number(root.dataset.poll) || 1000;
  const status = document.getElementById("status");
  const text = document.getElementById("text");
  const frames = [...document.querySelectorAll("iframe[data-pane]")];
  const KEY = "digest-preview-scroll";

  // A scrollbar takes its width from the frame: add it, so the phone frame shows 375 px of email.
  const probe = document.createElement("div");
  probe.className = "scrollbar-probe";
  document.body.append(probe);
  root.style.setProperty("--scrollbar", `${probe.offsetWidth - probe.clientWidth}px`);
  probe.remove();

  // Choosing a reader shows their copy; the Show button is for a browser without scripts.
  const picker = document.getElementById("reader");
  if (picker) {
    picker.form.querySelector("button").hidden = true;
    picker.addEventListener("change", () => picker.form.requestSubmit());
  }

  // After a reload or another reader, each pane shows the same place as before.
  let saved = {};
  try {
    saved = JSON.parse(sessionStorage.getItem(KEY) || "{}");
  } catch {
    saved = {};
  }
  if (text && saved.text) text.scrollTop = saved.text;
  for (const frame of frames) {
    const ready = () => {
      const doc = frame.contentDocument;
      if (!doc || !doc.head) return;
      // A link opens in a new tab instead of replacing the email in its frame.
      const base = doc.createElement("base");
      base.target = "_blank";
      doc.head.prepend(base);
      frame.contentWindow.scrollTo(0, saved[frame.dataset.pane] || 0);
    };
    const doc = frame.contentDocument;
    if (doc && doc.readyState === "complete" && doc.URL !== "about:blank") ready();
    else frame.addEventListener("load", ready, { once: true });
  }
  addEventListener("pagehide", () => {
    if (!text) return; // an error page: keep the positions for when the email is back
    const positions = { text: text.scrollTop };
    for (const frame of frames) positions[frame.dataset.pane] = frame.contentWindow?.scrollY || 0;
    sessionStorage.setItem(KEY, JSON.stringify(positions));
  });

  // Ask the server whether anything changed; reload when it did.
  const show = (state, words) => {
    status.dataset.state = state;
    status.textContent = words;
  };
  const poll = async () => {
    try {
      const answer = await fetch("/version", { cache: "no-store" });
      if (!answer.ok) throw new Error(`HTTP ${answer.status}`);
      if ((await answer.text()) !== version) {
        location.reload();
        return;
      }
      show("live", "Live");
    } catch {
      show("stopped", "Server stopped: run digest preview again");
    }
    setTimeout(poll, every);
  };
  setTimeout(poll, every);
})();
