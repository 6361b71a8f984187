"use strict";
/* The touchscreen: idle -> bay -> code (QR camera or keypad) -> mode -> instructions
   -> live session -> stop -> receipt; back to idle after inactivity.

   Every sentence is an English msgid passed through t(): the station serves the
   driver's catalogue (local_ui/i18n.py, Babel); numbers, money and times are
   formatted per language (Intl here, Babel on the server). Sentences from the
   station's API are never shown as they come: the kiosk says what happened by
   the answer's code, in the driver's language.

   The link to the station can drop at any time. Every figure then says how old
   it is (the station stamps when it was measured), the screen greys out and says
   so, the session timer stops, and a stop the driver pressed is kept and sent
   again until the station answers. The page never needs a reload: the live link
   reconnects by itself and the station sends its whole state again. */
(function () {
  const $ = (id) => document.getElementById(id);

  /* ---------------------------------------------------------------- language */
  const I = { lang: "en", def: "en", messages: {}, languages: [], info: {}, names: {}, cache: {} };
  const N_ = (msgid) => msgid; /* marks a msgid that t() translates later */
  function t(msgid, p) {
    let s = I.messages[msgid] || msgid;
    if (p) s = s.replace(/\{(\w+)\}/g, (m, k) => (k in p ? String(p[k]) : m));
    return s;
  }
  const NF = {};
  function num(v, d) {
    const k = I.lang + d;
    NF[k] = NF[k] || new Intl.NumberFormat(I.lang, { minimumFractionDigits: d, maximumFractionDigits: d });
    return NF[k].format(v);
  }
  function money(v, cur) {
    if (v === null || v === undefined) return "–";
    const k = I.lang + cur;
    NF[k] = NF[k] || new Intl.NumberFormat(I.lang, { style: "currency", currency: cur });
    return NF[k].format(v);
  }
  function hhmm(ms) { return new Date(ms).toLocaleTimeString(I.lang, { hour: "2-digit", minute: "2-digit" }); }
  function translateStatic() {
    for (const n of document.querySelectorAll("[data-t]")) n.textContent = t(n.dataset.t);
    document.documentElement.lang = I.lang;
    $("lang").textContent = (I.languages.find((l) => l.code === I.lang) || { name: I.lang }).name;
    $("lang").setAttribute("aria-label", t("Language"));
    $("conn").textContent = t("Reconnecting… figures may be out of date");
    document.querySelector('[data-key="⌫"]').setAttribute("aria-label", t("Delete"));
    document.title = t("Charging station");
  }
  async function setLang(lang) {
    let d = I.cache[lang];
    if (!d) {
      const r = await call("GET", "/api/v1/kiosk/setup?lang=" + encodeURIComponent(lang));
      if (!r.ok) return;
      d = I.cache[r.data.lang] = r.data;
    }
    I.lang = d.lang; I.def = d.default_language; I.messages = d.messages;
    I.languages = d.languages; I.info = d.station; I.names = d.bay_names;
    translateStatic();
    render();
    rerender();
  }
  /* The owner renamed the station or bays: every language's words, live. */
  function rename(v) {
    const names = {};
    for (const id in v.bay_names || {}) if (v.bay_names[id]) names[id] = v.bay_names[id];
    for (const d of Object.values(I.cache).concat([I])) {
      if (d.station) d.station.name = v.station_name;
      if (d.info) d.info.name = v.station_name;
      if (d.bay_names) d.bay_names = names;
    }
    I.names = names;
    rerender();
  }
  function langMenu() {
    const list = $("lang-list");
    list.replaceChildren();
    for (const l of I.languages) {
      list.append(el("button", { cls: "big" + (l.code === I.lang ? " primary" : ""), "data-lang": l.code, lang: l.code, text: l.name,
        onclick: () => { $("langs").hidden = true; setLang(l.code); } }));
    }
    $("langs").hidden = false;
  }

  /* ---------------------------------------------------------------- wording */
  const STATUS = {
    Available: [N_("Available"), "ok"], Preparing: [N_("Waiting for vehicle"), "wait"], Charging: [N_("Charging"), "charging"],
    SuspendedEV: [N_("Vehicle not charging"), "wait"], SuspendedEVSE: [N_("Paused"), "paused"], Finishing: [N_("Finishing"), "wait"],
    Reserved: [N_("Reserved"), "reserved"], Unavailable: [N_("Not available"), "off"], Faulted: [N_("Out of order"), "error"],
  };
  /* One wording per state, the same on the card, the chip and the screen a tap shows. */
  function stateOf(b) {
    const st = S.station || {};
    const blocked = st.blocked || {};
    if (blocked.emergency_stop) return [N_("Emergency stop"), "error"];
    if (b.node_online === false) return [N_("Not responding"), "error"];
    if (b.status === "Faulted") return STATUS.Faulted;
    if (!b.session && st.accepting_sessions === false && b.status === "Available") return [N_("Not accepting new sessions"), "off"];
    if (b.kind === "locker" && (b.status === "Preparing" || b.status === "SuspendedEV")) return [N_("Waiting for device"), "wait"];
    const wait = b.session && b.starts_at ? Math.ceil(b.starts_at - now() / 1000) : 0;
    const ready = b.status === "SuspendedEVSE" || (b.status === "Preparing" && b.pilot && b.pilot !== "A");
    /* The relay must stay off a while after its last session (it protects the relay and the car). */
    if (ready && wait > 0) return [N_("Starting in {n} s"), "wait", { n: wait }];
    if (b.session && b.status === "Preparing" && b.pilot && b.pilot !== "A") return [N_("Vehicle connected — starting"), "wait"];
    return STATUS[b.status] || [b.status, "wait"];
  }
  const TAP = {
    "Not responding": N_("This bay is not responding right now. Please use another bay."),
    "Out of order": N_("This bay is out of order. Please use another bay."),
    "Not available": N_("This bay is not available right now. Please use another bay."),
    Finishing: N_("The previous session is finishing. Please wait a moment."),
    Reserved: N_("This bay is reserved for someone else. If you reserved it, scan or type your code."),
  };
  /* What a refusal means for the driver, by the station's code: [title, what happened and what to do]. */
  function refusal(code, stopping) {
    if (code && code.startsWith("blocked_")) return safeText(code.slice(8));
    switch (code) {
      case "not_authorized": return [N_("Code not accepted"), N_("This code is not accepted here. Check it and try again, or ask staff for help.")];
      case "too_many_attempts": return [N_("Too many wrong codes"), N_("Please wait a minute, then try again.")];
      case "bay_in_use": return stopping
        ? [N_("Cannot stop"), N_("This code did not start the session on this bay. Use the code you started it with.")]
        : [N_("Cannot start"), N_("Someone else is charging at this bay. Please use another bay.")];
      case "not_your_session": return [N_("Cannot stop"), N_("Scan or type the code you started with to stop this session.")];
      case "bay_faulted": return [N_("Out of order"), TAP["Out of order"]];
      case "node_offline": return [N_("Not responding"), TAP["Not responding"]];
      case "bay_unavailable": return [N_("Not available"), TAP["Not available"]];
      case "bay_finishing": return [N_("Finishing"), TAP.Finishing];
      case "bay_reserved": return [N_("Reserved"), TAP.Reserved];
      case "bay_starting": return [N_("Starting up"), N_("The charger is still starting up. Try again in a moment.")];
      case "solar_unavailable": return [N_("Solar not available"), N_("This site has no solar meter. Please choose another mode.")];
      case "not_running": return [N_("Already ended"), N_("This session has already ended.")];
      case "offline": return [N_("The station does not answer"), N_("Nothing was started. This screen goes back by itself when the station answers again.")];
    }
    return [stopping ? N_("Cannot stop") : N_("Cannot start"), N_("This code cannot be used here. Please ask staff for help.")];
  }
  function safeText(cause) {
    if (cause === "emergency_stop") return [N_("Emergency stop"), N_("Charging stopped; staff have been notified.")];
    if (cause === "journal") return [N_("Not accepting new sessions"), N_("The station cannot record new sessions right now. Please try again later.")];
    return [N_("Station in safe mode"), N_("No new session can start right now. Please try again later.")];
  }
  function blockCause() {
    const b = (S.station && S.station.blocked) || {};
    return b.emergency_stop ? "emergency_stop" : Object.keys(b)[0];
  }
  const MODES = { standard: N_("Standard"), eco: N_("Eco"), boost: N_("Boost"), solar: N_("Solar") };
  const REASONS = [N_("site capacity"), N_("owner rule"), N_("site power cap"), N_("grid meter"), N_("operator limit"), N_("overcurrent protection")];
  function bayTitle(id) { return I.names[id] || t("Bay {name}", { name: id }); }
  function energy(wh, kind) {
    return kind === "locker" ? num(Math.round(wh), 0) + " Wh" : num(wh / 1000, 2) + " kWh";
  }

  const FRESH_S = 10; /* older figures are marked with their age */
  const CALL_TIMEOUT_MS = 8000;
  const SILENT_MS = 12000; /* the station ticks every 5 s: a link this quiet is as good as lost */
  const ACCEPTED_MS = 2500; /* "Code accepted" stays this long before the next step */
  const CARD_W = 180, CARD_H = 120, GAP = 12;

  const S = {
    station: null, bays: new Map(), kiosk: { idle_timeout_s: 60 }, offset: 0,
    bay: null, code: "", stopIntent: false, mode: "standard", changing: false, receipt: null,
    session: null, /* {id, key, bay} of the session this screen started */
    screen: "idle", lastTouch: Date.now(), online: false,
    lastNow: 0, /* the station's clock (ms) at its last word: the session timer stops there */
    seenAt: 0, /* local clock (ms) of the station's last word */
    stopping: null, /* {sess, tries}: a stop pressed and not answered yet */
    errOffline: false, /* the error on screen is "no answer": leave it when the station is back */
    wake: null, holdUntil: 0, page: 0,
  };

  function now() { return Date.now() + S.offset; }
  function fmtTime(s) {
    s = Math.max(0, Math.floor(s));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    return (h ? h + ":" + String(m).padStart(2, "0") : m) + ":" + String(sec).padStart(2, "0");
  }
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
    S.receipt = null;
    S.bay = null; S.code = ""; S.stopIntent = false; S.session = null; S.changing = false;
    $("boost").hidden = true;
    show("idle");
    renderIdle();
  }
  function showError(tt, retry) {
    $("err-title").textContent = t(tt[0]);
    $("err-text").textContent = t(tt[1]);
    $("err-retry").hidden = !retry;
    show("error");
  }
  /* The screen on view again in the new language. */
  function rerender() {
    if (S.screen === "receipt" && S.receipt) showReceipt(S.receipt.id, S.receipt.key, S.receipt.bay);
    if (S.screen === "idle") renderIdle();
    else if (S.screen === "auth") $("auth-hint").textContent = t(S.stopIntent ? N_("To stop, show your QR code to the camera or type your code.") : N_("Show your QR code to the camera, or type your code."));
    for (const n of document.querySelectorAll(".bay-name")) n.textContent = S.bay ? bayTitle(S.bay) : "";
    for (const n of document.querySelectorAll("[data-msg]")) n.textContent = t(n.dataset.msg);
  }
  function say(node, msgid) { node.dataset.msg = msgid; node.textContent = t(msgid); }

  /* ---------------------------------------------------------------- idle */
  function tariffText(tf) {
    if (!tf) return "";
    let s = t("{price} per kWh", { price: money(tf.per_kwh, tf.currency) });
    if (tf.per_minute) s += " + " + t("{price} per minute", { price: money(tf.per_minute, tf.currency) });
    if (tf.per_session) s += " + " + t("{price} per session", { price: money(tf.per_session, tf.currency) });
    return s;
  }
  function renderIdle() {
    const st = S.station;
    if (!st) return;
    $("st-name").textContent = I.info.name || st.name;
    const custom = S.kiosk.welcome_text && S.kiosk.welcome_text !== "Tap a bay to start charging";
    $("welcome").textContent = custom ? S.kiosk.welcome_text : t("Tap a bay, then show your QR code or type your code");
    $("idle-price").textContent = t("Price: {tariff}", { tariff: tariffText(st.tariff) });
    $("idle-hours").textContent = I.info.opening_hours ? t("Open: {hours}", { hours: I.info.opening_hours }) : "";
    $("idle-contact").textContent = I.info.contact ? t("Help: {contact}", { contact: I.info.contact }) : "";
    const all = Array.from(S.bays.values());
    const grid = $("bays");
    const per = perPage(all.length);
    const pages = Math.max(1, Math.ceil(all.length / per));
    S.page = Math.min(S.page, pages - 1);
    $("pager").hidden = pages < 2;
    $("pg-text").textContent = t("Page {n} of {m}", { n: S.page + 1, m: pages });
    $("pg-prev").disabled = S.page === 0;
    $("pg-next").disabled = S.page >= pages - 1;
    /* Cards are updated in place, never replaced: a finger (or a click) on a card while its
       bay reports must land on the same element it started on. Taps go to the grid. */
    const shown = all.slice(S.page * per, S.page * per + per);
    const ids = shown.map((b) => b.id).join(" ");
    if (grid.dataset.ids !== ids) {
      grid.replaceChildren(...shown.map((b) => el("button", { cls: "bay", "data-bay": b.id }, [
        el("span", { cls: "name" }), el("span", { cls: "kind" }), el("span", { cls: "state" }),
      ])));
      grid.dataset.ids = ids;
    }
    shown.forEach((b, i) => {
      const card = grid.children[i];
      const l = stateOf(b);
      const kind = b.kind === "locker" ? N_("Locker (e-bike, scooter)") : N_("EV charger");
      setText(card.children[0], I.names[b.id] || b.id);
      setText(card.children[1], t(kind));
      setText(card.children[2], t(l[0], l[2]));
      const cls = "bay s-" + l[1];
      if (card.className !== cls) card.className = cls;
    });
  }
  function setText(node, text) { if (node.textContent !== text) node.textContent = text; }
  /* As many cards as fit whole (at least CARD_W x CARD_H each); the rest on further pages,
     with the pager (the cue that there are more) on screen. */
  let fitted = { key: "", per: 1 };
  function perPage(n) {
    /* Measuring forces a layout: only when what decides the fit has changed. */
    const key = [n, innerWidth, innerHeight, $("welcome").textContent, $("idle-info").textContent].join("|");
    if (fitted.key !== key) fitted = { key: key, per: fit(n) };
    return fitted.per;
  }
  function fit(n) {
    const grid = $("bays");
    const fits = () => {
      const cols = Math.max(1, Math.floor((grid.clientWidth + GAP) / (CARD_W + GAP)));
      const rows = Math.max(1, Math.floor((grid.clientHeight + GAP) / (CARD_H + GAP)));
      return [cols, rows];
    };
    $("pager").hidden = true;
    let [cols, rows] = fits();
    let per = Math.max(1, n);
    if (n > cols * rows) {
      $("pager").hidden = false;
      [cols, rows] = fits();
      per = cols * rows;
    }
    const used = Math.min(rows, Math.max(1, Math.ceil(Math.min(n, per) / cols)));
    grid.style.gridTemplateColumns = "repeat(" + Math.min(cols, Math.max(1, n)) + ", minmax(0, 1fr))";
    grid.style.gridTemplateRows = "repeat(" + used + ", minmax(" + CARD_H + "px, " + (n <= cols ? CARD_H * 1.6 + "px" : "1fr") + "))";
    return per;
  }

  function safeMode() {
    return S.station && S.station.accepting_sessions === false;
  }
  function running() {
    let n = 0;
    for (const b of S.bays.values()) if (b.session) n += 1;
    return n;
  }
  function showSafe() {
    const tt = safeText(blockCause());
    say($("safe-title"), tt[0]);
    say($("safe-msg"), tt[1]);
    say($("safe-cons"), running() ? N_("Sessions already running continue.") : N_("No session is running."));
    show("safe");
  }

  function chooseBay(id) {
    const b = S.bays.get(id);
    if (!b) return;
    S.bay = id; S.code = ""; S.stopIntent = false;
    const mine = b.session && S.session && S.session.id === b.session.id;
    if (mine) return showSession();
    if (b.session) return message([N_("In use"), N_("If this is your session, scan or type your code to stop it.")], true, true);
    if (safeMode()) return showSafe();
    const l = stateOf(b);
    if (TAP[l[0]]) return message([l[0], TAP[l[0]]], l[0] === "Reserved");
    showAuth();
  }

  function message(tt, withCode, stopIntent) {
    say($("msg-title"), tt[0]);
    say($("msg-text"), tt[1]);
    $("msg-code").hidden = !withCode;
    S.stopIntent = !!stopIntent;
    show("msg");
  }

  /* ---------------------------------------------------------------- code */
  function showAuth() {
    for (const n of document.querySelectorAll(".bay-name")) n.textContent = bayTitle(S.bay);
    $("auth-hint").textContent = t(S.stopIntent ? N_("To stop, show your QR code to the camera or type your code.") : N_("Show your QR code to the camera, or type your code."));
    $("bay-qr").src = bayPath(S.bay, "qr.svg");
    $("bay-qr").alt = t("This bay on your phone");
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
      const b = el("button", { text: k, "data-key": k });
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
      S.changing = false;
      renderModes();
      return show("mode");
    } else if (S.code.length < 20) S.code += k;
    renderCode();
  }

  /* ---------------------------------------------------------------- mode */
  function renderModes() {
    const st = S.station;
    document.querySelector('[data-mode="solar"]').hidden = !st.pv_available;
    $("price").textContent = t("Price: {tariff}", { tariff: tariffText(st.tariff) });
    const cur = S.changing && S.session ? S.session.mode : null;
    for (const m of document.querySelectorAll(".mode")) m.classList.toggle("current", m.dataset.mode === cur);
  }
  function pickMode(mode, confirmed) {
    if (S.changing) return changeMode(mode, confirmed);
    return submit(mode, confirmed);
  }
  function askBoost() {
    $("boost").hidden = false;
    show("mode");
  }

  async function submit(mode, confirmed) {
    S.mode = mode;
    const stopping = S.stopIntent || !!(S.bays.get(S.bay) || {}).session;
    show("wait");
    const bay = S.bay;
    const r = await call("POST", bayPath(bay, "token"), { token: S.code, mode: mode, boost_confirmed: confirmed });
    if (r.status === 409 && r.data.error === "confirm_boost") return askBoost();
    S.code = "";
    if (r.status === 0) {
      /* Never sent again by itself: a code presented late could start a session nobody waits for. */
      showError(refusal("offline"), false);
      S.errOffline = true;
      return;
    }
    if (!r.ok) {
      const e = r.data.error;
      return showError(refusal(e, stopping), ["not_authorized", "too_many_attempts", "bay_in_use", "not_your_session"].includes(e) && !(e === "bay_in_use" && !stopping));
    }
    if (r.data.code === "stopped") return showReceipt(r.data.session_id, r.data.key, bay);
    S.session = { id: r.data.session_id, key: r.data.key, bay: bay, mode: mode };
    showInstructions();
  }

  async function changeMode(mode, confirmed) {
    const sess = S.session;
    if (!sess || !sess.key) return showSession();
    show("wait");
    const r = await call("POST", bayPath(sess.bay, "mode"), { session_id: sess.id, key: sess.key, mode: mode, boost_confirmed: confirmed });
    if (r.status === 409 && r.data.error === "confirm_boost") return askBoost();
    S.changing = false;
    if (!r.ok) return showError(refusal(r.status === 0 ? "offline" : r.data.error, true), false);
    sess.mode = mode;
    showSession();
  }

  /* ---------------------------------------------------------------- instructions, session */
  function showInstructions() {
    const b = S.bays.get(S.bay);
    const locker = b && b.kind === "locker";
    const steps = $("instr-steps");
    steps.replaceChildren();
    const list = locker
      ? [[N_("The door of {bay} is open."), { bay: bayTitle(S.bay) }], [N_("Place your device inside and plug it in.")], [N_("Close the door: charging starts by itself.")]]
      : [[N_("Take the charging cable.")], [N_("Plug it into your vehicle.")], [N_("Charging starts when the vehicle is ready.")]];
    for (const s of list) steps.append(el("li", { text: t(s[0], s[1]) }));
    say($("instr-title"), locker ? N_("Door open") : N_("Plug in your vehicle"));
    show("instr");
    renderInstr();
  }
  function renderInstr() {
    const b = S.bays.get(S.bay);
    if (!b) return;
    const sess = S.session;
    if (sess && b.session && b.session.id === sess.id) { sess.seen = true; sess.rkey = b.session.receipt_key; }
    /* Ended before it charged (nothing plugged in in time, stopped remotely...): say so. */
    else if (sess && sess.seen && !b.session) return ended(b);
    const l = stateOf(b);
    $("instr-chip").textContent = t(l[0], l[2]);
    $("instr-chip").className = "chip " + l[1];
    if (b.status === "Charging") showSession();
  }

  /* The session on view has ended, however it was stopped: its receipt (true when shown). */
  function ended(b) {
    const sess = S.session;
    const key = sess && sess.bay === b.id ? sess.key || sess.rkey : null;
    if (!key) return false;
    showReceipt(sess.id, key, b.id);
    return true;
  }

  function showSession() {
    for (const n of document.querySelectorAll(".bay-name")) n.textContent = bayTitle(S.bay);
    show("session");
    renderSession();
  }
  function renderSession() {
    const b = S.bays.get(S.bay);
    if (!b) return;
    const s = b.session;
    if (!s) return ended(b) || goIdle();
    if (!S.session || S.session.id !== s.id) S.session = { id: s.id, key: null, bay: b.id };
    S.session.rkey = s.receipt_key;
    S.session.mode = s.mode || S.session.mode || "standard";
    const l = stateOf(b);
    const chip = $("chip");
    chip.textContent = t(l[0], l[2]);
    chip.className = "chip " + l[1];
    const mc = $("mode-chip");
    mc.textContent = t("Mode: {mode}", { mode: t(MODES[S.session.mode] || S.session.mode) }) + (S.session.key ? " ✎" : "");
    mc.disabled = !S.session.key;
    /* The arc's full scale is what the car can draw on the phases it really uses. */
    const known = b.power_w !== null && b.power_w !== undefined;
    const used = b.current_a ? b.current_a.filter((c) => c > 0.5).length : 0;
    const full = (b.max_current_a || 16) * 230 * (used || b.phases || 3);
    const pct = known ? Math.min(100, (100 * b.power_w) / full) : 0;
    $("g-val").setAttribute("stroke-dasharray", pct.toFixed(1) + " 100");
    $("g-val").style.visibility = pct > 0 ? "" : "hidden"; /* no round caps for nothing */
    $("g-kw").textContent = known ? num(b.power_w / 1000, 1) : "–";
    $("gauge").setAttribute("aria-label", t("Power"));
    $("f-a").textContent = b.current_a ? num(Math.max.apply(null, b.current_a), 1) + " A" : "–";
    $("f-kwh").textContent = energy(s.energy_wh, b.kind);
    $("f-cost").textContent = money(s.cost, s.currency);
    $("notice").hidden = b.node_online !== false;
    $("notice").textContent = t("The charger is not responding — charging is paused");
    const lim = $("limited");
    lim.hidden = !b.limited_by_site || b.node_online === false;
    if (b.limited_by_site) {
      const why = b.limit_reason && REASONS.includes(b.limit_reason) ? b.limit_reason : "site capacity";
      lim.textContent = t("Limited by {reason}: {a} A of {max} A", { reason: t(why), a: num(b.setpoint_a || 0, 0), max: num(b.max_current_a, 0) });
    }
    renderStop();
    tickSession();
  }
  /* Once a second: the timer (stopped while the station is out of reach) and the figures' age. */
  function tickSession() {
    const b = S.bays.get(S.bay);
    if (!b || !b.session) return;
    const s = b.session;
    const tm = S.online ? now() : S.lastNow;
    $("f-time").textContent = fmtTime(tm / 1000 - s.started_at);
    const age = b.measured_at === null || b.measured_at === undefined ? null : now() / 1000 - b.measured_at;
    const fresh = S.online && b.node_online !== false && age !== null && age <= FRESH_S;
    $("f-age").textContent = fresh ? t("Live") : age === null ? t("Not measured yet")
      : age < 90 ? t("Measured {n} s ago", { n: Math.round(age) }) : t("Measured {n} min ago", { n: Math.round(age / 60) });
    $("s-session").classList.toggle("stale", !fresh);
    let eta = null;
    if (s.quota_s) eta = (s.started_at + s.quota_s) * 1000;
    if (s.quota_wh && b.power_w > 50) {
      const e = now() + (3600 * 1000 * Math.max(0, s.quota_wh - s.energy_wh)) / b.power_w;
      eta = eta ? Math.min(eta, e) : e;
    }
    $("f-eta-box").hidden = eta === null || !fresh;
    if (eta !== null) $("f-eta").textContent = hhmm(eta - S.offset);
  }

  function renderStop() {
    const p = S.stopping;
    const btn = $("stop");
    btn.disabled = !!p;
    btn.textContent = p ? t("Stopping…") : t("Stop charging");
    btn.dataset.tries = p ? String(p.tries) : "0";
    $("stop-note").hidden = !p || (p.tries < 1 && S.online);
    $("stop-note").textContent = t("The station does not answer right now. Your stop is kept and sent as soon as it answers.");
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
    showError(refusal(r.data.error, true), S.stopIntent);
  }

  /* ---------------------------------------------------------------- receipt */
  async function showReceipt(id, key, bay) {
    if (S.stopping && S.stopping.sess.id === id) return; /* its stop call shows the outcome */
    S.session = null;
    S.bay = bay;
    S.receipt = { id: id, key: key, bay: bay };
    if (S.screen !== "receipt") show("wait");
    const r = await call("GET", "/api/v1/kiosk/sessions/" + encodeURIComponent(id) + "/receipt?key=" + encodeURIComponent(key) + "&lang=" + I.lang);
    if (S.receipt === null || S.receipt.id !== id) return; /* left meanwhile */
    if (!r.ok) return goIdle();
    const d = r.data;
    const estop = d.stop_reason === "EmergencyStop";
    /* Title and what happened come in the driver's language with the figures. */
    $("r-title").textContent = d.text.title;
    $("r-sub").hidden = !d.text.note;
    $("r-sub").textContent = d.text.note;
    $("r-sub").className = "banner " + (estop ? "alarm" : "info");
    $("r-kwh").textContent = d.text.energy;
    $("r-time").textContent = d.text.duration;
    $("r-cost").textContent = d.text.cost;
    $("r-tariff").textContent = d.text.tariff;
    $("r-meta").textContent = d.text.meta;
    $("r-qr").innerHTML = d.qr_svg; /* generated by the station (segno): paths only */
    say($("r-qr-cap"), d.qr_url ? N_("Your receipt on your phone") : N_("Your receipt"));
    const exit = $("r-exit");
    exit.hidden = d.kind !== "locker" || estop;
    if (d.kind === "locker") exit.textContent = t("The door is unlocked: take your device and close the door within {n} min.", { n: Math.round(d.exit_grace_s / 60) });
    show("receipt");
  }

  /* ---------------------------------------------------------------- live */
  function onScan(msg) {
    /* A code shown to the camera stopped a session: its receipt, whoever started it, on this
       bay's screens or the start screen (not over another driver's steps at another bay). */
    const stopped = msg.ok && msg.code === "stopped" && msg.bay_id;
    if (stopped && (msg.bay_id === S.bay || S.screen === "idle")) {
      const sess = S.session;
      if (S.receipt && S.receipt.id === msg.session_id) return; /* on view already */
      if (sess && sess.key && sess.id === msg.session_id) return showReceipt(sess.id, sess.key, sess.bay);
      if (msg.session_id && msg.receipt_key) return showReceipt(msg.session_id, msg.receipt_key, msg.bay_id);
      return message([N_("Charging stopped"), N_("Your session has ended. Thank you!")], false);
    }
    // Any other code seen for the bay on screen: say what became of it.
    if (!msg.bay_id || msg.bay_id !== S.bay) return;
    if (!msg.ok) return showError(refusal(msg.code, S.stopIntent), true);
    message([N_("Code accepted"), N_("Your session is starting.")], false);
    S.holdUntil = Date.now() + ACCEPTED_MS;
    setTimeout(() => { if (S.screen === "msg") render(); }, ACCEPTED_MS + 50);
  }
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
      if (msg.section === "names" && msg.values) rename(msg.values);
    } else if (msg.type === "scan") {
      return onScan(msg);
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
    const banner = $("safe-banner");
    banner.hidden = !safeMode();
    if (safeMode()) {
      const tt = safeText(blockCause());
      banner.textContent = tt[0] === "Emergency stop" ? t("Emergency stop — charging stopped; staff have been notified") : t(tt[0]) + " — " + t(tt[1]);
    }
    const limited = !!(S.station && S.station.external && S.station.external.grid_operator);
    $("grid-banner").hidden = !limited;
    $("grid-banner").textContent = limited ? t("Limited by grid operator: charging is slower for now.") : "";
    const b = S.bay ? S.bays.get(S.bay) : null;
    if (["auth", "msg", "mode"].includes(S.screen) && b && b.session && !S.stopIntent && !S.changing && b.status !== "Finishing") {
      if (Date.now() < S.holdUntil) return; /* "Code accepted" stays readable */
      if (!S.session || S.session.id !== b.session.id) S.session = { id: b.session.id, key: null, bay: b.id };
      return b.status === "Charging" ? showSession() : showInstructions(); /* started by the camera */
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
    buildKeypad();
    for (const b of document.querySelectorAll(".back")) b.addEventListener("click", goIdle);
    $("msg-code").addEventListener("click", showAuth);
    $("err-retry").addEventListener("click", showAuth);
    $("instr-next").addEventListener("click", showSession);
    $("stop").addEventListener("click", stop);
    $("s-back").addEventListener("click", goIdle);
    $("mode-chip").addEventListener("click", () => { S.changing = true; renderModes(); show("mode"); });
    $("mode-cancel").addEventListener("click", (e) => { if (S.changing) { e.stopImmediatePropagation(); S.changing = false; showSession(); } }, true);
    $("r-done").addEventListener("click", goIdle);
    $("lang").addEventListener("click", langMenu);
    $("pg-prev").addEventListener("click", () => { S.page = Math.max(0, S.page - 1); renderIdle(); });
    $("pg-next").addEventListener("click", () => { S.page += 1; renderIdle(); });
    $("bays").addEventListener("click", (e) => {
      const card = e.target.closest("[data-bay]");
      if (card) chooseBay(card.dataset.bay);
    });
    for (const m of document.querySelectorAll(".mode")) {
      m.addEventListener("click", () => pickMode(m.dataset.mode, false));
    }
    $("boost-ok").addEventListener("click", () => { $("boost").hidden = true; pickMode("boost", true); });
    $("boost-cancel").addEventListener("click", () => { $("boost").hidden = true; });
    window.addEventListener("resize", () => { if (S.screen === "idle") renderIdle(); });
    for (const ev of ["pointerdown", "keydown"]) document.addEventListener(ev, () => { S.lastTouch = Date.now(); }, true);
    setInterval(() => {
      $("clock").textContent = hhmm(now() - S.offset);
      if (S.online && Date.now() - S.seenAt > SILENT_MS) onLink(false, "silent");
      if (S.screen === "session") renderSession(); /* a countdown, the timer, the figures' age */
      else if (S.screen === "instr") renderInstr();
      const idleMs = (S.kiosk.idle_timeout_s || 60) * 1000;
      /* A running session this screen started stays on view: its driver need not type the code again. */
      const own = S.screen === "session" && S.session && S.session.key;
      const busy = S.screen === "wait" || S.stopping || own;
      if (!busy && Date.now() - S.lastTouch > idleMs) {
        if (S.screen !== "idle") goIdle();
        if (I.lang !== I.def) setLang(I.def); /* the next driver starts in the station's language */
        $("langs").hidden = true;
      }
    }, 1000);
    setLang(new URLSearchParams(location.search).get("lang") || "");
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
