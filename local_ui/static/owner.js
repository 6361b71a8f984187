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
    renderStorage(st.storage || {});
    renderExternal(st.external);
    const tf = st.tariff;
    if (tf) box.append(el("span", { cls: "muted", id: "tariff-now", text: "Tariff " + tf.per_kwh.toFixed(2) + " " + tf.currency + "/kWh" }));
  }

  /* What limits the site from outside: the grid operator, an energy manager gone silent. */
  function renderExternal(ext) {
    const banner = $("external-banner");
    const text = ext && ext.messages ? ext.messages.join(" ") : "";
    banner.textContent = text;
    banner.hidden = !text;
  }

  /* Low space before the disk is full (the station's own sentence), or writes failing now. */
  function renderStorage(sto) {
    const banner = $("storage-banner");
    const text = sto.warning || (sto.writable === false ? "The station cannot save to its storage right now, so new sessions are refused. It will resume by itself once it can; if this lasts, call your installer." : "");
    banner.textContent = text;
    banner.hidden = !text;
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

  /* Cards and their buttons are updated in place: a button pressed while its bay reports
     (every second while charging) must still be the same element when it is released. */
  function renderBays() {
    const box = $("dash-bays");
    const ids = [...U.bays.keys()].join(" ");
    if (box.dataset.ids !== ids) {
      box.replaceChildren(...[...U.bays.keys()].map((id) => el("div", { "data-bay": id }, [
        el("h3"), el("p", { cls: "status" }), el("p", { cls: "power" }),
        el("p", { cls: "sess" }), el("p", { cls: "hold" }), el("div", { cls: "row" }),
      ])));
      box.dataset.ids = ids;
    }
    for (const b of U.bays.values()) {
      const card = box.querySelector('[data-bay="' + CSS.escape(b.id) + '"]');
      const s = b.session;
      const cls = "card s-" + (STATUS[b.status] || "wait");
      if (card.className !== cls) card.className = cls;
      const [h3, status, power, sess, hold, row] = card.children;
      setText(h3, b.id + " · " + (b.kind === "locker" ? "locker" : "EV"));
      setText(status, b.status + (b.fault ? " — " + (b.fault_message || b.fault) : ""));
      /* power and current are null (unknown) while the bay's node is offline */
      setText(power, (b.current_a ? (b.power_w / 1000).toFixed(1) + " kW · " + Math.max.apply(null, b.current_a).toFixed(1) + " A" : "Node not responding") + " · setpoint " + b.setpoint_a.toFixed(0) + " A");
      sess.hidden = !s;
      setText(sess, s ? "Session " + s.id + " · " + s.mode + " · " + (s.energy_wh / 1000).toFixed(2) + " kWh · " + dur(s.elapsed_s) + " · " + s.cost.toFixed(2) + " " + s.currency : "");
      hold.hidden = !b.hold;
      setText(hold, b.hold ? "Held until " + t(b.hold.expires_at) : "");
      const sig = can(OPERATE) ? [s ? s.id : "", b.available, !!b.fault].join("|") : "";
      if (row.dataset.sig !== sig) {
        row.dataset.sig = sig;
        const buttons = [];
        if (can(OPERATE)) {
          if (s) buttons.push(btn("Stop session", () => call("POST", "/api/v1/sessions/" + encodeURIComponent(s.id) + "/stop", undefined, "Session stopped."), "danger"));
          buttons.push(btn(b.available ? "Make unavailable" : "Make available", () => call("POST", "/api/v1/bays/" + b.id + "/availability", { available: !b.available }, "Done.")));
          if (b.fault) buttons.push(btn("Clear fault", () => call("POST", "/api/v1/bays/" + b.id + "/clear-fault", undefined, "Fault cleared.")));
        }
        row.replaceChildren(...buttons);
      }
      row.hidden = !row.children.length;
    }
    window.__ownerApplied = performance.timeOrigin + performance.now();
  }
  function setText(node, text) { if (node.textContent !== text) node.textContent = text; }

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
      /* Holds and bookings always name a bay: keep the choice, else the first bay. */
      sel.value = [...sel.options].some((o) => o.value === keep) ? keep : (sel.options[0] ? sel.options[0].value : "");
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
      el("h3", { text: "Session on bay " + s.bay_id + ", " + t(s.started_at) }),
      el("p", { text: "Card or code " + s.token + " (" + s.auth_source + ") · " + s.mode }),
      el("p", { text: t(s.started_at) + " → " + t(s.stopped_at) + " · " + dur(s.duration_s) }),
      el("p", { text: (s.energy_wh / 1000).toFixed(3) + " kWh · peak " + (s.peak_power_w / 1000).toFixed(1) + " kW · average " + ((s.avg_power_w || 0) / 1000).toFixed(1) + " kW" }),
      el("p", { text: "Ended: " + (s.stop_text || "still running") + " · cost " + (s.cost === null ? "–" : s.cost.toFixed(2) + " " + s.currency) + " · " + (s.sync_state === "synced" ? "reported to the central system" : "not yet reported to the central system") }),
    );
    const list = el("ol", { cls: "events" });
    for (const e of s.events) list.append(el("li", { text: t(e.at) + " · " + e.text }));
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
    loadCalendar();
    const b = await call("GET", "/api/v1/bookings");
    if (!b.ok) return;
    $("b-rows").replaceChildren(...b.data.bookings.map((k) => el("tr", {}, [
      cell(k.bay_id), cell(k.token), cell(t(k.start_at)), cell(String(Math.round(k.hold_s / 60))), cell(k.state),
      el("td", {}, can(OPERATE) && (k.state === "scheduled" || k.state === "placed") ? [btn("Cancel", async () => { await call("DELETE", "/api/v1/bookings/" + k.id, undefined, "Booking cancelled."); loadHolds(); })] : []),
    ])));
  }

  /* The bay's week of bookings, drawn by the station; a free hour fills the booking form. */
  function localInput(ts) {
    const d = new Date(ts * 1000);
    const p = (n) => String(n).padStart(2, "0");
    return d.getFullYear() + "-" + p(d.getMonth() + 1) + "-" + p(d.getDate()) + "T" + p(d.getHours()) + ":" + p(d.getMinutes());
  }
  async function loadCalendar() {
    const bay = $("b-form").querySelector('select[name="bay_id"]').value;
    if (!bay) return;
    const week = U.week || new Date();
    const day = week.getFullYear() + "-" + String(week.getMonth() + 1).padStart(2, "0") + "-" + String(week.getDate()).padStart(2, "0");
    const r = await fetch("/api/v1/bookings/calendar?bay_id=" + encodeURIComponent(bay) + "&week=" + day, { credentials: "same-origin" });
    if (!r.ok) return;
    $("b-calendar").innerHTML = await r.text(); /* HTML made by the station, no scripts */
  }
  function shiftWeek(days) {
    const w = new Date(U.week || new Date());
    w.setDate(w.getDate() + days);
    U.week = days === 0 ? null : w;
    loadCalendar();
  }
  function calendarClick(e) {
    const slot = e.target.closest("button.slot");
    if (slot) {
      const f = $("b-form");
      f.querySelector('input[name="start"]').value = localInput(Number(slot.dataset.start));
      const tok = f.querySelector('input[name="token"]');
      tok.focus();
      flash("Chosen: " + slot.getAttribute("aria-label").replace("Book ", "") + ". Enter the card or code and press Book bay.");
      return;
    }
    const taken = e.target.closest("td.booked");
    if (taken) flash(taken.dataset.booked + ". Choose a free hour, or cancel that booking in the list below.", true);
  }

  /* ---------------------------------------------------------------- settings */
  /* Per-phase currents are typed "32" (all phases) or "32, 32, 25" (L1, L2, L3). */
  function phaseText(v) {
    if (v === null || v === undefined) return "";
    if (!Array.isArray(v)) return String(v);
    return v.every((x) => x === v[0]) ? String(v[0]) : v.join(", ");
  }
  function phaseValue(text) {
    const parts = String(text).split(/[,;\s]+/).filter((x) => x !== "").map(Number);
    return parts.length === 1 ? parts[0] : parts;
  }
  function isPhase(p) { return !!(p && p.prefixItems && p.prefixItems.length === 3); }
  function textInput(name, value, attrs) { return el("input", Object.assign({ name: name, value: value === null || value === undefined ? "" : String(value) }, attrs || {})); }

  function removeBtn(tr) {
    const b = btn("Remove", () => { const f = tr.closest("form"); tr.remove(); f.dispatchEvent(new Event("input")); });
    b.type = "button";
    return b;
  }

  const DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
  function hhmm(t) { return t ? String(t).slice(0, 5) : ""; }

  function circuitRow(c) {
    const tr = el("tr", { cls: "circuit" }, [
      el("td", {}, [textInput("id", c.id, { size: 8, "aria-label": "circuit id" })]),
      el("td", {}, [textInput("parent", c.parent || "main", { size: 8, "aria-label": "parent" })]),
      el("td", {}, [textInput("limit_a", phaseText(c.limit_a), { size: 10, "aria-label": "limit (A)" })]),
      el("td", {}, [textInput("guaranteed_headroom_a", phaseText(c.guaranteed_headroom_a || 0), { size: 10, "aria-label": "headroom (A)" })]),
    ]);
    tr.append(el("td", {}, [removeBtn(tr)]));
    return tr;
  }
  function circuitsEditor(list) {
    const body = el("tbody", {}, list.map(circuitRow));
    const add = btn("Add circuit", (e) => { e.preventDefault(); body.append(circuitRow({ id: "", parent: "main", limit_a: 16, guaranteed_headroom_a: 0 })); });
    add.type = "button";
    return el("div", { cls: "editor", "data-editor": "circuits" }, [
      el("h4", { text: "Circuits" }),
      el("table", { cls: "grid-table" }, [el("thead", {}, [el("tr", {}, ["Id", "Parent", "Limit (A)", "Headroom (A)", ""].map((h) => el("th", { text: h })))]), body]),
      add,
    ]);
  }
  /* One name per bay; empty: the touchscreen calls it "Bay" and its id, in the driver's language. */
  function bayNamesEditor(p, names) {
    const rows = Object.keys(names).map((id) => el("label", {}, [id,
      el("input", { type: "text", name: "bay_name", "data-bay": id, value: names[id] || "", maxLength: 24, placeholder: "Bay " + id })]));
    return el("div", { cls: "editor", "data-editor": "bay_names" }, [
      el("h4", { text: p.title || "Bay names" }), p.description ? el("p", { cls: "muted", text: p.description }) : "", ...rows]);
  }
  function readBayNames(box) {
    const out = {};
    for (const i of box.querySelectorAll("input[data-bay]")) out[i.dataset.bay] = i.value.trim();
    return out;
  }
  function readCircuits(box) {
    return [...box.querySelectorAll("tr.circuit")].map((tr) => {
      const v = (n) => tr.querySelector('[name="' + n + '"]').value.trim();
      return { id: v("id"), parent: v("parent") || "main", limit_a: phaseValue(v("limit_a")), guaranteed_headroom_a: phaseValue(v("guaranteed_headroom_a") || "0") };
    });
  }

  function ruleRow(r) {
    const kind = el("select", { name: "kind", "aria-label": "kind" }, [
      el("option", { value: "bay_current_cap", text: "Bay current cap (A)" }),
      el("option", { value: "site_power_cap", text: "Site power cap (kW)" }),
    ]);
    kind.value = r.kind || "bay_current_cap";
    const days = el("span", { cls: "days" }, DAYS.map((d) => {
      const box = el("input", { type: "checkbox", name: "day", value: d, "aria-label": d });
      box.checked = !r.days || r.days.includes(d);
      return el("label", { cls: "day" }, [box, d]);
    }));
    const bays = Array.isArray(r.bays) ? r.bays.join(", ") : "all";
    const tr = el("tr", { cls: "rule" }, [
      el("td", {}, [textInput("id", r.id, { size: 8, "aria-label": "rule id" })]),
      el("td", {}, [kind]),
      el("td", {}, [textInput("limit", r.kind === "site_power_cap" ? r.kw : r.amps, { type: "number", step: "any", min: 0, cls: "num-s", "aria-label": "limit" })]),
      el("td", {}, [textInput("bays", bays, { size: 10, "aria-label": "bays" })]),
      el("td", {}, [textInput("from", hhmm(r.from), { type: "time", "aria-label": "from" }), " – ", textInput("to", hhmm(r.to), { type: "time", "aria-label": "to" })]),
      el("td", {}, [days]),
      el("td", {}, [textInput("priority", r.priority || 0, { type: "number", step: 1, cls: "num-s", "aria-label": "priority" })]),
    ]);
    tr.append(el("td", {}, [removeBtn(tr)]));
    return tr;
  }
  function rulesEditor(list) {
    const body = el("tbody", {}, list.map(ruleRow));
    const add = btn("Add rule", (e) => { e.preventDefault(); body.append(ruleRow({ id: "rule" + (body.children.length + 1), kind: "bay_current_cap", amps: 10, from: "18:00", to: "06:00" })); body.closest("form").dispatchEvent(new Event("input")); });
    add.type = "button";
    return el("div", { cls: "editor", "data-editor": "rules" }, [
      el("table", { cls: "grid-table" }, [el("thead", {}, [el("tr", {}, ["Id", "Kind", "Limit", "Bays", "From – to (empty: all day)", "Days", "Priority", ""].map((h) => el("th", { text: h })))]), body]),
      add,
    ]);
  }
  function readRules(box) {
    return [...box.querySelectorAll("tr.rule")].map((tr) => {
      const v = (n) => tr.querySelector('[name="' + n + '"]').value.trim();
      const r = { id: v("id"), kind: v("kind"), priority: Number(v("priority") || 0), days: [...tr.querySelectorAll('[name="day"]:checked')].map((x) => x.value) };
      if (v("from") || v("to")) { r.from = v("from") || null; r.to = v("to") || null; }
      if (r.kind === "site_power_cap") r.kw = Number(v("limit"));
      else {
        r.amps = Number(v("limit"));
        const b = v("bays");
        r.bays = !b || b === "all" ? "all" : b.split(/[,\s]+/).filter((x) => x);
      }
      return r;
    });
  }

  function renderWarnings(box, warnings, error) {
    box.replaceChildren();
    if (error) box.append(el("p", { cls: "error", text: error }));
    for (const w of warnings || []) box.append(el("p", { cls: "warn", "data-kind": w.kind, text: "⚠ " + w.message }));
    box.hidden = !error && !(warnings && warnings.length);
  }

  function readForm(form, props) {
    const body = {};
    for (const input of form.querySelectorAll("input[data-type]")) {
      const ty = input.dataset.type;
      if (ty === "boolean") body[input.name] = input.checked;
      else if (ty === "phase") body[input.name] = phaseValue(input.value);
      else if (ty === "number" || ty === "integer") body[input.name] = input.value === "" ? null : Number(input.value);
      else body[input.name] = input.value;
    }
    const c = form.querySelector('[data-editor="circuits"]');
    if (c && props.circuits) body.circuits = readCircuits(c);
    const r = form.querySelector('[data-editor="rules"]');
    if (r && props.rules) body.rules = readRules(r);
    const n = form.querySelector('[data-editor="bay_names"]');
    if (n && props.bay_names) body.bay_names = readBayNames(n);
    return body;
  }

  /* Refusals that have a translation come in the page's language (as the member pages). */
  function langQuery() {
    return "?lang=" + encodeURIComponent(new URLSearchParams(location.search).get("lang") || document.documentElement.lang || "");
  }
  async function loadSettings() {
    const r = await call("GET", "/api/v1/settings");
    if (!r.ok) return;
    const box = $("set-forms");
    box.replaceChildren();
    for (const name in r.data.sections) {
      const sec = r.data.sections[name];
      const editable = can(sec.roles) && sec.available !== false;
      const form = el("form", { cls: "panel settings", "data-section": name, novalidate: "" }, [el("h3", { text: sec.title })]);
      if (sec.available === false) {
        form.append(el("p", { cls: "muted note", text: sec.note }));
        box.append(form);
        continue;
      }
      if (sec.description) form.append(el("p", { cls: "muted", text: sec.description }));
      const props = sec.schema.properties || {};
      for (const key in props) {
        const p = props[key];
        if (key === "circuits") { form.append(circuitsEditor(sec.values.circuits || [])); continue; }
        if (key === "rules") { form.append(rulesEditor(sec.values.rules || [])); continue; }
        if (key === "bay_names") { form.append(bayNamesEditor(p, sec.values.bay_names || {})); continue; }
        const type = isPhase(p) ? "phase" : p.type || (p.anyOf ? p.anyOf[0].type : "string");
        const input = el("input", { name: key });
        if (type === "boolean") { input.type = "checkbox"; input.checked = !!sec.values[key]; }
        else if (type === "phase") { input.type = "text"; input.value = phaseText(sec.values[key]); input.placeholder = "A, or L1, L2, L3"; }
        else {
          input.type = type === "number" || type === "integer" ? "number" : "text";
          if (type === "number") input.step = "any";
          if (p.minimum !== undefined) input.min = p.minimum;
          if (p.maximum !== undefined) input.max = p.maximum;
          if (p.maxLength !== undefined) input.maxLength = p.maxLength;
          input.value = sec.values[key] === null || sec.values[key] === undefined ? "" : sec.values[key];
        }
        input.dataset.type = type;
        form.append(el("label", {}, [(p.title || key) + (p.description ? " (" + p.description + ")" : ""), input]));
      }
      const warn = el("div", { cls: "warnings", "data-warnings": name });
      form.append(warn);
      renderWarnings(warn, sec.warnings);
      for (const i of form.querySelectorAll("input, select")) i.disabled = !editable;
      for (const b of form.querySelectorAll(".editor button")) b.hidden = !editable;
      if (editable) form.append(el("button", { type: "submit", cls: "primary", text: "Save " + sec.title.toLowerCase() }));
      if (editable && sec.available !== undefined) {
        /* Load-manager sections: check every edit (validation and rule conflicts) before saving. */
        let timer = null;
        form.addEventListener("input", () => {
          clearTimeout(timer);
          timer = setTimeout(async () => {
            const res = await api("POST", "/api/v1/settings/" + name + "/check" + langQuery(), readForm(form, props));
            renderWarnings(warn, res.ok ? res.data.warnings : [], res.ok ? "" : res.data.message);
          }, 300);
        });
        form.addEventListener("change", () => form.dispatchEvent(new Event("input")));
      }
      form.addEventListener("submit", async (e) => {
        e.preventDefault();
        const res = await call("PATCH", "/api/v1/settings/" + name + langQuery(), readForm(form, props));
        if (!res.ok) { renderWarnings(warn, [], res.data.message); return; }
        const n = (res.data.warnings || []).length;
        flash(sec.title + " saved" + (n ? " with " + n + " warning" + (n > 1 ? "s" : "") + " (the lower limit applies)." : "."), n > 0);
        await loadSettings();
      });
      box.append(form);
    }
  }

  /* ---------------------------------------------------------------- audit, diagnostics, users */
  async function loadAudit() {
    const cat = $("a-filter").value;
    const r = await call("GET", "/api/v1/audit?limit=300" + (cat ? "&category=" + cat : ""));
    if (!r.ok) return;
    $("a-rows").replaceChildren(...r.data.map((a) => el("tr", { "data-category": a.category }, [cell(t(a.at)), cell(a.who), cell(a.text)])));
    $("a-empty").hidden = r.data.length > 0;
  }

  function renderTest(run) {
    const out = $("d-test");
    out.hidden = false;
    const rows = (run.steps || []).map((st) => el("tr", { cls: st.ok ? "" : "error" }, [
      cell(st.step), cell(st.commanded_a === undefined ? "" : st.commanded_a + " A"),
      cell(st.reported_a === undefined || st.reported_a === null ? "" : st.reported_a + " A"),
      cell(st.measured_a === undefined || st.measured_a === null ? "" : st.measured_a.toFixed(1) + " A"),
      cell(st.telemetry && st.telemetry.locked !== null && st.telemetry.locked !== undefined ? (st.telemetry.locked ? "locked" : "unlocked") : ""),
      cell(st.ack_ms + " ms"), cell(st.ok ? "ok" : st.message || "The node did not confirm this step."),
    ]));
    const plan = run.plan_a && run.plan_a.length ? " · plan " + run.plan_a.join(" → ") + " A" : "";
    out.replaceChildren(
      el("h3", { text: "Test " + run.action + " on " + run.bay_id }),
      el("p", { cls: "test-state " + (run.state === "passed" ? "" : run.state === "running" ? "muted" : "error"), "data-state": run.state, text: run.state.toUpperCase() + (run.message ? ": " + run.message : "") + plan }),
      el("table", { cls: "grid-table" }, [el("thead", {}, [el("tr", {}, ["Step", "Commanded", "Node reports", "Measured", "Lock", "Confirmed in", "Result"].map((h) => el("th", { text: h })))]), el("tbody", {}, rows)]),
    );
  }
  async function installerTest(bay, action) {
    const out = $("d-test");
    out.hidden = false;
    out.replaceChildren(el("p", { cls: "muted", text: "Running " + action + " on " + bay + "…" }));
    const body = { action: action };
    const hold = Number($("d-hold").value);
    if (hold > 0 && action !== "lock" && action !== "unlock") body.hold_s = hold;
    const r = await call("POST", "/api/v1/diagnostics/bays/" + bay + "/test", body);
    if (!r.ok) { out.replaceChildren(el("p", { cls: "error", text: r.data.message })); return; }
    renderTest(r.data);
    let run = r.data;
    while (run.state === "running") {
      await new Promise((res) => setTimeout(res, 500));
      const g = await api("GET", "/api/v1/diagnostics/tests/" + run.id);
      if (!g.ok) return;
      run = g.data;
      renderTest(run);
    }
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
    for (const p of document.querySelectorAll('#v-diagnostics [data-role="owner"]')) p.hidden = !can(["owner"]);
    loadFirmware();
    const m = $("d-meters");
    m.hidden = !d.meters;
    if (d.meters) m.replaceChildren(el("h3", { text: "Meters" }), ...Object.keys(d.meters).map((name) => el("p", { cls: "meter", text: meterText(name, d.meters[name]) })));
  }

  /* The station's own version, the node firmware update and each node's progress. */
  const FW_STATE = { waiting: "waiting for the bay to be free", stopping: "switching the bay off", transfer: "sending", booting: "starting the new firmware", installed: "updated", failed: "failed" };
  const FW_STATUS = { Idle: "No node firmware update is running.", Downloading: "Downloading the node firmware.", Downloaded: "The node firmware was downloaded and checked.", Installing: "Installing the node firmware, one node at a time.", Installed: "The node firmware is installed.", InstallationFailed: "The node firmware could not be installed on every node.", DownloadFailed: "The node firmware could not be downloaded or was refused." };
  async function loadFirmware() {
    const r = await api("GET", "/api/v1/firmware");
    if (!r.ok) return;
    const f = r.data;
    const sw = f.software;
    $("fw-software").textContent = "Station software: edge-station " + sw.version + (sw.since ? ", running since " + t(sw.since) + "." : ".") + (sw.state !== "up_to_date" || sw.previous ? " " + sw.message : "");
    $("fw-software").dataset.state = sw.state;
    const u = f.update;
    let status = (FW_STATUS[u.status] || u.status) + (u.version && u.status !== "Idle" ? " Version " + u.version + "." : "");
    if (u.status === "Idle" && u.last) status += " The last update (" + u.last.version + ") " + (u.last.status === "Installed" ? "was installed" : "did not complete") + " on " + t(u.last.at) + ".";
    $("fw-status").textContent = status;
    $("fw-status").dataset.status = u.status;
    const operate = can(OPERATE);
    $("fw-table").hidden = !u.nodes.length;
    $("fw-nodes").replaceChildren(...u.nodes.map((n) => {
      const bar = el("progress", { max: "100", value: String(n.percent), "aria-label": "firmware sent to " + n.bay_id });
      const act = el("td", { "data-role": "operate" });
      act.hidden = !operate;
      if (operate && n.state === "waiting" && u.status === "Installing") {
        act.append(n.forced_by ? el("span", { cls: "muted", text: "forced" }) : btn("Update now (stops any session)", async () => {
          if (!confirm("Stop any session on " + n.bay_id + " and update its node now?")) return;
          const res = await call("POST", "/api/v1/firmware/bays/" + encodeURIComponent(n.bay_id) + "/force");
          if (res.ok) flash(res.data.message);
          loadFirmware();
        }, "danger"));
      }
      return el("tr", { "data-bay": n.bay_id, "data-state": n.state, cls: n.state === "failed" ? "error" : "" }, [
        cell(n.bay_id), cell(FW_STATE[n.state] || n.state), el("td", { cls: "fw-sent" }, [bar, el("span", { text: " " + Math.round(n.percent) + " %" })]),
        cell(n.version_before || "unknown"), cell(n.version_after || "–"), cell(n.message), act,
      ]);
    }));
    for (const th of document.querySelectorAll('#fw-table [data-role="operate"]')) th.hidden = !operate;
    clearTimeout(loadFirmware.t);
    if (u.status !== "Idle" && !$("v-diagnostics").hidden) loadFirmware.t = setTimeout(loadFirmware, 1000);
  }

  /* A meter in words: what it is, whether its values are fresh, what it measures now. */
  function meterText(name, m) {
    if (typeof m !== "object" || m === null) return name + ": " + String(m);
    const r = m.reading || {};
    const s = r.sample || {};
    const ph = (v, unit, k) => Array.isArray(v) && v.some((x) => x !== null) ? v.map((x) => x === null ? "–" : (x / (k || 1)).toFixed(1)).join(" / ") + " " + unit : "";
    const parts = [(m.role === "bay" ? "bay " + m.bay_id + " meter" : m.role + " meter") + " " + name, r.freshness === "fresh" ? "values fresh" : "values " + (r.freshness || "unknown")];
    for (const p of [ph(s.current_a, "A"), ph(s.voltage_v, "V"), ph(s.power_w, "kW", 1000)]) if (p) parts.push(p);
    if (s.power_total_w !== null && s.power_total_w !== undefined) parts.push((s.power_total_w / 1000).toFixed(2) + " kW in all");
    if (r.error) parts.push(String(r.error));
    return parts.join(" · ");
  }

  async function loadUsers() {
    const r = await call("GET", "/api/v1/users");
    if (!r.ok) return;
    $("u-rows").replaceChildren(...r.data.map((u) => el("tr", { "data-user": u.username }, [
      cell(u.username), cell(u.role), u.role === "member" ? memberCards(u.username) : cell(""),
      el("td", {}, u.username === U.user.username ? [] : [btn("Delete", async () => { await call("DELETE", "/api/v1/users/" + encodeURIComponent(u.username), undefined, "User deleted."); loadUsers(); }, "danger")]),
    ])));
  }
  /* A member's cards and codes: shown masked; typing new ones replaces the list. */
  function memberCards(username) {
    const path = "/api/v1/members/" + encodeURIComponent(username) + "/tokens";
    const shown = el("span", { cls: "muted", text: "…" });
    const input = el("input", { name: "tokens", placeholder: "new list: card numbers or codes, comma-separated", "aria-label": "cards and codes of " + username });
    const save = btn("Give cards", async () => {
      const tokens = input.value.split(/[,\s]+/).filter((x) => x);
      const res = await call("PUT", path, { tokens: tokens }, "Cards saved.");
      if (res.ok) { input.value = ""; shown.textContent = res.data.tokens.join(", ") || "none"; }
    });
    api("GET", path).then((res) => { if (res.ok) shown.textContent = res.data.tokens.join(", ") || "none"; });
    return el("td", {}, [shown, el("div", { cls: "row" }, [input, save])]);
  }

  /* On a phone, table rows stack as cards: each cell shows its column's name (data-label). */
  function labelRow(tr) {
    const table = tr.closest("table");
    const heads = table ? [...table.querySelectorAll("thead th")].map((th) => th.textContent) : [];
    [...tr.children].forEach((td, i) => { if (heads[i] && !td.dataset.label) td.dataset.label = heads[i]; });
  }
  function labelTables() {
    const seen = new MutationObserver((changes) => {
      for (const c of changes) for (const n of c.addedNodes) {
        if (n.nodeType !== 1) continue;
        if (n.tagName === "TR") labelRow(n);
        for (const tr of n.querySelectorAll ? n.querySelectorAll("tr") : []) labelRow(tr);
      }
    });
    seen.observe(document.querySelector("main"), { childList: true, subtree: true });
  }

  /* ---------------------------------------------------------------- navigation */
  const LOADERS = { sessions: loadSessions, stats: loadStats, holds: loadHolds, settings: loadSettings, audit: loadAudit, diagnostics: loadDiagnostics, users: loadUsers };
  function route() {
    const name = (location.hash || "#dashboard").slice(1);
    const view = $("v-" + name) ? name : "dashboard";
    $("flash").hidden = true; /* a message belongs to the page it was said on */
    clearTimeout(flash.t);
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
    for (const f of ["h-form", "b-form"]) $(f).hidden = !can(OPERATE);
    $("logout").addEventListener("click", async () => { await api("POST", "/api/v1/auth/logout"); location.assign("/login"); });
    $("s-filter").addEventListener("submit", (e) => { e.preventDefault(); U.page = 0; loadSessions(); });
    $("s-prev").addEventListener("click", () => { U.page = Math.max(0, U.page - 1); loadSessions(); });
    $("s-next").addEventListener("click", () => { U.page += 1; loadSessions(); });
    $("st-months").addEventListener("change", loadStats);
    $("a-filter").addEventListener("change", loadAudit);
    $("cal-prev").addEventListener("click", () => shiftWeek(-7));
    $("cal-next").addEventListener("click", () => shiftWeek(7));
    $("cal-now").addEventListener("click", () => shiftWeek(0));
    $("b-calendar").addEventListener("click", calendarClick);
    $("b-form").querySelector('select[name="bay_id"]').addEventListener("change", loadCalendar);
    labelTables();
    $("h-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      const f = new FormData(e.target);
      const res = await call("POST", "/api/v1/holds", { bay_id: f.get("bay_id"), token: f.get("token"), duration_s: Number(f.get("minutes")) * 60 }, "Bay held.");
      if (res.ok) loadHolds();
    });
    $("b-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      const f = new FormData(e.target);
      const start = new Date(String(f.get("start"))).getTime() / 1000;
      if (!f.get("start")) { flash("Choose when the booking starts: tap a free hour in the calendar, or fill in From.", true); return; }
      const res = await call("POST", "/api/v1/bookings", { bay_id: f.get("bay_id"), token: f.get("token"), start_at: start, hold_s: Number(f.get("minutes")) * 60 }, "Bay booked.");
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
