"use strict";
/* Live updates over one WebSocket, shared by the kiosk and the owner pages.
   Reconnects by itself with exponential backoff and jitter (0.5 s .. maxDelay,
   15 s unless the page asks for less), and
   also when the server has been silent too long (it sends a tick every 5 s). */
(function () {
  window.connectLive = function (path, onMessage, onState, maxDelay) {
    const cap = maxDelay || 15000;
    let delay = 500;
    let ws = null;
    let timer = null;
    let last = 0;
    function open() {
      const scheme = location.protocol === "https:" ? "wss://" : "ws://";
      ws = new WebSocket(scheme + location.host + path);
      ws.onopen = function () {
        delay = 500;
        last = Date.now();
        onState(true, 0);
      };
      ws.onmessage = function (e) {
        last = Date.now();
        let msg;
        try {
          msg = JSON.parse(e.data);
        } catch (err) {
          return;
        }
        onMessage(msg);
      };
      ws.onclose = function (e) {
        onState(false, e.code);
        if (e.code === 4401 || e.code === 4403) return; /* not allowed: the page decides */
        clearTimeout(timer);
        const wait = Math.min(cap, delay) * (0.75 + Math.random() * 0.5);
        delay = Math.min(cap, delay * 2);
        timer = setTimeout(open, wait);
      };
      ws.onerror = function () {
        try {
          ws.close();
        } catch (err) {
          /* already closed */
        }
      };
    }
    setInterval(function () {
      if (ws && ws.readyState === 1 && Date.now() - last > 15000) ws.close();
    }, 5000);
    open();
  };

  window.csrfToken = function () {
    const m = document.cookie.match(/(?:^|; )es_csrf=([^;]+)/);
    return m ? decodeURIComponent(m[1]) : "";
  };

  window.api = async function (method, path, body) {
    const opts = {
      method: method,
      credentials: "same-origin",
      headers: { "X-CSRF-Token": window.csrfToken() },
    };
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    let r;
    try {
      r = await fetch(path, opts);
    } catch (err) {
      return { status: 0, ok: false, data: { error: "offline", message: "The station does not answer. Try again." } };
    }
    let data = {};
    try {
      data = await r.json();
    } catch (err) {
      data = {};
    }
    return { status: r.status, ok: r.ok, data: data };
  };

  window.el = function (tag, attrs, children) {
    const e = document.createElement(tag);
    for (const k in attrs || {}) {
      if (k === "text") e.textContent = attrs[k];
      else if (k === "cls") e.className = attrs[k];
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), attrs[k]);
      else e.setAttribute(k, attrs[k]);
    }
    for (const c of children || []) e.append(c);
    return e;
  };
})();
