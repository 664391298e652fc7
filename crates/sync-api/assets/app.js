// Sync dashboard (served by sync-api). Plain JavaScript, no library, no build step.
//
// Rules kept throughout: every value from the server goes into the page through
// textContent or a DOM attribute that is not a URL or an event handler (no
// HTML is ever parsed from data); the token is sent only in the Authorization header, never in a URL;
// every API path is relative to the page, so the dashboard works when a service
// nests it under a prefix.
'use strict';

(() => {
  const TOKEN_KEY = 'sync-dashboard-token';
  const LIST_REFRESH_MS = 15000; // active/recent lists and metrics (new syncs appear)
  const POLL_MS = 2000; // progress, only when the event stream is not served
  const STALL_MS = 45000; // no byte for this long (3 heartbeats): reconnect
  const ACTIVITY_PAGE = 50;
  const PREVIEW_COLLAPSE_CHARS = 4000;
  const ENTITIES = ['customer', 'product', 'order', 'invoice', 'product_variant', 'category',
    'inventory', 'price_list', 'payment', 'refund', 'credit_note', 'shipment', 'supplier',
    'purchase_order', 'tax_rate', 'coupon'];
  const ACTIONS = ['preview_delta', 'preview_invalidate', 'sync_start', 'sync_progress',
    'sync_complete', 'sync_fail', 'sync_cancel', 'sync_retry', 'record_create',
    'record_update', 'record_delete', 'record_skip'];
  const OUTCOMES = {
    in_progress: 'running', completed: 'completed',
    completed_with_errors: 'completed with errors', failed: 'failed', cancelled: 'cancelled',
  };

  const $ = (id) => document.getElementById(id);
  const base = new URL('.', location.href);
  let token = sessionStorage.getItem(TOKEN_KEY);
  let listTimer = null;
  const activeRows = new Map(); // sync id -> row
  const follows = new Map(); // sync id -> AbortController of its live stream
  let detail = null; // { syncId, follow, cursor }
  let signedIn = false;

  // ---- DOM helpers -------------------------------------------------------
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== undefined && v !== null) e.setAttribute(k, String(v));
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }
  const td = (text, cls) => el('td', cls ? { class: cls } : null, text);
  const svgEl = (tag, attrs) => {
    const e = document.createElementNS('http://www.w3.org/2000/svg', tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    return e;
  };
  const syncHref = (id) => '#/sync/' + encodeURIComponent(id);
  const show = (id, on) => { $(id).hidden = !on; };

  // ---- formatting --------------------------------------------------------
  function duration(s) {
    if (s === null || s === undefined) return '\u2013';
    s = Math.max(0, Math.round(s));
    const h = Math.floor(s / 3600); const m = Math.floor((s % 3600) / 60); const r = s % 60;
    if (h) return h + ' h ' + String(m).padStart(2, '0') + ' min';
    if (m) return m + ' min ' + String(r).padStart(2, '0') + ' s';
    return r + ' s';
  }
  const num = (n) => (n === null || n === undefined ? '\u2013' : Number(n).toLocaleString());
  const speed = (v) => (v === null || v === undefined ? '\u2013' : Number(v).toFixed(1) + ' /min');
  const pct = (r) => (r === null || r === undefined ? '\u2013' : (100 * r).toFixed(1) + ' %');
  const when = (t) => (t ? new Date(t).toLocaleString() : '\u2013');
  function badge(p) {
    const status = p.stalled && p.status === 'in_progress' ? 'stalled' : p.status;
    return el('span', { class: 'badge ' + status }, OUTCOMES[status] || status);
  }
  function outcomeMessage(p) {
    const o = p.metadata && p.metadata._sync_outcome;
    return o && typeof o.error_message === 'string' ? o.error_message : null;
  }

  // ---- HTTP --------------------------------------------------------------
  class HttpError extends Error {
    constructor(status, body) {
      super((body && body.message) || 'HTTP ' + status);
      this.status = status;
      this.code = body && body.code;
    }
  }
  function headers(accept) {
    const h = { Accept: accept || 'application/json' };
    if (token) h.Authorization = 'Bearer ' + token;
    return h;
  }
  async function getJson(path, signal) {
    const r = await fetch(new URL(path, base), {
      headers: headers(), signal, cache: 'no-store', credentials: 'same-origin', referrerPolicy: 'no-referrer',
    });
    let body = null;
    try { body = await r.json(); } catch (_) { body = null; }
    if (!r.ok) throw new HttpError(r.status, body);
    return body;
  }
  const sleep = (ms, signal) => new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    if (signal) signal.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
  });

  function report(err) {
    if (err && err.name === 'AbortError') return;
    if (err instanceof HttpError && err.status === 401) { signOut('Your token was refused or has expired; sign in again.'); return; }
    $('error').textContent = err instanceof HttpError ? err.message : 'The service cannot be reached; retrying.';
    show('error', true);
  }
  const clearError = () => { $('error').textContent = ''; show('error', false); };
  function setLive(text, on) {
    $('live').textContent = text;
    $('live').className = 'live ' + (on ? 'on' : 'off');
  }

  // ---- live progress: fetch() + stream reader (EventSource cannot send headers) ---
  // Calls onProgress(p) for every progress event; ends when the sync has
  // completed_at, when aborted, or on 404 of the sync. Reconnects with backoff
  // and Last-Event-ID. Falls back to GET progress every POLL_MS only when the
  // service has no event stream route.
  function follow(syncId, onProgress) {
    const ctrl = new AbortController();
    const signal = ctrl.signal;
    const path = 'api/v1/sync/progress/' + encodeURIComponent(syncId);
    let lastId = null;
    let backoff = 1000;
    const done = (p) => p && p.completed_at;
    (async () => {
      while (!signal.aborted) {
        let stalled = null;
        try {
          const h = headers('text/event-stream');
          if (lastId !== null) h['Last-Event-ID'] = lastId;
          const streamCtrl = new AbortController();
          signal.addEventListener('abort', () => streamCtrl.abort(), { once: true });
          const r = await fetch(new URL(path + '/events', base), {
            headers: h, signal: streamCtrl.signal, cache: 'no-store', referrerPolicy: 'no-referrer',
          });
          if (r.status === 401) { report(new HttpError(401, null)); return; }
          if (r.status === 404 || r.status === 405) {
            let body = null;
            try { body = await r.json(); } catch (_) { body = null; }
            if (body && body.message === 'no such route') { await poll(path, signal, onProgress); return; }
            return; // the sync is gone (or not this org's)
          }
          if (r.status === 204) return; // resumed after the final event: finished
          if (!r.ok || !r.body) throw new HttpError(r.status, null);
          setLive('live', true);
          backoff = 1000;
          const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
          const arm = () => {
            clearTimeout(stalled);
            stalled = setTimeout(() => streamCtrl.abort(), STALL_MS);
          };
          arm();
          let buf = '';
          let ev = { event: 'message', data: [], id: null };
          let finished = false;
          for (;;) {
            const { value, done: end } = await reader.read();
            if (end) break;
            arm();
            buf += value;
            const lines = buf.split(/\r\n|\r|\n/);
            buf = lines.pop();
            for (const line of lines) {
              if (line === '') {
                if (ev.id !== null) lastId = ev.id;
                if (ev.data.length && (ev.event === 'progress' || ev.event === 'message')) {
                  const p = JSON.parse(ev.data.join('\n'));
                  onProgress(p);
                  if (done(p)) finished = true;
                }
                ev = { event: 'message', data: [], id: null };
              } else if (!line.startsWith(':')) {
                const i = line.indexOf(':');
                const field = i < 0 ? line : line.slice(0, i);
                let v = i < 0 ? '' : line.slice(i + 1);
                if (v.startsWith(' ')) v = v.slice(1);
                if (field === 'event') ev.event = v;
                else if (field === 'data') ev.data.push(v);
                else if (field === 'id') ev.id = v;
              }
            }
          }
          clearTimeout(stalled);
          if (finished) return;
        } catch (e) {
          clearTimeout(stalled);
          if (signal.aborted) return;
          if (e instanceof HttpError && e.status === 401) { report(e); return; }
        }
        setLive('reconnecting\u2026', false);
        await sleep(backoff, signal);
        backoff = Math.min(backoff * 2, 30000);
      }
    })();
    return ctrl;
  }

  async function poll(path, signal, onProgress) {
    setLive('updating every ' + POLL_MS / 1000 + ' s', true);
    while (!signal.aborted) {
      try {
        const p = await getJson(path, signal);
        onProgress(p);
        if (p.completed_at) return;
      } catch (e) {
        if (signal.aborted) return;
        if (e instanceof HttpError && (e.status === 404 || e.status === 401)) { if (e.status === 401) report(e); return; }
      }
      await sleep(POLL_MS, signal);
    }
  }

  // ---- overview ------------------------------------------------------------
  function progressCell(p) {
    const bar = el('progress', { max: p.total_items || 1, value: p.processed_count + p.failed_count });
    if (p.total_items === null || p.total_items === undefined) bar.removeAttribute('value');
    const label = el('span', { class: 'pct' });
    const cell = el('td', null, bar, label);
    return { cell, bar, label };
  }

  function makeActiveRow(syncId) {
    const link = el('a', { href: syncHref(syncId) }, syncId);
    const prog = progressCell({ processed_count: 0, failed_count: 0, total_items: null });
    const cells = {
      processed: td('', 'num'), failed: td('', 'num'), total: td('', 'num'),
      speed: td('', 'num'), eta: td('', 'num'), elapsed: td('', 'num'),
    };
    const tr = el('tr', { 'data-sync-id': syncId }, el('td', { class: 'id' }, link, ' ', el('span')), prog.cell,
      cells.processed, cells.failed, cells.total, cells.speed, cells.eta, cells.elapsed);
    const status = tr.firstChild.lastChild;
    const update = (p) => {
      const handled = p.processed_count + p.failed_count;
      if (p.total_items === null || p.total_items === undefined) {
        prog.bar.removeAttribute('value');
        prog.label.textContent = '';
      } else {
        prog.bar.max = Math.max(1, p.total_items);
        prog.bar.value = handled;
        prog.label.textContent = Math.floor((100 * handled) / Math.max(1, p.total_items)) + ' %';
      }
      prog.bar.setAttribute('aria-label', 'progress of ' + syncId);
      cells.processed.textContent = num(p.processed_count);
      cells.failed.textContent = num(p.failed_count);
      cells.total.textContent = num(p.total_items);
      cells.speed.textContent = speed(p.speed_items_per_min);
      cells.eta.textContent = duration(p.eta_seconds);
      cells.elapsed.textContent = duration(p.elapsed_seconds);
      status.replaceChildren(p.stalled ? badge(p) : '');
      tr.dataset.handled = String(handled);
      tr.dataset.renderedAt = String(Math.round(performance.timeOrigin + performance.now()));
    };
    return { tr, update };
  }

  function onLiveProgress(syncId) {
    return (p) => {
      const row = activeRows.get(syncId);
      if (row) row.update(p);
      if (p.completed_at) {
        stopFollow(syncId);
        if (row) { row.tr.remove(); activeRows.delete(syncId); }
        show('active-empty', activeRows.size === 0);
        loadRecent().catch(report);
        loadMetrics().catch(report);
      }
    };
  }

  function stopFollow(syncId) {
    const f = follows.get(syncId);
    if (f) { f.abort(); follows.delete(syncId); }
  }

  async function loadActive() {
    const { syncs } = await getJson('api/v1/sync/active');
    const body = $('active').tBodies[0];
    const seen = new Set();
    for (const p of syncs) {
      seen.add(p.sync_id);
      let row = activeRows.get(p.sync_id);
      if (!row) { row = makeActiveRow(p.sync_id); activeRows.set(p.sync_id, row); }
      // a row is refreshed from the list only until its stream delivers
      if (!follows.has(p.sync_id)) {
        row.update(p);
        follows.set(p.sync_id, follow(p.sync_id, onLiveProgress(p.sync_id)));
      }
      body.append(row.tr);
    }
    for (const [id, row] of activeRows) {
      if (!seen.has(id)) { row.tr.remove(); activeRows.delete(id); stopFollow(id); }
    }
    show('active-empty', syncs.length === 0);
    if (!performance.getEntriesByName('dashboard-data').length) performance.mark('dashboard-data');
  }

  async function loadRecent() {
    const { syncs } = await getJson('api/v1/sync/recent?limit=20');
    const rows = syncs.map((p) => {
      const msg = outcomeMessage(p);
      return el('tr', { 'data-sync-id': p.sync_id },
        el('td', { class: 'id' }, el('a', { href: syncHref(p.sync_id) }, p.sync_id)),
        td(p.entity_type),
        el('td', { class: 'msg' }, badge(p), msg ? ' ' : null, msg),
        td(num(p.processed_count), 'num'), td(num(p.failed_count), 'num'),
        td(when(p.started_at)), td(p.completed_at ? duration(p.elapsed_seconds) : '\u2013', 'num'));
    });
    $('recent').tBodies[0].replaceChildren(...rows);
    show('recent-empty', rows.length === 0);
  }

  async function loadMetrics() {
    const m = await getJson('api/v1/sync/metrics');
    const x = m.metrics;
    const o = x.outcomes;
    const share = (n) => (o.ended ? pct(n / o.ended) : '\u2013');
    const facts = [
      ['Active syncs', num(x.active_syncs)],
      ['Average speed', speed(x.avg_speed_items_per_min)],
      ['Average duration', duration(x.avg_duration_seconds)],
      ['Syncs ended', num(o.ended)],
      ['Succeeded', share(o.completed)],
      ['With errors', share(o.completed_with_errors)],
      ['Failed', share(o.failed)],
      ['Success rate (all entries)', pct(x.success_rate)],
      ['Error rate (all entries)', pct(x.error_rate)],
      ['Cached previews live', num(x.cache_live)],
      ['Cached previews expired', num(x.cache_expired)],
    ];
    $('metrics').replaceChildren(...facts.map(([k, v]) => el('div', null, el('dt', null, k), el('dd', null, v))));
    drawChart(m.series);
  }

  function drawChart(series) {
    const svg = $('chart');
    const pts = series.points;
    const W = 600; const H = 160; const top = 4; const bottom = 1;
    const max = Math.max(1, ...pts.map((p) => Math.max(p.items, p.errors)));
    const bw = W / Math.max(1, pts.length);
    const y = (v) => H - bottom - ((H - top - bottom) * v) / max;
    const nodes = [svgEl('line', { class: 'axis', x1: 0, y1: H - bottom, x2: W, y2: H - bottom })];
    pts.forEach((p, i) => {
      const label = new Date(p.start).toLocaleString() + ': ' + p.items + ' items, ' + p.errors + ' errors, ' + p.entries + ' entries';
      const g = svgEl('g', {});
      const t = svgEl('title', {}); t.textContent = label; g.append(t);
      g.append(svgEl('rect', { class: 'bar-items', x: i * bw + 1, y: y(p.items), width: Math.max(1, bw - 2), height: H - bottom - y(p.items) }));
      if (p.errors) g.append(svgEl('rect', { class: 'bar-errors', x: i * bw + bw / 4, y: y(p.errors), width: Math.max(1, bw / 2), height: H - bottom - y(p.errors) }));
      nodes.push(g);
    });
    $('chart-max').textContent = 'max ' + max.toLocaleString() + ' per bucket';
    $('chart-from').textContent = pts.length ? new Date(pts[0].start).toLocaleString() : '';
    svg.replaceChildren(...nodes);
  }

  async function loadOverview() {
    await Promise.all([loadActive(), loadRecent(), loadMetrics()]);
    clearError();
  }

  // ---- one sync ------------------------------------------------------------
  function factsList(pairs) {
    return el('dl', { class: 'facts' }, ...pairs.flatMap(([k, v]) => [el('dt', null, k), el('dd', null, v)]));
  }

  function renderDetailProgress(p) {
    const handled = p.processed_count + p.failed_count;
    const bar = el('progress', { max: Math.max(1, p.total_items || 1), value: handled, 'aria-label': 'progress' });
    if (p.total_items === null || p.total_items === undefined) bar.removeAttribute('value');
    const msg = outcomeMessage(p);
    $('detail-progress').replaceChildren(
      el('p', null, badge(p), ' ', bar, el('span', { class: 'pct' },
        p.total_items ? Math.floor((100 * handled) / Math.max(1, p.total_items)) + ' %' : '')),
      factsList([
        ['Entity', p.entity_type], ['Source', p.source_system || '\u2013'], ['Job', p.job_id || '\u2013'],
        ['Processed', num(p.processed_count)], ['Failed', num(p.failed_count)], ['Total', num(p.total_items)],
        ['Speed', speed(p.speed_items_per_min)], ['ETA', duration(p.eta_seconds)],
        ['Elapsed', duration(p.elapsed_seconds)], ['Started', when(p.started_at)],
        ['Finished', when(p.completed_at)], ['Message', msg || '\u2013'],
      ]));
    $('detail-progress').dataset.handled = String(handled);
  }

  async function loadPreview(syncId) {
    const box = $('preview');
    try {
      const pv = await getJson('api/v1/sync/preview/' + encodeURIComponent(syncId));
      const text = JSON.stringify(pv.delta_json, null, 2);
      const details = el('details', null,
        el('summary', null, 'Delta computed ' + when(pv.computed_at) + ', expires ' + when(pv.expires_at) +
          ' (' + text.length.toLocaleString() + ' characters)'),
        el('pre', null, text));
      details.open = text.length <= PREVIEW_COLLAPSE_CHARS;
      box.replaceChildren(details);
    } catch (e) {
      if (e instanceof HttpError && e.status === 404) box.replaceChildren(el('p', { class: 'muted' }, 'No unexpired cached preview.'));
      else throw e;
    }
  }

  async function loadActivity(more) {
    const d = detail;
    const q = new URLSearchParams({ sync_id: d.syncId, limit: String(ACTIVITY_PAGE) });
    const entity = $('f-entity').value; const action = $('f-action').value;
    if (entity) q.set('entity', entity);
    if (action) q.set('action', action);
    if (more && d.cursor) q.set('cursor', d.cursor);
    const page = await getJson('api/v1/sync/activity?' + q.toString());
    if (detail !== d) return;
    const rows = page.entries.map((a) => el('tr', null,
      td(when(a.created_at)), td(a.action), el('td', null, el('span', { class: 'badge ' + a.status }, OUTCOMES[a.status] || a.status)),
      td(a.entity_type || '\u2013'), td(num(a.record_count), 'num'), td(a.error_message || '', 'msg')));
    const body = $('activity').tBodies[0];
    if (more) body.append(...rows); else body.replaceChildren(...rows);
    d.cursor = page.next_cursor;
    show('activity-more', Boolean(page.next_cursor));
    show('activity-empty', body.rows.length === 0);
  }

  async function openDetail(syncId) {
    closeDetail();
    detail = { syncId, follow: null, cursor: null };
    const d = detail;
    $('detail-title').textContent = syncId;
    $('detail-progress').replaceChildren();
    $('preview').replaceChildren();
    $('activity').tBodies[0].replaceChildren();
    try {
      const p = await getJson('api/v1/sync/progress/' + encodeURIComponent(syncId));
      if (detail !== d) return;
      renderDetailProgress(p);
      if (!p.completed_at) {
        d.follow = follow(syncId, (q) => {
          if (detail !== d) return;
          renderDetailProgress(q);
          if (q.completed_at) loadActivity(false).catch(report);
        });
      }
    } catch (e) {
      if (e instanceof HttpError && e.status === 404) $('detail-progress').replaceChildren(el('p', { class: 'muted' }, 'No such sync in your organization.'));
      else report(e);
    }
    await Promise.all([loadPreview(syncId), loadActivity(false)]).catch(report);
  }

  function closeDetail() {
    if (detail && detail.follow) detail.follow.abort();
    detail = null;
  }

  // ---- navigation and sign-in -------------------------------------------
  function stopAll() {
    clearInterval(listTimer); listTimer = null;
    for (const id of [...follows.keys()]) stopFollow(id);
    for (const row of activeRows.values()) row.tr.remove();
    activeRows.clear();
    closeDetail();
  }

  function route() {
    clearError();
    const m = location.hash.match(/^#\/sync\/(.+)$/);
    show('signin', false);
    if (m) {
      show('overview', false); show('detail', true);
      clearInterval(listTimer); listTimer = null;
      let id;
      try { id = decodeURIComponent(m[1]); } catch (_) { id = m[1]; }
      openDetail(id);
    } else {
      closeDetail();
      show('detail', false); show('overview', true);
      loadOverview().catch(report);
      clearInterval(listTimer);
      listTimer = setInterval(() => loadOverview().catch(report), LIST_REFRESH_MS);
    }
  }

  function signOut(message) {
    signedIn = false;
    stopAll();
    token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    show('overview', false); show('detail', false); show('signout', false);
    show('signin', true);
    setLive('', false);
    if (message) { $('error').textContent = message; show('error', true); } else clearError();
  }

  async function signIn(candidate) {
    token = candidate;
    try {
      await getJson('api/v1/sync/active');
    } catch (e) {
      token = null;
      throw e;
    }
    if (candidate) sessionStorage.setItem(TOKEN_KEY, candidate);
    show('signout', Boolean(candidate));
    signedIn = true;
    route();
  }

  function init() {
    for (const v of ENTITIES) $('f-entity').append(el('option', { value: v }, v));
    for (const v of ACTIONS) $('f-action').append(el('option', { value: v }, v));
    $('f-entity').addEventListener('change', () => loadActivity(false).catch(report));
    $('f-action').addEventListener('change', () => loadActivity(false).catch(report));
    $('activity-more').addEventListener('click', () => loadActivity(true).catch(report));
    $('signout').addEventListener('click', () => signOut());
    $('signin-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const t = $('token').value.trim().replace(/^Bearer\s+/i, '');
      $('token').value = '';
      signIn(t).catch((e) => {
        signOut(e instanceof HttpError && e.status === 401 ? 'That token was refused (invalid or expired).' : (e.message || 'Sign-in failed.'));
      });
    });
    window.addEventListener('hashchange', () => { if (signedIn) route(); });
    // A stored token, or none: then try without one, for a reverse proxy
    // that adds the Authorization header itself. A service that cannot be
    // reached keeps the stored token and is tried again.
    const boot = () => {
      const stored = sessionStorage.getItem(TOKEN_KEY);
      signIn(stored).catch((e) => {
        if (e instanceof HttpError && e.status === 401) {
          signOut(stored ? 'Your token was refused or has expired; sign in again.' : undefined);
        } else if (e instanceof HttpError && e.status < 500) {
          signOut(e.message);
        } else {
          report(e);
          setTimeout(boot, 5000);
        }
      });
    };
    boot();
  }

  init();
})();
