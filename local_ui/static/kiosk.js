"use strict";
/* The touchscreen: idle -> bay -> code (QR camera or keypad) -> mode -> instructions
   -> live session -> stop -> receipt; back to idle after inactivity.

   The link to the station can drop at any time. Every figure then says how old
   it is (the station stamps when it was measured), the screen greys out and says
   so, the session timer stops, and a stop the driver pressed is kept and sent
   again until the station answers. The page never needs a reload: the live link
   reconnects by itself and the station sends its whole state again. */
(function () {
  const $ = (id) => document.getElementById(id);

  /* Every sentence this script shows, in one place (to become a catalogue). */
  const T = {
    status: {
      Available: "Available", Preparing: "Waiting for vehicle", Charging: "Charging",
      SuspendedEV: "Waiting for vehicle", SuspendedEVSE: "Paused", Finishing: "Finishing",
      Reserved: "Reserved", Unavailable: "Not available", Faulted: "Error",
    },
    waitingDevice: "Waiting for device",
    notResponding: "Not responding",
    welcome: "Tap a bay to start charging",
    kindLocker: "Locker (e-bike, scooter)",
    kindEvse: "EV charger",
    inUse: ["In use", "If this is your session, scan or type your code to stop it."],
    outOfOrder: ["Out of order", "This bay is out of order. Please use another bay."],
    silentBay: ["Not responding", "This bay is not responding right now. Please use another bay."],
    notAvailable: ["Not available", "This bay is not available right now."],
    finishing: ["Almost free", "The previous session is finishing. Please wait a moment."],
    reserved: ["Reserved", "This bay is reserved for someone else. If you reserved it, scan or type your code."],
    hintStart: "Show your QR code to the camera, or type your code.",
    hintStop: "To stop, show your QR code to the camera or type your code.",
    del: "Delete",
    price: (t) => "Price: " + t.per_kwh.toFixed(2) + " " + t.currency + " per kWh" +
      (t.per_minute ? " + " + t.per_minute.toFixed(2) + " per minute" : "") +
      (t.per_session ? " + " + t.per_session.toFixed(2) + " per session" : ""),
    codeRefused: "Code not accepted",
    cannotStart: "Cannot start",
    cannotStop: "Cannot stop",
    wrong: "Something went wrong.",
    codeUnusable: "This code cannot be used here.",
    noAnswer: ["The station does not answer", "Nothing was started. This screen goes back by itself when the station answers again."],
    steps: {
      locker: (bay) => ["The door of locker " + bay + " is open.", "Place your device inside and plug it in.", "Close the door: charging starts by itself."],
      evse: () => ["Take the charging cable.", "Plug it into your vehicle.", "Charging starts when the vehicle is ready."],
    },
    doorOpen: "Door open",
    plugIn: "Plug in your vehicle",
    limited: (sp, max) => "Limited by site: " + sp.toFixed(0) + " A of " + max.toFixed(0) + " A",
    nodeOffline: "The charger is not responding — charging is paused",
    reconnecting: "Reconnecting… figures may be out of date",
    live: "Live",
    measured: (s) => "Measured " + (s < 90 ? Math.round(s) + " s" : Math.round(s / 60) + " min") + " ago",
    neverMeasured: "Not measured yet",
    stop: "Stop charging",
    stopping: "Stopping…",
    stopQueued: "The station does not answer right now. Your stop is kept and sent as soon as it answers.",
    exitGrace: (min) => "The door is unlocked: take your device and close the door within " + min + " min.",
    stopped: "Stopped",
    accepted: "Code accepted",
    safeMode: "Safe mode: ",
    gridLimited: "Limited by grid operator: charging is slower for now.",
  };
  const FRESH_S = 10; /* older figures are marked with their age */
  const CALL_TIMEOUT_MS = 8000;
  const SILENT_MS = 12000; /* the station ticks every 5 s: a link this quiet is as good as lost */

  const S = {
    station: null, bays: new Map(), kiosk: { idle_timeout_s: 60 }, offset: 0,
    bay: null, code: "", stopIntent: false, mode: "standard",
    session: null, /* {id, key, bay} of the session this screen started */
    screen: "idle", lastTouch: Date.now(), online: false,
    lastNow: 0, /* the station's clock (ms) at its last word: the session timer stops there */
    seenAt: 0, /* local clock (ms) of the station's last word */
    stopping: null, /* {sess, tries}: a stop pressed and not answered yet */
    errOffline: false, /* the error on screen is "no answer": leave it when the station is back */
    wake: null,
  };

  function label(b) {
    if (b.node_online === false) return [T.notResponding, "error"];
    const cls = {
      Available: "ok", Preparing: "wait", Charging: "charging", SuspendedEV: "wait",
      SuspendedEVSE: "paused", Finishing: "wait", Reserved: "reserved", Unavailable: "off", Faulted: "error",
    }[b.status] || "wait";
    let text = T.status[b.status] || b.status;
    if (b.kind === "locker" && text === T.status.Preparing) text = T.waitingDevice;
    return [text, cls];
  }
  function now() { return Date.now() + S.offset; }
  function fmtTime(s) {
    s = Math.max(0, Math.floor(s));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    return (h ? h + ":" + String(m).padStart(2, "0") : m) + ":" + String(sec).padStart(2, "0");
  }
  function money(v, cur) { return v === null || v === undefined ? "–" : v.toFixed(2) + " " + cur; }
  function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }
  /* An API call that gives up after a while: a hung station is "no answer" too. */
  function call(method, path, body) {
    const late = sleep(CALL_TIMEOUT_MS).then(() => ({ status: 0, ok: false, data: { error: "offline" } }));
    return Promise.race([api(method, path, body), late]);
  }
  function bayPath(bay, tail) { return "/api/v1/kiosk/bays/" + encodeURIComponent(bay) + "/" + tail; }

  function show(name) {
    for (const s of document.querySelectorAll(".screen")) s.hidden = s.id !== "s-" + name;
    S.screen = name;
    document.body.dataset.screen = name;
    if (name !== "error") S.errOffline = false;
  }
  function goIdle() {
    S.bay = null; S.code = ""; S.stopIntent = false; S.session = null;
    $("boost").hidden = true;
    show("idle");
    renderIdle();
  }
  function showError(title, text, retry) {
    $("err-title").textContent = title;
    $("err-text").textContent = text;
    $("err-retry").hidden = !retry;
    show("error");
  }

  /* ---------------------------------------------------------------- idle */
  function renderIdle() {
    const st = S.station;
    if (!st) return;
    $("st-name").textContent = st.name;
    $("welcome").textContent = S.kiosk.welcome_text || T.welcome;
    const grid = $("bays");
    grid.replaceChildren();
    for (const b of S.bays.values()) {
      const l = label(b);
      grid.append(el("button", { cls: "bay s-" + l[1], "data-bay": b.id, onclick: () => chooseBay(b.id) }, [
        el("span", { cls: "name", text: b.id }),
        el("span", { cls: "kind", text: b.kind === "locker" ? T.kindLocker : T.kindEvse }),
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
    if (b.session) return message(T.inUse, true, true);
    if (safeMode()) {
      $("safe-msg").textContent = Object.values(S.station.blocked || {}).join(" ");
      return show("safe");
    }
    if (b.node_online === false) return message(T.silentBay, false);
    if (b.status === "Faulted") return message(T.outOfOrder, false);
    if (b.status === "Unavailable") return message(T.notAvailable, false);
    if (b.status === "Finishing") return message(T.finishing, false);
    if (b.status === "Reserved") return message(T.reserved, true);
    showAuth();
  }

  function message(tt, withCode, stopIntent) {
    $("msg-title").textContent = tt[0];
    $("msg-text").textContent = tt[1];
    $("msg-code").hidden = !withCode;
    S.stopIntent = !!stopIntent;
    show("msg");
  }

  /* ---------------------------------------------------------------- code */
  function showAuth() {
    for (const n of document.querySelectorAll(".bay-name")) n.textContent = S.bay;
    $("auth-hint").textContent = S.stopIntent ? T.hintStop : T.hintStart;
    $("bay-qr").src = bayPath(S.bay, "qr.svg");
    // Tell the station which bay a code shown to the camera now is for.
    call("POST", bayPath(S.bay, "focus"), {});
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
      const b = el("button", { text: k, "data-key": k, "aria-label": k === "⌫" ? T.del : k });
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
    $("price").textContent = T.price(st.tariff);
  }

  async function submit(mode, confirmed) {
    S.mode = mode;
    show("wait");
    const bay = S.bay;
    const r = await call("POST", bayPath(bay, "token"), { token: S.code, mode: mode, boost_confirmed: confirmed });
    if (r.status === 409 && r.data.error === "confirm_boost") {
      $("boost-msg").textContent = r.data.message;
      $("boost").hidden = false;
      show("mode");
      return;
    }
    S.code = "";
    if (r.status === 0) {
      /* Never sent again by itself: a code presented late could start a session nobody waits for. */
      showError(T.noAnswer[0], T.noAnswer[1], false);
      S.errOffline = true;
      return;
    }
    if (!r.ok) {
      const e = r.data.error;
      return showError(e === "not_authorized" ? T.codeRefused : T.cannotStart, r.data.message || T.wrong,
        ["not_authorized", "too_many_attempts"].includes(e));
    }
    if (r.data.code === "stopped") return showReceipt(r.data.session_id, r.data.key, bay);
    S.session = { id: r.data.session_id, key: r.data.key, bay: bay };
    showInstructions();
  }

  /* ---------------------------------------------------------------- instructions, session */
  function showInstructions() {
    const b = S.bays.get(S.bay);
    const locker = b && b.kind === "locker";
    const steps = $("instr-steps");
    steps.replaceChildren();
    for (const t of locker ? T.steps.locker(S.bay) : T.steps.evse()) steps.append(el("li", { text: t }));
    $("instr-title").textContent = locker ? T.doorOpen : T.plugIn;
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
    const known = b.power_w !== null && b.power_w !== undefined;
    const pct = known ? Math.min(100, (100 * b.power_w) / (b.max_power_w || 1)) : 0;
    $("g-val").setAttribute("stroke-dasharray", pct.toFixed(1) + " 100");
    $("g-val").style.visibility = pct > 0 ? "" : "hidden"; /* no round caps for nothing */
    $("g-kw").textContent = known ? (b.power_w / 1000).toFixed(1) : "–";
    $("f-a").textContent = b.current_a ? Math.max.apply(null, b.current_a).toFixed(1) + " A" : "–";
    $("f-kwh").textContent = (s.energy_wh / 1000).toFixed(2) + " kWh";
    $("f-cost").textContent = money(s.cost, s.currency);
    $("notice").hidden = b.node_online !== false;
    $("notice").textContent = T.nodeOffline;
    const lim = $("limited");
    lim.hidden = !b.limited_by_site || b.node_online === false;
    if (b.limited_by_site) lim.textContent = T.limited(b.setpoint_a, b.max_current_a);
    renderStop();
    tickSession();
  }
  /* Once a second: the timer (stopped while the station is out of reach) and the figures' age. */
  function tickSession() {
    const b = S.bays.get(S.bay);
    if (!b || !b.session) return;
    const s = b.session;
    const t = S.online ? now() : S.lastNow;
    $("f-time").textContent = fmtTime(t / 1000 - s.started_at);
    const age = b.measured_at === null || b.measured_at === undefined ? null : now() / 1000 - b.measured_at;
    const fresh = S.online && b.node_online !== false && age !== null && age <= FRESH_S;
    $("f-age").textContent = fresh ? T.live : age === null ? T.neverMeasured : T.measured(age);
    $("s-session").classList.toggle("stale", !fresh);
    let eta = null;
    if (s.quota_s) eta = (s.started_at + s.quota_s) * 1000;
    if (s.quota_wh && b.power_w > 50) {
      const e = now() + (3600 * 1000 * Math.max(0, s.quota_wh - s.energy_wh)) / b.power_w;
      eta = eta ? Math.min(eta, e) : e;
    }
    $("f-eta-box").hidden = eta === null || !fresh;
    if (eta !== null) $("f-eta").textContent = new Date(eta - S.offset).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function renderStop() {
    const p = S.stopping;
    const btn = $("stop");
    btn.disabled = !!p;
    btn.textContent = p ? T.stopping : T.stop;
    btn.dataset.tries = p ? String(p.tries) : "0";
    $("stop-note").hidden = !p || (p.tries < 1 && S.online);
    $("stop-note").textContent = T.stopQueued;
  }

  /* Sent again until the station answers (it may be restarting); then its answer is shown. */
  async function stop() {
    const sess = S.session;
    if (!sess || !sess.key) {
      S.stopIntent = true;
      return showAuth();
    }
    if (S.stopping) return;
    const p = { sess: sess, tries: 0 };
    S.stopping = p;
    renderStop();
    let r;
    for (let wait = 1000; ; wait = Math.min(5000, wait * 2)) {
      r = await call("POST", bayPath(sess.bay, "stop"), { session_id: sess.id, key: sess.key });
      if (r.status !== 0) break;
      p.tries += 1;
      if (S.screen === "session") renderStop();
      await new Promise((wake) => { S.wake = wake; setTimeout(wake, wait); });
    }
    S.stopping = null;
    if (r.ok || r.data.error === "not_running") return showReceipt(sess.id, sess.key, sess.bay);
    S.bay = sess.bay;
    S.stopIntent = r.data.error === "not_your_session";
    showError(T.cannotStop, r.data.message || T.wrong, S.stopIntent);
  }

  /* ---------------------------------------------------------------- receipt */
  async function showReceipt(id, key, bay) {
    if (S.stopping && S.stopping.sess.id === id) return; /* its stop call shows the outcome */
    S.session = null;
    S.bay = bay;
    show("wait");
    const r = await call("GET", "/api/v1/kiosk/sessions/" + encodeURIComponent(id) + "/receipt?key=" + encodeURIComponent(key));
    if (!r.ok) return goIdle();
    const d = r.data;
    $("r-kwh").textContent = (d.energy_wh / 1000).toFixed(2) + " kWh";
    $("r-time").textContent = fmtTime(d.duration_s || 0);
    $("r-cost").textContent = money(d.cost, d.currency);
    $("r-qr").innerHTML = d.qr_svg; /* generated by the station (segno): paths only */
    const exit = $("r-exit");
    exit.hidden = d.kind !== "locker";
    if (d.kind === "locker") exit.textContent = T.exitGrace(Math.round(d.exit_grace_s / 60));
    show("receipt");
  }

  /* ---------------------------------------------------------------- live */
  function apply(msg) {
    S.seenAt = Date.now();
    if (!S.online) onLink(true); /* it was only silent (a hung station): it speaks again */
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
        if (msg.ok) message([msg.code === "stopped" ? T.stopped : T.accepted, msg.message], false);
        else showError(T.codeRefused, msg.message || T.codeUnusable, true);
      }
      return;
    } else if (msg.type === "tick") {
      S.offset = msg.now * 1000 - Date.now();
      S.lastNow = now();
      for (const id in msg.measured_at || {}) {
        const b = S.bays.get(id);
        if (b) b.measured_at = msg.measured_at[id];
      }
      return;
    } else return;
    S.lastNow = now();
    render();
    window.__kioskApplied = performance.timeOrigin + performance.now();
  }
  function render() {
    const down = !S.online;
    $("conn").hidden = !down;
    $("cloud").hidden = down || !S.station || S.station.cloud_online !== false;
    $("safe-banner").hidden = !safeMode();
    if (safeMode()) $("safe-banner").textContent = T.safeMode + Object.values(S.station.blocked || {}).join(" ");
    const limited = !!(S.station && S.station.external && S.station.external.grid_operator);
    $("grid-banner").hidden = !limited;
    $("grid-banner").textContent = limited ? T.gridLimited : "";
    const b = S.bay ? S.bays.get(S.bay) : null;
    if (["auth", "msg", "mode"].includes(S.screen) && b && b.session && !S.stopIntent && b.status !== "Finishing") {
      return showSession(); /* started by the camera while this screen was open */
    }
    if (S.screen === "idle") renderIdle();
    else if (S.screen === "session") renderSession();
    else if (S.screen === "instr") renderInstr();
    else if (S.screen === "mode") renderModes();
  }
  function onLink(up, why) {
    /* Closed: it answered until now. Silent: the timer stops at its last word. */
    if (!up && S.online && why !== "silent") S.lastNow = now();
    if (up && !S.online) S.seenAt = Date.now();
    S.online = up;
    document.body.dataset.live = up ? "up" : "down";
    if (up) {
      if (S.wake) S.wake(); /* a stop waiting to be sent goes now */
      if (S.screen === "error" && S.errOffline) S.bay ? showAuth() : goIdle();
    }
    render();
    if (S.screen === "session") tickSession();
  }

  function init() {
    $("conn").textContent = T.reconnecting;
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
      if (S.online && Date.now() - S.seenAt > SILENT_MS) onLink(false, "silent");
      if (S.screen === "session") tickSession();
      const idleMs = (S.kiosk.idle_timeout_s || 60) * 1000;
      const busy = S.screen === "idle" || S.screen === "wait" || S.stopping;
      if (!busy && Date.now() - S.lastTouch > idleMs) goIdle();
    }, 1000);
    /* Reconnect at most 4 s apart: the screen should be live again soon after the station is. */
    connectLive("/api/v1/kiosk/live", apply, onLink, 4000);
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
