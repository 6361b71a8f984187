"use strict";
/* Login and first-run setup forms. */
(function () {
  const msg = document.getElementById("msg");
  function fail(text) {
    msg.textContent = text;
    msg.hidden = false;
  }
  const login = document.getElementById("login");
  if (login) {
    login.addEventListener("submit", async function (e) {
      e.preventDefault();
      const f = new FormData(login);
      const r = await api("POST", "/api/v1/auth/login", { username: f.get("username"), password: f.get("password") });
      if (r.ok) location.assign(r.data.role === "member" ? "/member" : "/owner");
      else fail(r.data.message || "Login failed.");
    });
  }
  const setup = document.getElementById("setup");
  if (setup) {
    setup.addEventListener("submit", async function (e) {
      e.preventDefault();
      const f = new FormData(setup);
      if (f.get("password") !== f.get("password2")) return fail("The two passwords differ.");
      const r = await api("POST", "/api/v1/auth/setup", {
        code: f.get("code"), username: f.get("username"), password: f.get("password"),
      });
      if (r.ok) location.assign("/owner");
      else fail(r.data.message || "Setup failed.");
    });
  }
})();
