/**
 * The fleet page's script, served as /ui/app.js (the page's Content-Security-Policy allows no
 * inline script). Plain ES5 in a string: no build step. It keeps the token the operator enters in
 * the tab's session storage and calls the API with it (so the token's scopes and VM globs apply),
 * builds every table cell with textContent (never HTML from data), and refreshes every 5 s; the
 * freeze countdowns tick every second. A 401 forgets the token and asks again.
 *
 * Each token's session has a generation: what a refresh fetched is shown only if no other token
 * was entered (or the token forgotten) meanwhile, so a page never shows data fetched with another
 * token. The VM list follows at most MAX_PAGES pages; past that the page says so and fetches the
 * down VMs on their own, so a large fleet's dead agents are never the ones left out. "Recent
 * errors" are the page's own failed calls and the VMs that are not up now, with when they went down.
 */
export const APP_JS = String.raw`'use strict';
(function () {
  var KEY = 'qga-gateway-token';
  var REFRESH_MS = 5000;
  var MAX_PAGES = 10;
  var MAX_ERRORS = 20;
  var state = { vms: [], freezes: [], errors: [], timer: null, tick: null, loading: false, gen: 0, more: false };

  function $(id) { return document.getElementById(id); }
  var memToken = null;
  function token() { try { return sessionStorage.getItem(KEY) || memToken; } catch (e) { return memToken; } }
  function forget() { memToken = null; try { sessionStorage.removeItem(KEY); } catch (e) { /* storage disabled */ } }

  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  function row(cells, attrs) {
    var tr = document.createElement('tr');
    Object.keys(attrs || {}).forEach(function (k) { tr.setAttribute(k, attrs[k]); });
    cells.forEach(function (c) {
      var td = document.createElement('td');
      if (c instanceof Node) td.appendChild(c); else if (c !== undefined && c !== null) td.textContent = String(c);
      tr.appendChild(td);
    });
    return tr;
  }

  function fill(tableId, rows, empty, columns) {
    var body = $(tableId).tBodies[0];
    while (body.firstChild) body.removeChild(body.firstChild);
    if (rows.length === 0) {
      var tr = document.createElement('tr');
      var td = el('td', empty, 'empty');
      td.colSpan = columns;
      tr.appendChild(td);
      body.appendChild(tr);
      return;
    }
    rows.forEach(function (r) { body.appendChild(r); });
  }

  function noteError(where, what) {
    state.errors.unshift({ at: new Date(), where: where, what: what });
    if (state.errors.length > MAX_ERRORS) state.errors.length = MAX_ERRORS;
  }

  function showLogin(message) {
    stop();
    $('fleet').hidden = true;
    $('logout').hidden = true;
    $('login').hidden = false;
    $('login-error').textContent = message || '';
    $('status').textContent = '';
    $('token').focus();
  }

  function stop() {
    if (state.timer) clearTimeout(state.timer);
    if (state.tick) clearInterval(state.tick);
    state.timer = null;
    state.tick = null;
  }

  function api(path) {
    return fetch(path, { headers: { authorization: 'Bearer ' + token(), accept: 'application/json' }, cache: 'no-store', credentials: 'omit' }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (body) {
        if (r.ok) return body;
        var err = new Error((body && body.detail) || ('HTTP ' + r.status));
        err.status = r.status;
        err.code = body && body.code;
        throw err;
      });
    });
  }

  // the VMs, at most MAX_PAGES pages; past that, the down VMs on their own (more: some not shown)
  function loadVms() {
    var items = [];
    function next(cursor, n) {
      return api('/v1/vms?limit=1000' + (cursor ? '&cursor=' + encodeURIComponent(cursor) : '')).then(function (page) {
        items = items.concat(page.items || []);
        if (page.next && n + 1 < MAX_PAGES) return next(page.next, n + 1);
        if (!page.next) return { items: items, more: false };
        return api('/v1/vms?limit=1000&state=down').then(function (down) {
          var seen = {};
          items.forEach(function (v) { seen[v.name] = true; });
          (down.items || []).forEach(function (v) { if (!seen[v.name]) items.push(v); });
          return { items: items, more: true };
        });
      });
    }
    return next(null, 0);
  }

  function refresh() {
    if (!token() || state.loading) return;
    state.loading = true;
    var gen = state.gen;
    var failed = false;
    var got = {};
    var vms = loadVms().then(function (v) { got.vms = v; }, function (e) { failed = true; got.vmsError = e; });
    var freezes = api('/v1/freezes').then(function (f) { got.freezes = f.freezes || []; }, function (e) { failed = true; got.freezesError = e; });
    Promise.all([vms, freezes]).then(function () {
      // another token entered, or this one forgotten, meanwhile: what was fetched is not shown
      if (gen !== state.gen) return;
      state.loading = false;
      if (got.vms) { state.vms = got.vms.items; state.more = got.vms.more; }
      if (got.freezes) state.freezes = got.freezes;
      if (got.vmsError) onError('GET /v1/vms', got.vmsError);
      if (got.freezesError) onError('GET /v1/freezes', got.freezesError);
      if (!token()) return;
      render();
      $('status').textContent = (failed ? 'partly refreshed ' : 'refreshed ') + new Date().toLocaleTimeString();
      state.timer = setTimeout(refresh, REFRESH_MS);
    });
  }

  // a new session (another token, or none): nothing of the previous one is kept or shown
  function reset() {
    state.gen++;
    state.loading = false;
    state.vms = [];
    state.freezes = [];
    state.errors = [];
    state.more = false;
    ['vms', 'freezes', 'errors'].forEach(function (id) { var b = $(id).tBodies[0]; while (b.firstChild) b.removeChild(b.firstChild); });
  }

  function onError(where, e) {
    if (e.status === 401) {
      reset();
      forget();
      showLogin('The gateway did not accept this token (401).');
      return;
    }
    noteError(where, (e.code ? e.code + ': ' : '') + e.message);
  }

  function iso(t) { return t ? new Date(t).toLocaleString() : ''; }

  function countdown(expiresAt) {
    var left = Math.round((Date.parse(expiresAt) - Date.now()) / 1000);
    if (isNaN(left)) return '';
    if (left <= 0) return 'thawing (deadline passed)';
    var m = Math.floor(left / 60);
    var s = left % 60;
    return (m > 0 ? m + 'm ' : '') + s + 's';
  }

  function tickCountdowns() {
    var cells = document.querySelectorAll('#freezes td.countdown');
    for (var i = 0; i < cells.length; i++) cells[i].textContent = countdown(cells[i].getAttribute('data-expires'));
  }

  function labels(l) {
    var span = document.createElement('span');
    Object.keys(l || {}).sort().forEach(function (k) { span.appendChild(el('span', k + '=' + l[k], 'label')); });
    return span;
  }

  function render() {
    $('login').hidden = true;
    $('fleet').hidden = false;
    $('logout').hidden = false;

    var frozenRows = state.freezes.map(function (f) {
      var what = f.vm || (f.group ? 'group ' + f.group : 'part of a freeze group');
      var tr = row([what, (f.vms || []).join(', '), f.owner, iso(f.frozenAt), f.expiresAt ? iso(f.expiresAt) : '(none: frozen outside the gateway)', null],
        { 'data-freeze': f.vm || f.group || (f.vms || []).join(','), 'data-owner': f.owner });
      var cd = tr.lastChild;
      cd.className = 'countdown';
      if (f.expiresAt) { cd.setAttribute('data-expires', f.expiresAt); cd.textContent = countdown(f.expiresAt); }
      if (f.expired) tr.className = 'expired';
      return tr;
    });
    fill('freezes', frozenRows, 'No VM is frozen.', 6);
    $('freezes-count').textContent = '(' + state.freezes.length + ')';

    var vmRows = state.vms.map(function (v) {
      var a = v.agent || { state: 'unknown' };
      var frozen = v.frozen ? ('yes' + (v.freeze && v.freeze.owner ? ' (' + v.freeze.owner + ')' : '')) : 'no';
      var tr = row([v.name, el('span', a.state, 'state-' + a.state), iso(a.since), frozen, v.channel ? v.channel.state : '', labels(v.labels), a.lastError || ''],
        { 'data-vm': v.name, 'data-agent': a.state });
      return tr;
    });
    fill('vms', vmRows, 'No VM is visible to this token.', 7);
    $('vms-count').textContent = '(' + state.vms.length + (state.more ? ': the first ' + MAX_PAGES * 1000 + ' and every down VM; more not shown, use the API' : '') + ')';

    var errs = state.errors.map(function (e) { return row([e.at.toLocaleTimeString(), e.where, e.what], { 'data-error': e.where }); });
    // VMs whose agent is not up now, most recent first: an up VM's lastError is history, and its
    // since is when it came back, not when the error happened
    state.vms.filter(function (v) { return v.agent && v.agent.state === 'down' && v.agent.lastError; })
      .sort(function (a, b) { return Date.parse(b.agent.since) - Date.parse(a.agent.since); })
      .slice(0, 100)
      .forEach(function (v) { errs.push(row([iso(v.agent.since), 'VM ' + v.name + ' (down since)', v.agent.lastError], { 'data-error': v.name })); });
    fill('errors', errs, 'No recent errors.', 3);

    if (!state.tick) state.tick = setInterval(tickCountdowns, 1000);
  }

  function start() {
    stop();
    reset();
    $('login').hidden = true;
    $('status').textContent = 'loading…';
    refresh();
  }

  document.addEventListener('DOMContentLoaded', function () {
    $('login').addEventListener('submit', function (ev) {
      ev.preventDefault();
      var t = $('token').value.trim();
      if (!t) return;
      memToken = t;
      try { sessionStorage.setItem(KEY, t); } catch (e) { /* storage disabled: the token lives in this page only */ }
      $('token').value = '';
      start();
    });
    $('logout').addEventListener('click', function () {
      forget();
      reset();
      showLogin('');
    });
    if (token()) start(); else showLogin('');
  });
})();
`;
