// Opens the console with an admin key: a browser cannot send a header when it opens a page, so this page
// fetches /ui with the key and shows what it answers; console.js then sends the key with every call.
"use strict";

(() => {
  const KEY = "modelserve.key";
  const form = document.getElementById("signin");
  const problem = document.getElementById("signin-error");

  async function open(key) {
    const response = await fetch("/ui", { headers: { Authorization: `Bearer ${key}` }, cache: "no-store" });
    if (!response.ok) {
      let why = `${response.status} ${response.statusText}`;
      try {
        const body = await response.json();
        if (typeof body.error === "string") why = body.error;
      } catch (_) {
        // not JSON: the status says it
      }
      sessionStorage.removeItem(KEY);
      problem.textContent = why;
      problem.hidden = false;
      return;
    }
    const page = await response.text();
    document.open();
    document.write(page);
    document.close();
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const key = form.elements.key.value.trim();
    sessionStorage.setItem(KEY, key);
    open(key);
  });
  const kept = sessionStorage.getItem(KEY);
  if (kept) open(kept);
})();
