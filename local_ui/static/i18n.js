"use strict";
/* The owner and member pages' sentences in the person's language (catalogue "owner").
   window.T("English sentence", {name: ...}) translates and fills {placeholders};
   elements with data-t="English sentence" get their text translated by loadMessages().
   The language: ?lang= in the address, else the page's own, else the browser's. */
(function () {
  let table = {};
  window.T = function (msgid, values) {
    let text = table[msgid] || msgid;
    for (const k in values || {}) text = text.split("{" + k + "}").join(String(values[k]));
    return text;
  };
  window.translatePage = function (root) {
    for (const e of (root || document).querySelectorAll("[data-t]")) e.textContent = window.T(e.getAttribute("data-t"));
  };
  window.loadMessages = async function (lang) {
    const wanted = new URLSearchParams(location.search).get("lang") || lang || "";
    let data = null;
    try {
      const r = await fetch("/api/v1/auth/messages?lang=" + encodeURIComponent(wanted), { credentials: "same-origin" });
      if (r.ok) data = await r.json();
    } catch (err) {
      data = null;
    }
    if (!data) return "en";
    table = data.messages || {};
    document.documentElement.lang = data.lang;
    window.translatePage();
    return data.lang;
  };
})();
