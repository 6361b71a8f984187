"use strict";
/* A member's page: start and stop charging with their own cards, their own sessions only.
   Polls /api/v1/me/bays (the owner's live stream shows every bay's session, so it is not theirs). */
(function () {
  const $ = (id) => document.getElementById(id);
  function t(ts) { return ts ? new Date(ts * 1000).toLocaleString() : "–"; }
  function dur(s) { if (s === null || s === undefined) return "–"; const m = Math.round(s / 60); return m >= 60 ? Math.floor(m / 60) + " h " + (m % 60) + " min" : m + " min"; }
  function cell(text, label) { return el("td", { text: text === null || text === undefined ? "–" : String(text), "data-label": label }); }
  function flash(text, bad) {
    const f = $("flash");
    f.textContent = text;
    f.className = "flash" + (bad ? " bad" : "");
    f.hidden = false;
    clearTimeout(flash.t);
    flash.t = setTimeout(() => { f.hidden = true; }, 6000);
  }
  async function call(method, path, body, okText) {
    const r = await api(method, path, body);
    if (r.status === 401) location.assign("/login");
    if (!r.ok) flash(r.data.message || "That did not work. Try again.", true);
    else if (okText) flash(okText);
    return r;
  }

  async function loadBays() {
    const r = await api("GET", "/api/v1/me/bays");
    if (r.status === 401) return location.assign("/login");
    if (!r.ok) return;
    $("m-cards").textContent = r.data.cards.length ? "Your cards and codes: " + r.data.cards.join(", ") : "You have no card or code yet: ask the station's owner for one.";
    const box = $("m-bays");
    box.replaceChildren();
    for (const b of r.data.bays) {
      const card = el("div", { cls: "card", "data-bay": b.id }, [el("h3", { text: "Bay " + b.id })]);
      if (b.mine && b.session) {
        const s = b.session;
        card.append(el("p", { cls: "status", text: "Your session · " + b.status }));
        card.append(el("p", { text: (s.energy_wh / 1000).toFixed(2) + " kWh · " + dur(s.elapsed_s) + " · " + s.cost.toFixed(2) + " " + s.currency }));
        card.append(el("button", { cls: "danger", text: "Stop charging", onclick: async () => { await call("POST", "/api/v1/me/sessions/" + encodeURIComponent(s.id) + "/stop", undefined, "Charging stopped."); refresh(); } }));
      } else if (b.busy) {
        card.append(el("p", { cls: "status", text: "In use" }));
      } else {
        card.append(el("p", { cls: "status", text: b.status }));
        if (r.data.cards.length && b.status === "Available") {
          card.append(el("button", { cls: "primary", text: "Start charging", onclick: async () => { await call("POST", "/api/v1/me/bays/" + encodeURIComponent(b.id) + "/start", { card: 0 }, "Charging started: plug in now."); refresh(); } }));
        }
      }
      box.append(card);
    }
  }

  async function loadSessions() {
    const r = await api("GET", "/api/v1/me/sessions?limit=50");
    if (!r.ok) return;
    let kwh = 0;
    let cost = 0;
    let currency = "";
    $("m-rows").replaceChildren(...r.data.items.map((s) => {
      kwh += s.energy_wh / 1000;
      cost += s.cost || 0;
      currency = s.currency || currency;
      return el("tr", { "data-session": "" }, [
        cell(t(s.started_at), "Start"), cell(s.bay_id, "Bay"), cell(dur(s.duration_s), "Duration"),
        cell((s.energy_wh / 1000).toFixed(2), "kWh"), cell(s.cost === null ? "–" : s.cost.toFixed(2) + " " + (s.currency || ""), "Cost"),
        cell(s.stop_text || "still charging", "Ended"),
      ]);
    }));
    $("m-totals").textContent = r.data.total + " sessions · " + kwh.toFixed(2) + " kWh · " + cost.toFixed(2) + " " + currency + (r.data.total > r.data.items.length ? " (latest " + r.data.items.length + ")" : "");
  }

  function refresh() { loadBays(); loadSessions(); loadUsage(); }

  /* My usage per month (my own sessions only: the station answers nothing else). */
  async function loadUsage() {
    const months = $("mu-months").value;
    $("mu-csv").setAttribute("href", "/api/v1/me/usage.csv?months=" + months);
    const r = await api("GET", "/api/v1/me/usage?months=" + months);
    if (!r.ok) return;
    const tt = r.data.totals;
    const cost = tt.cost === null ? "–" : tt.cost.toFixed(2) + " " + tt.currency;
    $("mu-totals").textContent = T("Sessions: {n} · {kwh} kWh · {cost}", { n: tt.sessions, kwh: tt.energy_kwh.toFixed(2), cost: cost });
    $("mu-rows").replaceChildren(...r.data.months.map((m) => el("tr", { "data-month": m.month }, [
      cell(m.month, T("Month")), cell(m.sessions, T("Sessions")), cell(m.energy_kwh.toFixed(2), T("Energy (kWh)")),
      cell(tt.cost === null ? "–" : m.cost.toFixed(2) + " " + tt.currency, T("Cost")),
    ])));
  }

  async function init() {
    const r = await api("GET", "/api/v1/auth/status");
    if (!r.ok || !r.data.user) return location.assign("/login");
    $("who").textContent = r.data.user.username;
    $("logout").addEventListener("click", async () => { await api("POST", "/api/v1/auth/logout"); location.assign("/login"); });
    await loadMessages(document.documentElement.lang);
    $("mu-months").addEventListener("change", loadUsage);
    refresh();
    setInterval(loadBays, 3000);
    setInterval(loadSessions, 15000);
  }
  init();
})();
