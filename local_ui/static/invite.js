"use strict";
/* An invited member chooses their password. The one-time code is in the address's
   fragment (/invite#CODE): it never reaches a server log. */
(function () {
  const $ = (id) => document.getElementById(id);
  const code = decodeURIComponent(location.hash.replace(/^#/, "")).trim();
  let lang = "en";
  function problem(text) {
    $("invite").hidden = true;
    $("problem-text").textContent = text;
    $("problem").hidden = false;
  }
  function fail(text) {
    $("msg").textContent = text;
    $("msg").hidden = false;
  }
  async function init() {
    lang = await loadMessages(navigator.language);
    if (!code) return problem(T("This address holds no invitation. Open the whole link or scan the QR code the station's owner showed you."));
    const r = await api("POST", "/api/v1/auth/invite/check", { code: code, lang: lang });
    if (!r.ok) return problem(r.data.message || T("That did not work. Try again."));
    $("welcome").textContent = T("Welcome, {name}", { name: r.data.username });
    $("cards").textContent = r.data.cards
      ? T("The station's owner has given you {n} card(s) or code(s) to charge with.", { n: r.data.cards })
      : T("The station's owner will give you your cards or codes.");
    $("valid").textContent = T("This invitation works once, until {time}.", { time: new Date(r.data.expires_at * 1000).toLocaleString(lang) });
    $("invite").hidden = false;
  }
  $("invite").addEventListener("submit", async function (e) {
    e.preventDefault();
    const f = new FormData($("invite"));
    if (f.get("password") !== f.get("password2")) return fail(T("The two passwords differ."));
    const r = await api("POST", "/api/v1/auth/invite/accept", { code: code, password: f.get("password"), lang: lang });
    if (r.ok) return location.assign("/member");
    if (r.data.error && r.data.error.startsWith("invite_")) return problem(r.data.message);
    fail(r.data.message || T("That did not work. Try again."));
  });
  init();
})();
