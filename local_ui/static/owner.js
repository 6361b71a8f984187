"use strict";
/* Owner / installer / viewer UI: one page, one view per #hash, live bays over the WebSocket. */
(function () {
  const $ = (id) => document.getElementById(id);
  const U = { user: null, station: null, bays: new Map(), load: null, page: 0, limit: 25 };
  const OPERATE = ["owner", "installer"];

  function can(roles) { return U.user && roles.includes(U.user.role); }
  function t(ts) { return ts ? new Date(ts * 1000).toLocaleString() : "–"; }
  function dur(s) { if (s === null || s === undefined) return "–"; const m = Math.round(s / 60); return m >= 60 ? Math.floor(m / 60) + " h " + (m % 60) + " min" : m + " min"; }
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
    if (!r.ok) flash(r.data.message || "Failed (" + r.status + ")", true);
    else if (okText) flash(okText);
    return r;
  }
  function btn(text, onclick, cls) { return el("button", { text: text, cls: cls || "", onclick: onclick }); }
  function cell(text) { return el("td", { text: text === null || text === undefined ? "–" : String(text) }); }

  /* ---------------------------------------------------------------- dashboard */
  const STATUS = { Available: "ok", Charging: "charging", Preparing: "wait", SuspendedEV: "wait", SuspendedEVSE: "paused", Finishing: "wait", Reserved: "reserved", Unavailable: "off", Faulted: "error" };

  function renderStation() {
    const st = U.station;
    if (!st) return;
    $("st-name").textContent = st.name;
    const box = $("st-status");
    box.replaceChildren();
    box.append(el("span", { cls: "pill " + (st.accepting_sessions ? "ok" : "error"), text: st.accepting_sessions ? "Accepting sessions" : "Safe mode" }));
    if (st.cloud_online !== null && st.cloud_online !== undefined) {
      box.append(el("span", { cls: "pill " + (st.cloud_online ? "ok" : "wait"), text: st.cloud_online ? "Cloud connected" : "Cloud offline (charging still works)" }));
    }
    for (const cause in st.blocked || {}) {
      box.append(el("span", { cls: "pill error", text: st.blocked[cause] }));
      if (cause === "emergency_stop" && can(["owner"])) {
        box.append(btn("Clear emergency stop", () => call("POST", "/api/v1/station/blockers/emergency_stop/clear", undefined, "Cleared.")));
      }
    }
    const tf = st.tariff;
    if (tf) box.append(el("span", { cls: "muted", id: "tariff-now", text: "Tariff " + tf.per_kwh.toFixed(2) + " " + tf.currency + "/kWh" }));
  }

  function renderLoad() {
    const load = U.load;
    $("load").hidden = !load;
    if (!load) return;
    const bars = $("load-bars");
    bars.replaceChildren();
    for (const p of load.phases) {
      const track = el("div", { cls: "track lvl-" + p.level });
      const other = el("div", { cls: "seg other" });
      const ev = el("div", { cls: "seg ev" });
      other.style.width = Math.min(100, (100 * p.other_a) / p.limit_a) + "%";
      ev.style.width = Math.min(100, (100 * p.chargers_a) / p.limit_a) + "%";
      track.append(other, ev);
      bars.append(el("div", { cls: "loadrow" }, [
        el("span", { cls: "ph", text: p.phase }), track,
        el("span", { cls: "num", text: p.building_a + " / " + p.limit_a + " A (chargers " + p.chargers_a + " A)" }),
      ]));
    }
    if (load.freshness && load.freshness !== "fresh") {
      bars.append(el("p", { cls: "error", text: "Grid meter " + load.freshness + ": chargers run on the safe fallback." }));
    }
    for (const c of load.conflicts || []) bars.append(el("p", { cls: "error", text: "Rule conflict: " + c }));
  }

  function renderBays() {
    const box = $("dash-bays");
    box.replaceChildren();
    for (const b of U.bays.values()) {
      const s = b.session;
      const card = el("div", { cls: "card s-" + (STATUS[b.status] || "wait"), "data-bay": b.id }, [
        el("h3", { text: b.id + " · " + (b.kind === "locker" ? "locker" : "EV") }),
        el("p", { cls: "status", text: b.status + (b.fault ? " (" + b.fault + ")" : "") }),
        el("p", { cls: "power", text: (b.power_w / 1000).toFixed(1) + " kW · " + Math.max.apply(null, b.current_a).toFixed(1) + " A · setpoint " + b.setpoint_a.toFixed(0) + " A" }),
      ]);
      if (s) {
        card.append(el("p", { cls: "sess", text: "Session " + s.id + " · " + s.mode + " · " + (s.energy_wh / 1000).toFixed(2) + " kWh · " + dur(s.elapsed_s) + " · " + s.cost.toFixed(2) + " " + s.currency }));
      }
      if (b.hold) card.append(el("p", { text: "Held until " + t(b.hold.expires_at) }));
      if (can(OPERATE)) {
        const row = el("div", { cls: "row" });
        if (s) row.append(btn("Stop session", () => call("POST", "/api/v1/sessions/" + encodeURIComponent(s.id) + "/stop", undefined, "Session stopped."), "danger"));
        row.append(btn(b.available ? "Make unavailable" : "Make available", () => call("POST", "/api/v1/bays/" + b.id + "/availability", { available: !b.available }, "Done.")));
        if (b.fault) row.append(btn("Clear fault", () => call("POST", "/api/v1/bays/" + b.id + "/clear-fault", undefined, "Fault cleared.")));
        card.append(row);
      }
      box.append(card);
    }
    window.__ownerApplied = performance.timeOrigin + performance.now();
  }

  function onLive(msg) {
    if (msg.type === "snapshot") {
      U.station = msg.station;
      U.load = msg.station.load;
      U.bays = new Map(msg.bays.map((b) => [b.id, b]));
      fillBaySelects();
    } else if (msg.type === "bay") U.bays.set(msg.bay.id, msg.bay);
    else if (msg.type === "station") { U.station = msg.station; U.load = msg.station.load; }
    else if (msg.type === "load") U.load = msg.load;
    else if (msg.type === "settings" && msg.section === "tariff" && U.station) U.station.tariff = msg.values;
    else return;
    renderStation();
    renderLoad();
    renderBays();
  }

  function fillBaySelects() {
    for (const sel of document.querySelectorAll('select[name="bay_id"]')) {
      const keep = sel.value;
      const all = sel.closest("#s-filter") ? [el("option", { value: "", text: "all" })] : [];
      sel.replaceChildren(...all, ...[...U.bays.keys()].map((id) => el("option", { value: id, text: id })));
      sel.value = keep;
    }
  }

  /* ---------------------------------------------------------------- sessions */
  function filterQuery() {
    const f = new FormData($("s-filter"));
    const q = new URLSearchParams();
    for (const [k, v] of f.entries()) {
      if (!v) continue;
      if (k === "until") {
        const d = new Date(v + "T00:00:00");
        d.setDate(d.getDate() + 1); /* the "To" day is included */
        q.set(k, d.toISOString());
      } else if (k === "since") q.set(k, new Date(v + "T00:00:00").toISOString());
      else q.set(k, v);
    }
    return q;
  }
  async function loadSessions() {
    const q = filterQuery();
    $("csv").href = "/api/v1/sessions.csv?" + q.toString();
    q.set("limit", U.limit);
    q.set("offset", U.page * U.limit);
    const r = await call("GET", "/api/v1/sessions?" + q.toString());
    if (!r.ok) return;
    const rows = $("s-rows");
    rows.replaceChildren();
    for (const s of r.data.items) {
      const tr = el("tr", { cls: "click", "data-session": s.id, onclick: () => sessionDetail(s.id) }, [
        cell(t(s.started_at)), cell(s.bay_id), cell(dur(s.duration_s)), cell((s.energy_wh / 1000).toFixed(2)),
        cell(s.mode), cell(s.outcome || "running"), cell(s.cost === null ? "–" : s.cost.toFixed(2) + " " + (s.currency || "")), cell(s.state),
      ]);
      rows.append(tr);
    }
    const pages = Math.max(1, Math.ceil(r.data.total / U.limit));
    $("s-page").textContent = "Page " + (U.page + 1) + " of " + pages + " · " + r.data.total + " sessions";
    $("s-prev").disabled = U.page === 0;
    $("s-next").disabled = U.page + 1 >= pages;
  }
  async function sessionDetail(id) {
    const r = await call("GET", "/api/v1/sessions/" + encodeURIComponent(id));
    if (!r.ok) return;
    const s = r.data;
    const box = $("s-detail");
    box.replaceChildren(
      el("h3", { text: "Session " + s.id }),
      el("p", { text: "Bay " + s.bay_id + " · token " + s.token + " (" + s.auth_source + ") · " + s.mode }),
      el("p", { text: t(s.started_at) + " → " + t(s.stopped_at) + " · " + dur(s.duration_s) }),
      el("p", { text: (s.energy_wh / 1000).toFixed(3) + " kWh · peak " + (s.peak_power_w / 1000).toFixed(1) + " kW · avg " + ((s.avg_power_w || 0) / 1000).toFixed(1) + " kW" }),
      el("p", { text: "Stop: " + (s.stop_reason || "running") + " · cost " + (s.cost === null ? "–" : s.cost + " " + s.currency) + " · OCPP tx " + (s.ocpp_tx_id || "pending") + " · sync " + s.sync_state }),
    );
    const list = el("ol", { cls: "events" });
    for (const e of s.events) list.append(el("li", { text: t(e.at) + " " + e.kind + " " + (e.data && e.data !== "{}" ? e.data : "") }));
    box.append(list);
    box.hidden = false;
  }

  /* ---------------------------------------------------------------- statistics */
  async function loadStats() {
    const months = $("st-months").value;
    const [svg, data] = await Promise.all([
      fetch("/api/v1/stats/monthly.svg?months=" + months, { credentials: "same-origin" }).then((r) => r.text()),
      call("GET", "/api/v1/stats/monthly?months=" + months),
    ]);
    $("chart").innerHTML = svg; /* inline SVG made by the station, no scripts */
    if (!data.ok) return;
    const tt = data.data.totals;
    $("totals").replaceChildren(
      el("span", { cls: "fig", text: tt.energy_kwh.toFixed(tt.energy_kwh < 10 ? 2 : 1) + " kWh" }),
      el("span", { cls: "fig", text: tt.sessions + " sessions" }),
      el("span", { cls: "fig", text: tt.avg_kwh_per_session.toFixed(2) + " kWh/session" }),
      el("span", { cls: "fig", text: tt.cost === null ? "cost –" : tt.cost.toFixed(2) + " " + tt.currency }),
    );
    $("tariff-cta").hidden = !data.data.tariff_missing;
  }

  /* ---------------------------------------------------------------- holds */
  async function loadHolds() {
    const r = await call("GET", "/api/v1/holds");
    if (!r.ok) return;
    $("h-active").replaceChildren(...r.data.active.map((h) => el("tr", {}, [
      cell(h.bay_id), cell(h.token), cell(t(h.expires_at)),
      el("td", {}, can(OPERATE) ? [btn("Cancel", async () => { await call("DELETE", "/api/v1/holds/" + h.id, undefined, "Hold cancelled."); loadHolds(); })] : []),
    ])));
    $("h-recent").replaceChildren(...r.data.recent.map((h) => el("tr", {}, [cell(h.bay_id), cell(t(h.created_at)), cell(t(h.expires_at)), cell(h.state)])));
  }

  /* ---------------------------------------------------------------- settings */
  async function loadSettings() {
    const r = await call("GET", "/api/v1/settings");
    if (!r.ok) return;
    const box = $("set-forms");
    box.replaceChildren();
    for (const name in r.data.sections) {
      const sec = r.data.sections[name];
      const editable = can(sec.roles);
      const form = el("form", { cls: "panel settings", "data-section": name, novalidate: "" }, [el("h3", { text: sec.title })]);
      const props = sec.schema.properties || {};
      for (const key in props) {
        const p = props[key];
        const type = p.type || (p.anyOf ? p.anyOf[0].type : "string");
        const input = el("input", { name: key });
        if (type === "boolean") { input.type = "checkbox"; input.checked = !!sec.values[key]; }
        else {
          input.type = type === "number" || type === "integer" ? "number" : "text";
          if (type === "number") input.step = "any";
          if (p.minimum !== undefined) input.min = p.minimum;
          if (p.maximum !== undefined) input.max = p.maximum;
          if (p.maxLength !== undefined) input.maxLength = p.maxLength;
          input.value = sec.values[key] === null || sec.values[key] === undefined ? "" : sec.values[key];
        }
        input.disabled = !editable;
        input.dataset.type = type;
        form.append(el("label", {}, [(p.title || key) + (p.description ? " (" + p.description + ")" : ""), input]));
      }
      if (editable) form.append(el("button", { type: "submit", cls: "primary", text: "Save " + sec.title.toLowerCase() }));
      form.addEventListener("submit", async (e) => {
        e.preventDefault();
        const body = {};
        for (const input of form.querySelectorAll("input")) {
          const ty = input.dataset.type;
          if (ty === "boolean") body[input.name] = input.checked;
          else if (ty === "number" || ty === "integer") body[input.name] = input.value === "" ? null : Number(input.value);
          else body[input.name] = input.value;
        }
        const res = await call("PATCH", "/api/v1/settings/" + name, body, sec.title + " saved.");
        if (res.ok) loadSettings();
      });
      box.append(form);
    }
  }

  /* ---------------------------------------------------------------- audit, diagnostics, users */
  async function loadAudit() {
    const r = await call("GET", "/api/v1/audit?limit=300");
    if (!r.ok) return;
    $("a-rows").replaceChildren(...r.data.map((a) => el("tr", {}, [cell(t(a.at)), cell(a.actor), cell(a.kind), cell(JSON.stringify(a.detail))])));
  }

  async function installerTest(bay, action) {
    const out = $("d-test");
    out.hidden = false;
    out.textContent = "Running " + action + " on " + bay + "…";
    const r = await call("POST", "/api/v1/diagnostics/bays/" + bay + "/test", { action: action });
    out.textContent = JSON.stringify(r.data, null, 2);
  }
  async function loadDiagnostics() {
    const r = await call("GET", "/api/v1/diagnostics");
    if (!r.ok) return;
    const d = r.data;
    $("d-summary").replaceChildren(
      el("span", { cls: "fig", text: "OCPP: " + (d.ocpp.connected === null ? "not configured" : d.ocpp.connected ? "connected" : "offline") }),
      el("span", { cls: "fig", text: "Outbox: " + d.ocpp.outbox_depth + " waiting" }),
      el("span", { cls: "fig", text: "Journal v" + d.journal.schema_version + (d.journal.writable ? " writable" : " NOT WRITABLE") + " · " + Math.round((d.journal.size_bytes || 0) / 1024) + " KiB" }),
    );
    const installer = can(["installer"]);
    $("d-nodes").replaceChildren(...d.nodes.map((n) => {
      const l = n.link || {};
      const tests = el("td", { "data-role": "installer" });
      if (installer) {
        const kind = (U.bays.get(n.bay_id) || {}).kind;
        const acts = kind === "locker" ? ["unlock", "lock", "relay_on", "relay_off", "ramp"] : ["relay_on", "relay_off", "ramp"];
        for (const a of acts) tests.append(btn(a.replace("_", " "), () => installerTest(n.bay_id, a)));
      }
      return el("tr", {}, [
        cell(n.bay_id), cell(n.node_id + " @" + n.bus), cell(n.online ? "yes" : "NO"),
        cell(n.heartbeat_age_s === null ? "never" : n.heartbeat_age_s.toFixed(1) + " s ago"), cell(n.firmware),
        cell((l.frames_rx || 0) + " / " + (l.frames_tx || 0)),
        cell([l.bad_frames, l.retries, l.timeouts, l.reconnects].map((x) => x || 0).join(" / ")), tests,
      ]);
    }));
    for (const th of document.querySelectorAll('[data-role="installer"]')) th.hidden = !installer;
    const m = $("d-meters");
    m.hidden = !d.meters;
    if (d.meters) m.replaceChildren(el("h3", { text: "Meters" }), el("pre", { text: JSON.stringify(d.meters, null, 2) }));
  }

  async function loadUsers() {
    const r = await call("GET", "/api/v1/users");
    if (!r.ok) return;
    $("u-rows").replaceChildren(...r.data.map((u) => el("tr", {}, [
      cell(u.username), cell(u.role),
      el("td", {}, u.username === U.user.username ? [] : [btn("Delete", async () => { await call("DELETE", "/api/v1/users/" + encodeURIComponent(u.username), undefined, "User deleted."); loadUsers(); }, "danger")]),
    ])));
  }

  /* ---------------------------------------------------------------- navigation */
  const LOADERS = { sessions: loadSessions, stats: loadStats, holds: loadHolds, settings: loadSettings, audit: loadAudit, diagnostics: loadDiagnostics, users: loadUsers };
  function route() {
    const name = (location.hash || "#dashboard").slice(1);
    const view = $("v-" + name) ? name : "dashboard";
    for (const v of document.querySelectorAll(".view")) v.hidden = v.id !== "v-" + view;
    for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.getAttribute("href") === "#" + view);
    if (LOADERS[view]) LOADERS[view]();
  }

  async function init() {
    const r = await api("GET", "/api/v1/auth/status");
    if (!r.ok || !r.data.user) return location.assign("/login");
    U.user = r.data.user;
    $("who").textContent = U.user.username + " (" + U.user.role + ")";
    for (const a of document.querySelectorAll('nav [data-role="owner"]')) a.hidden = U.user.role !== "owner";
    for (const f of ["h-form"]) $(f).hidden = !can(OPERATE);
    $("logout").addEventListener("click", async () => { await api("POST", "/api/v1/auth/logout"); location.assign("/login"); });
    $("s-filter").addEventListener("submit", (e) => { e.preventDefault(); U.page = 0; loadSessions(); });
    $("s-prev").addEventListener("click", () => { U.page = Math.max(0, U.page - 1); loadSessions(); });
    $("s-next").addEventListener("click", () => { U.page += 1; loadSessions(); });
    $("st-months").addEventListener("change", loadStats);
    $("h-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      const f = new FormData(e.target);
      const res = await call("POST", "/api/v1/holds", { bay_id: f.get("bay_id"), token: f.get("token"), duration_s: Number(f.get("minutes")) * 60 }, "Bay held.");
      if (res.ok) loadHolds();
    });
    $("u-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      const f = new FormData(e.target);
      const res = await call("POST", "/api/v1/users", { username: f.get("username"), password: f.get("password"), role: f.get("role") }, "User added.");
      if (res.ok) { e.target.reset(); loadUsers(); }
    });
    window.addEventListener("hashchange", route);
    connectLive("/api/v1/live", onLive, (up, code) => {
      $("live-state").textContent = up ? "live" : "reconnecting…";
      $("live-state").className = "pill " + (up ? "ok" : "wait");
      document.body.dataset.live = up ? "up" : "down";
      if (code === 4401) location.assign("/login");
    });
    route();
  }
  init();
})();
