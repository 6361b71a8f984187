"use strict";
/* The touchscreen: idle -> bay -> code (QR camera or keypad) -> mode -> instructions
   -> live session -> stop -> receipt; back to idle after inactivity. */
(function () {
  const $ = (id) => document.getElementById(id);
  const S = {
    station: null, bays: new Map(), kiosk: { idle_timeout_s: 60 }, offset: 0,
    bay: null, code: "", stopIntent: false, mode: "standard",
    session: null, /* {id, key, bay} of the session this screen started */
    screen: "idle", lastTouch: Date.now(), online: false,
  };
  const LABEL = {
    Available: ["Available", "ok"], Preparing: ["Waiting for vehicle", "wait"],
    Charging: ["Charging", "charging"], SuspendedEV: ["Waiting for vehicle", "wait"],
    SuspendedEVSE: ["Paused", "paused"], Finishing: ["Finishing", "wait"],
    Reserved: ["Reserved", "reserved"], Unavailable: ["Not available", "off"],
    Faulted: ["Out of order", "error"],
  };

  function label(b) {
    const l = LABEL[b.status] || [b.status, "wait"];
    if (b.kind === "locker" && l[0] === "Waiting for vehicle") return ["Waiting for device", l[1]];
    if (b.status === "Faulted") return ["Error", "error"];
    return l;
  }
  function now() { return Date.now() + S.offset; }
  function fmtTime(s) {
    s = Math.max(0, Math.floor(s));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    return (h ? h + ":" + String(m).padStart(2, "0") : m) + ":" + String(sec).padStart(2, "0");
  }
  function money(v, cur) { return v === null || v === undefined ? "–" : v.toFixed(2) + " " + cur; }

  function show(name) {
    for (const s of document.querySelectorAll(".screen")) s.hidden = s.id !== "s-" + name;
    S.screen = name;
    document.body.dataset.screen = name;
  }
  function goIdle() {
    S.bay = null; S.code = ""; S.stopIntent = false; S.session = null;
    $("boost").hidden = true;
    show("idle");
    renderIdle();
  }

  /* ---------------------------------------------------------------- idle */
  function renderIdle() {
    const st = S.station;
    if (!st) return;
    $("st-name").textContent = st.name;
    $("cloud").hidden = st.cloud_online !== false;
    $("welcome").textContent = S.kiosk.welcome_text || "Tap a bay to start charging";
    const grid = $("bays");
    grid.replaceChildren();
    for (const b of S.bays.values()) {
      const l = label(b);
      grid.append(el("button", { cls: "bay s-" + l[1], "data-bay": b.id, onclick: () => chooseBay(b.id) }, [
        el("span", { cls: "name", text: b.id }),
        el("span", { cls: "kind", text: b.kind === "locker" ? "Locker (e-bike, scooter)" : "EV charger" }),
        el("span", { cls: "state", text: l[0] }),
      ]));
    }
  }

  function safeMode() {
    return S.station && S.station.accepting_sessions === false;
  }

  function chooseBay(id) {
    const b = S.bays.get(id);
    if (!b) return;
    S.bay = id; S.code = ""; S.stopIntent = false;
    const mine = b.session && S.session && S.session.id === b.session.id;
    if (mine) return showSession();
    if (b.session) {
      return message("In use", "If this is your session, scan or type your code to stop it.", true, true);
    }
    if (safeMode()) {
      $("safe-msg").textContent = Object.values(S.station.blocked || {}).join(" ");
      return show("safe");
    }
    if (b.status === "Faulted") return message("Out of order", "This bay is out of order. Please use another bay.", false);
    if (b.status === "Unavailable") return message("Not available", "This bay is not available right now.", false);
    if (b.status === "Finishing") return message("Almost free", "The previous session is finishing. Please wait a moment.", false);
    if (b.status === "Reserved") {
      return message("Reserved", "This bay is reserved for someone else. If you reserved it, scan or type your code.", true);
    }
    showAuth();
  }

  function message(title, text, withCode, stopIntent) {
    $("msg-title").textContent = title;
    $("msg-text").textContent = text;
    $("msg-code").hidden = !withCode;
    S.stopIntent = !!stopIntent;
    show("msg");
  }

  /* ---------------------------------------------------------------- code */
  function showAuth() {
    for (const n of document.querySelectorAll(".bay-name")) n.textContent = S.bay;
    $("auth-hint").textContent = S.stopIntent
      ? "To stop, show your QR code to the camera or type your code."
      : "Show your QR code to the camera, or type your code.";
    $("bay-qr").src = "/api/v1/kiosk/bays/" + encodeURIComponent(S.bay) + "/qr.svg";
    // Tell the station which bay a code shown to the camera now is for.
    api("POST", "/api/v1/kiosk/bays/" + encodeURIComponent(S.bay) + "/focus", {});
    S.code = "";
    renderCode();
    show("auth");
  }
  function renderCode() {
    $("code").textContent = S.code.replace(/./g, "•") || " ";
  }
  function buildKeypad() {
    const pad = $("keypad");
    for (const k of ["1", "2", "3", "4", "5", "6", "7", "8", "9", "⌫", "0", "OK"]) {
      const b = el("button", { text: k, "data-key": k, "aria-label": k === "⌫" ? "Delete" : k });
      if (k === "OK") b.className = "ok";
      b.addEventListener("click", () => key(k));
      pad.append(b);
    }
  }
  function key(k) {
    if (k === "⌫") S.code = S.code.slice(0, -1);
    else if (k === "OK") {
      if (S.code.length < 1) return;
      const b = S.bays.get(S.bay);
      if (S.stopIntent || (b && b.session)) return submit("standard", false);
      renderModes();
      return show("mode");
    } else if (S.code.length < 20) S.code += k;
    renderCode();
  }

  /* ---------------------------------------------------------------- mode */
  function renderModes() {
    const st = S.station;
    document.querySelector('[data-mode="solar"]').hidden = !st.pv_available;
    const t = st.tariff;
    let p = "Price: " + t.per_kwh.toFixed(2) + " " + t.currency + " per kWh";
    if (t.per_minute) p += " + " + t.per_minute.toFixed(2) + " per minute";
    if (t.per_session) p += " + " + t.per_session.toFixed(2) + " per session";
    $("price").textContent = p;
  }

  async function submit(mode, confirmed) {
    S.mode = mode;
    show("wait");
    const bay = S.bay;
    const r = await api("POST", "/api/v1/kiosk/bays/" + encodeURIComponent(bay) + "/token",
      { token: S.code, mode: mode, boost_confirmed: confirmed });
    if (r.status === 409 && r.data.error === "confirm_boost") {
      $("boost-msg").textContent = r.data.message;
      $("boost").hidden = false;
      show("mode");
      return;
    }
    S.code = "";
    if (!r.ok) {
      $("err-title").textContent = r.data.error === "not_authorized" ? "Code not accepted" : "Cannot start";
      $("err-text").textContent = r.data.message || "Something went wrong.";
      $("err-retry").hidden = !["not_authorized", "too_many_attempts", "offline"].includes(r.data.error);
      return show("error");
    }
    if (r.data.code === "stopped") return showReceipt(r.data.session_id, r.data.key, bay);
    S.session = { id: r.data.session_id, key: r.data.key, bay: bay };
    showInstructions();
  }

  /* ---------------------------------------------------------------- instructions, session */
  function showInstructions() {
    const b = S.bays.get(S.bay);
    const steps = $("instr-steps");
    steps.replaceChildren();
    const list = b && b.kind === "locker"
      ? ["The door of locker " + S.bay + " is open.", "Place your device inside and plug it in.", "Close the door: charging starts by itself."]
      : ["Take the charging cable.", "Plug it into your vehicle.", "Charging starts when the vehicle is ready."];
    $("instr-title").textContent = b && b.kind === "locker" ? "Door open" : "Plug in your vehicle";
    for (const t of list) steps.append(el("li", { text: t }));
    show("instr");
    renderInstr();
  }
  function renderInstr() {
    const b = S.bays.get(S.bay);
    if (!b) return;
    const l = label(b);
    $("instr-chip").textContent = l[0];
    $("instr-chip").className = "chip " + l[1];
    if (b.status === "Charging") showSession();
  }

  function showSession() {
    for (const n of document.querySelectorAll(".bay-name")) n.textContent = S.bay;
    show("session");
    renderSession();
  }
  function renderSession() {
    const b = S.bays.get(S.bay);
    if (!b) return;
    const s = b.session;
    if (!s) {
      if (S.session && S.session.bay === b.id) return showReceipt(S.session.id, S.session.key, b.id);
      return goIdle();
    }
    if (!S.session || S.session.id !== s.id) S.session = { id: s.id, key: null, bay: b.id };
    const l = label(b);
    const chip = $("chip");
    chip.textContent = l[0];
    chip.className = "chip " + l[1];
    const kw = (b.power_w || 0) / 1000;
    const pct = Math.min(100, (100 * (b.power_w || 0)) / (b.max_power_w || 1));
    $("g-val").setAttribute("stroke-dasharray", pct.toFixed(1) + " 100");
    $("g-kw").textContent = kw.toFixed(1);
    $("f-a").textContent = Math.max.apply(null, b.current_a || [0]).toFixed(1) + " A";
    $("f-kwh").textContent = (s.energy_wh / 1000).toFixed(2) + " kWh";
    $("f-cost").textContent = money(s.cost, s.currency);
    const lim = $("limited");
    lim.hidden = !b.limited_by_site;
    if (b.limited_by_site) lim.textContent = "Limited by site: " + b.setpoint_a.toFixed(0) + " A of " + b.max_current_a.toFixed(0) + " A";
    tickSession();
  }
  function tickSession() {
    const b = S.bays.get(S.bay);
    if (!b || !b.session) return;
    const s = b.session;
    $("f-time").textContent = fmtTime(now() / 1000 - s.started_at);
    let eta = null;
    if (s.quota_s) eta = (s.started_at + s.quota_s) * 1000;
    if (s.quota_wh && b.power_w > 50) {
      const e = now() + (3600 * 1000 * Math.max(0, s.quota_wh - s.energy_wh)) / b.power_w;
      eta = eta ? Math.min(eta, e) : e;
    }
    $("f-eta-box").hidden = eta === null;
    if (eta !== null) $("f-eta").textContent = new Date(eta - S.offset).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  async function stop() {
    const sess = S.session;
    if (!sess || !sess.key) {
      S.stopIntent = true;
      return showAuth();
    }
    show("wait");
    const r = await api("POST", "/api/v1/kiosk/bays/" + encodeURIComponent(sess.bay) + "/stop",
      { session_id: sess.id, key: sess.key });
    if (!r.ok && r.data.error !== "not_running") {
      $("err-title").textContent = "Cannot stop";
      $("err-text").textContent = r.data.message || "Please try again.";
      $("err-retry").hidden = true;
      return show("error");
    }
    showReceipt(sess.id, sess.key, sess.bay);
  }

  /* ---------------------------------------------------------------- receipt */
  async function showReceipt(id, key, bay) {
    S.session = null;
    S.bay = bay;
    show("wait");
    const r = await api("GET", "/api/v1/kiosk/sessions/" + encodeURIComponent(id) + "/receipt?key=" + encodeURIComponent(key));
    if (!r.ok) return goIdle();
    const d = r.data;
    $("r-kwh").textContent = (d.energy_wh / 1000).toFixed(2) + " kWh";
    $("r-time").textContent = fmtTime(d.duration_s || 0);
    $("r-cost").textContent = money(d.cost, d.currency);
    $("r-qr").innerHTML = d.qr_svg; /* generated by the station (segno): paths only */
    const exit = $("r-exit");
    exit.hidden = d.kind !== "locker";
    if (d.kind === "locker") {
      exit.textContent = "The door is unlocked: take your device and close the door within " +
        Math.round(d.exit_grace_s / 60) + " min.";
    }
    show("receipt");
  }

  /* ---------------------------------------------------------------- live */
  function apply(msg) {
    if (msg.type === "snapshot") {
      S.station = msg.station;
      S.offset = msg.station.now * 1000 - Date.now();
      S.kiosk = msg.kiosk || S.kiosk;
      S.bays = new Map(msg.bays.map((b) => [b.id, b]));
    } else if (msg.type === "bay") {
      S.bays.set(msg.bay.id, msg.bay);
    } else if (msg.type === "station") {
      S.station = Object.assign({}, S.station, msg.station);
    } else if (msg.type === "settings") {
      if (msg.section === "kiosk" && msg.values) S.kiosk = msg.values;
      if (msg.section === "tariff" && msg.values && S.station) S.station.tariff = msg.values;
    } else if (msg.type === "scan") {
      // A code seen by the camera for the bay on screen: say what became of it.
      if (msg.bay_id && msg.bay_id === S.bay) {
        if (msg.ok) message(msg.code === "stopped" ? "Stopped" : "Code accepted", msg.message, false);
        else {
          $("err-title").textContent = "Code not accepted";
          $("err-text").textContent = msg.message || "This code cannot be used here.";
          $("err-retry").hidden = false;
          show("error");
        }
      }
      return;
    } else if (msg.type === "tick") {
      S.offset = msg.now * 1000 - Date.now();
      return;
    } else return;
    render();
    window.__kioskApplied = performance.timeOrigin + performance.now();
  }
  function render() {
    $("cloud").hidden = !S.station || S.station.cloud_online !== false;
    $("safe-banner").hidden = !safeMode();
    if (safeMode()) $("safe-banner").textContent = "Safe mode: " + Object.values(S.station.blocked || {}).join(" ");
    const b = S.bay ? S.bays.get(S.bay) : null;
    if (["auth", "msg", "mode"].includes(S.screen) && b && b.session && !S.stopIntent && b.status !== "Finishing") {
      return showSession(); /* started by the camera while this screen was open */
    }
    if (S.screen === "idle") renderIdle();
    else if (S.screen === "session") renderSession();
    else if (S.screen === "instr") renderInstr();
    else if (S.screen === "mode") renderModes();
  }

  function init() {
    buildKeypad();
    for (const b of document.querySelectorAll(".back")) b.addEventListener("click", goIdle);
    $("msg-code").addEventListener("click", showAuth);
    $("err-retry").addEventListener("click", showAuth);
    $("instr-next").addEventListener("click", showSession);
    $("stop").addEventListener("click", stop);
    $("r-done").addEventListener("click", goIdle);
    for (const m of document.querySelectorAll(".mode")) {
      m.addEventListener("click", () => submit(m.dataset.mode, false));
    }
    $("boost-ok").addEventListener("click", () => { $("boost").hidden = true; submit("boost", true); });
    $("boost-cancel").addEventListener("click", () => { $("boost").hidden = true; });
    for (const ev of ["pointerdown", "keydown"]) document.addEventListener(ev, () => { S.lastTouch = Date.now(); }, true);
    setInterval(() => {
      $("clock").textContent = new Date(now() - S.offset).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
      if (S.screen === "session") tickSession();
      const idleMs = (S.kiosk.idle_timeout_s || 60) * 1000;
      if (S.screen !== "idle" && S.screen !== "wait" && Date.now() - S.lastTouch > idleMs) goIdle();
    }, 1000);
    connectLive("/api/v1/kiosk/live", apply, (up) => {
      S.online = up;
      $("conn").hidden = up;
      document.body.dataset.live = up ? "up" : "down";
    });
    show("idle");
    const pre = new URLSearchParams(location.search).get("bay");
    if (pre) {
      const wait = setInterval(() => {
        if (S.bays.has(pre)) { clearInterval(wait); chooseBay(pre); }
      }, 100);
      setTimeout(() => clearInterval(wait), 5000);
    }
  }
  init();
})();
