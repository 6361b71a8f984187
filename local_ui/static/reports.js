"use strict";
/* The owner UI's figures and reports: site power and energy on the dashboard with the 24 h
   power chart, yearly statistics, the history PDF link, the installer's checklist and its
   commissioning report. Charts are SVG made by the station (no library, no CDN). */
(function () {
  function $(id) { return document.getElementById(id); }
  const REFRESH_MS = 30000;
  let timer = null;

  function kw(v) { return v === null || v === undefined ? "–" : v.toFixed(2) + " kW"; }
  function kwh(v) { return v.toFixed(v < 100 ? 2 : 1) + " kWh"; }
  function fig(label, value, id) {
    return el("div", { cls: "figure" }, [el("span", { cls: "label", text: label }), el("span", { cls: "value", id: id, text: value })]);
  }
  async function svg(path) {
    const r = await fetch(path, { credentials: "same-origin" });
    return r.ok ? r.text() : "";
  }

  async function loadDashboard() {
    const box = $("dash-power");
    if (!box) return;
    const r = await api("GET", "/api/v1/dashboard");
    if (!r.ok) { box.replaceChildren(el("p", { cls: "error", text: r.data.message || "The figures could not be loaded." })); return; }
    const p = r.data.power, e = r.data.energy;
    const figs = [
      fig("Site power now", kw(p.site_kw), "dash-site-kw"),
      fig("Chargers now", kw(p.chargers_kw), "dash-chargers-kw"),
    ];
    if (p.pv_kw !== null) figs.push(fig("Solar now", kw(p.pv_kw), "dash-pv-kw"));
    figs.push(
      fig("Energy today", kwh(e.today_kwh) + " · " + e.today_sessions + (e.today_sessions === 1 ? " session" : " sessions"), "dash-today"),
      fig("Energy this month", kwh(e.month_kwh) + " · " + e.month_sessions + (e.month_sessions === 1 ? " session" : " sessions"), "dash-month"),
    );
    const phases = el("div", { cls: "phases" }, p.phases.map((ph) => el("span", { cls: "phase", text: ph.phase + ": " + kw(ph.power_kw) + (ph.current_a === null ? "" : " · " + ph.current_a.toFixed(1) + " A") })));
    box.replaceChildren(el("div", { cls: "figures" }, figs), phases);
    if (p.note) box.append(el("p", { cls: "muted", text: p.note }));
    $("dash-chart").innerHTML = await svg("/api/v1/dashboard/power.svg?hours=24"); /* the station's own SVG, no scripts */
  }

  async function loadYears() {
    const box = $("chart-years");
    if (box) box.innerHTML = await svg("/api/v1/stats/yearly.svg?years=5");
  }

  const STATE = { passed: "Passed", failed: "Failed", todo: "To do", skipped: "Not used" };
  async function loadInstaller() {
    const box = $("inst-steps");
    if (!box) return;
    const r = await api("GET", "/api/v1/installer/checklist");
    if (!r.ok) { box.replaceChildren(el("p", { cls: "error", text: r.data.message || "The checklist could not be loaded." })); return; }
    const c = r.data;
    box.replaceChildren(...c.steps.map((s, i) => el("li", { cls: "step st-" + s.state, "data-step": s.key, "data-state": s.state }, [
      el("span", { cls: "n", text: String(i + 1) }),
      el("div", {}, [el("strong", { text: s.title + " · " + STATE[s.state] }), el("p", { text: s.result })]),
    ])));
    $("inst-ready").textContent = c.ready ? "Every step passed: the station is ready for use." : "Some steps are still open.";
  }

  function pdfLink() {
    const csv = $("csv"), pdf = $("pdf");
    if (csv && pdf) pdf.setAttribute("href", csv.getAttribute("href").replace("/sessions.csv", "/sessions.pdf"));
  }

  function route() {
    clearInterval(timer);
    const name = (location.hash || "#dashboard").slice(1);
    if (name === "dashboard" || !$("v-" + name)) {
      loadDashboard();
      timer = setInterval(loadDashboard, REFRESH_MS);
    } else if (name === "stats") loadYears();
    else if (name === "installer") loadInstaller();
    else if (name === "sessions") setTimeout(pdfLink, 0);
  }

  window.addEventListener("hashchange", route);
  const csv = $("csv");
  if (csv) new MutationObserver(pdfLink).observe(csv, { attributes: true, attributeFilter: ["href"] });
  if ($("inst-refresh")) $("inst-refresh").addEventListener("click", loadInstaller);
  api("GET", "/api/v1/auth/status").then((r) => {
    const nav = $("nav-installer");
    if (nav && r.ok && r.data.user) nav.hidden = !["owner", "installer"].includes(r.data.user.role);
  });
  route();
})();
