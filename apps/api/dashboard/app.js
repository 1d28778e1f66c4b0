// imgbuilder dashboard: plain browser JavaScript, served as is (no build step, nothing loaded from elsewhere).
'use strict';

const $ = (sel) => document.querySelector(sel);
/** The log window a page renders at first; older bytes come with "load earlier", this much at a time. */
const WINDOW_BYTES = 256 * 1024;
/** While following a live log, the page keeps at most this many characters; older text goes behind "load earlier". */
const MAX_RENDERED_CHARS = 1024 * 1024;
// CSI, OSC and two-character escapes: builds print colours and progress bars the page does not render.
const ANSI = /\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()#][0-9A-Za-z]|\x1b[=>78cDEHM]/g;

const stripAnsi = (text) => text.replace(ANSI, '').replace(/\r(?!\n)/g, '\n');

const STATUS_TEXT = { queued: 'queued', running: 'running', done_success: 'succeeded', done_failure: 'failed' };

function fmtTime(ms) {
  return ms ? new Date(ms).toISOString().replace('T', ' ').slice(0, 19) + 'Z' : '';
}

function fmtDuration(ms) {
  if (ms === undefined || ms === null || ms < 0) return '';
  if (ms < 10_000) return `${(ms / 1000).toFixed(1)}s`;
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

function statusBadge(state) {
  return el('span', { class: `status ${state}`, text: STATUS_TEXT[state] || state });
}

async function fetchJson(url) {
  const res = await fetch(url, { credentials: 'same-origin', cache: 'no-store' });
  if (res.status === 401) {
    location.assign(`/login?next=${encodeURIComponent(location.pathname + location.search)}`);
    throw new Error('not logged in');
  }
  if (!res.ok) throw new Error((await res.json().catch(() => ({}))).error || `HTTP ${res.status}`);
  return res.json();
}

async function showWhoami() {
  const me = await fetchJson('/api/whoami').catch(() => undefined);
  if (me) $('#whoami').textContent = `${me.name} (${me.role})`;
}

// ---- builds page ----

function buildsPage() {
  const form = $('#filters');
  const params = new URLSearchParams(location.search);
  for (const name of ['status', 'ref', 'id']) if (params.has(name)) form.elements[name].value = params.get(name);
  let timer;
  let generation = 0;

  async function refresh() {
    clearTimeout(timer);
    const mine = ++generation;
    const q = new URLSearchParams();
    for (const name of ['status', 'ref', 'id']) if (form.elements[name].value) q.set(name, form.elements[name].value.trim());
    history.replaceState(null, '', q.toString() ? `/?${q}` : '/');
    q.set('limit', '200');
    try {
      const data = await fetchJson(`/api/builds?${q}`);
      if (mine === generation) renderBuilds(data);
    } catch (err) {
      $('#summary').textContent = `Could not load builds: ${err.message}`;
    }
    if (mine === generation) timer = setTimeout(refresh, 2000);
  }

  let debounce;
  form.addEventListener('input', () => {
    clearTimeout(debounce);
    debounce = setTimeout(refresh, 150);
  });
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    refresh();
  });
  refresh();
  charts();
  setInterval(charts, 10_000);
}

function renderBuilds({ builds, matched, total }) {
  const now = Date.now();
  const body = document.createDocumentFragment();
  for (const b of builds) {
    const end = b.finishedAt || (b.state === 'queued' ? undefined : now);
    const started = b.runningAt;
    const link = el('a', { href: `/builds/${b.id}` }, el('code', { text: b.ref }));
    const row = el(
      'tr',
      { 'data-build-id': b.id, 'data-state': b.state },
      el('td', {}, statusBadge(b.state)),
      el('td', {}, link),
      el('td', {}, el('code', { text: b.baseRef })),
      el('td', { text: b.triggeredBy }),
      el('td', { class: 'time', text: fmtTime(b.queuedAt) }),
      el('td', { class: 'time', text: fmtTime(started) }),
      el('td', { class: 'time', text: fmtTime(b.finishedAt) }),
      el('td', { class: 'time', text: end ? fmtDuration(end - b.queuedAt) : '' }),
    );
    if (b.state === 'done_failure' && b.message) row.title = b.message;
    body.append(row);
  }
  $('#builds tbody').replaceChildren(body);
  $('#summary').textContent = `${matched} of ${total} recent builds match${matched > builds.length ? `; showing the first ${builds.length}` : ''}. Updated ${new Date().toISOString().slice(11, 19)}Z.`;
}

const SVG = 'http://www.w3.org/2000/svg';
function svgEl(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  return e;
}

async function charts() {
  let data;
  try {
    data = await fetchJson('/api/charts');
  } catch {
    return;
  }
  const W = 600, H = 150, L = 28, B = 16, T = 6;
  const x = (i) => L + (i * (W - L)) / data.minutes.length;
  const axis = (svg, max) => {
    svg.append(svgEl('line', { x1: L, y1: H - B, x2: W, y2: H - B, stroke: '#d0d5dd' }));
    const label = (tx, ty, text, anchor = 'start') => {
      const t = svgEl('text', { x: tx, y: ty, 'text-anchor': anchor });
      t.textContent = text;
      svg.append(t);
    };
    label(L - 4, T + 8, String(max), 'end');
    label(L - 4, H - B, '0', 'end');
    label(L, H - 3, '-60 min');
    label(W, H - 3, 'now', 'end');
  };
  // Builds per minute by outcome: stacked bars.
  const outcomes = $('#chart-outcomes');
  outcomes.replaceChildren();
  const maxDone = Math.max(1, ...data.minutes.map((m) => m.success + m.failure));
  const scaleDone = (n) => (n * (H - B - T)) / maxDone;
  data.minutes.forEach((m, i) => {
    const w = (W - L) / data.minutes.length - 1;
    let y = H - B;
    for (const kind of ['success', 'failure']) {
      if (!m[kind]) continue;
      const h = scaleDone(m[kind]);
      y -= h;
      const r = svgEl('rect', { class: kind, x: x(i), y, width: w, height: h });
      const title = svgEl('title', {});
      title.textContent = `${fmtTime(m.t).slice(11, 16)}: ${m.success} succeeded, ${m.failure} failed`;
      r.append(title);
      outcomes.append(r);
    }
  });
  axis(outcomes, maxDone);
  // Queue depth: two lines.
  const queue = $('#chart-queue');
  queue.replaceChildren();
  const maxQ = Math.max(1, ...data.minutes.map((m) => Math.max(m.queued, m.running)));
  // Minutes without a sample (no API pod was up) are gaps, not zeros.
  for (const kind of ['queued', 'running']) {
    let run = [];
    const flush = () => {
      if (run.length) queue.append(svgEl('polyline', { class: kind, points: run.join(' ') }));
      run = [];
    };
    data.minutes.forEach((m, i) => {
      if (m[kind] === null) return flush();
      run.push(`${x(i) + 4},${H - B - (m[kind] * (H - B - T)) / maxQ}`);
      if (run.length === 1) run.push(`${x(i) + 8},${H - B - (m[kind] * (H - B - T)) / maxQ}`);
    });
    flush();
  }
  axis(queue, maxQ);
}

// ---- build page ----

function buildPage() {
  const id = decodeURIComponent(location.pathname.split('/').pop());
  $('#build-id').textContent = id;
  document.title = `imgbuilder · build ${id.slice(0, 8)}`;
  const log = $('#log');
  const earlier = $('#load-earlier');
  /** Byte offset of the first byte the page holds. */
  let from = 0;
  let ended = false;
  /** Characters the log holds (log.textContent.length, kept as it changes rather than measured per message). */
  let chars = 0;

  const atBottom = () => log.scrollHeight - log.scrollTop - log.clientHeight < 40;

  function append(text, bytes) {
    const follow = atBottom();
    const node = document.createTextNode(stripAnsi(text));
    node.bytes = bytes;
    log.append(node);
    chars += node.length;
    // Keep the page light while following a long build: old text leaves the DOM (and comes back with "load earlier").
    while (chars > MAX_RENDERED_CHARS && log.firstChild && log.firstChild !== node) {
      const first = log.firstChild;
      chars -= first.textContent.length;
      from += first.bytes || 0;
      first.remove();
      earlier.hidden = false;
    }
    if (follow) log.scrollTop = log.scrollHeight;
  }

  async function refreshBuild() {
    const d = await fetchJson(`/api/builds/${encodeURIComponent(id)}`);
    renderBuild(d.build);
    if (d.logUrl) $('#log-link').href = d.logUrl;
    renderTrace(d.trace);
    return d;
  }

  // cancel-button.js, loaded before this file.
  wireCancelButton(id, () => refreshBuild().catch(() => undefined));

  earlier.addEventListener('click', async () => {
    const start = Math.max(0, from - WINDOW_BYTES);
    const res = await fetch(`/api/builds/${encodeURIComponent(id)}/log/range?start=${start}&end=${from}`, { credentials: 'same-origin' });
    if (!res.ok) return;
    const text = await res.text();
    const node = document.createTextNode(stripAnsi(text));
    node.bytes = from - start;
    const keep = log.scrollHeight - log.scrollTop;
    log.prepend(node);
    chars += node.length;
    log.scrollTop = log.scrollHeight - keep;
    from = start;
    earlier.hidden = from === 0;
  });

  (async () => {
    const d = await refreshBuild();
    from = d.logSize > WINDOW_BYTES ? d.logSize - WINDOW_BYTES : 0;
    earlier.hidden = from === 0;
    $('#log-state').textContent = 'loading…';
    // A dropped connection resumes after the last byte received, so nothing is shown twice.
    let next = from;
    const open = () => {
      const es = new EventSource(`/api/builds/${encodeURIComponent(id)}/log?from=${next}`);
      es.addEventListener('log', (e) => {
        const { t, n } = JSON.parse(e.data);
        next += n;
        append(t, n);
        if (!ended) $('#log-state').textContent = 'following';
      });
      es.addEventListener('end', (e) => {
        es.close();
        ended = true;
        const s = JSON.parse(e.data);
        $('#log-state').textContent = `ended: ${STATUS_TEXT[s.state] || s.state}`;
        log.dataset.ended = s.state;
        refreshBuild();
      });
      es.addEventListener('failure', (e) => {
        es.close();
        $('#log-state').textContent = `log unavailable: ${JSON.parse(e.data).error}`;
      });
      es.onerror = () => {
        es.close();
        if (ended) return;
        $('#log-state').textContent = 'reconnecting…';
        setTimeout(open, 2000);
      };
    };
    open();
    // Stage timings and status while the build runs.
    const poll = setInterval(() => (ended ? clearInterval(poll) : refreshBuild().catch(() => undefined)), 2000);
  })().catch((err) => {
    $('#log-state').textContent = err.message;
  });
}

/** The build's trace id (W3C), linked to IMGBUILDER_TRACE_URL when the API has one. */
function renderTrace(t) {
  const dd = $('#trace');
  if (!t) return;
  const code = el('code', { text: t.id });
  dd.replaceChildren(t.url ? el('a', { href: t.url, rel: 'noreferrer', target: '_blank' }, code) : code);
}

function renderBuild(b) {
  const status = $('#status');
  status.className = `status ${b.state}`;
  status.textContent = STATUS_TEXT[b.state] || b.state;
  status.dataset.state = b.state;
  showCancelButton(b.state);
  $('#ref').textContent = b.ref;
  $('#base-ref').textContent = b.baseRef;
  $('#triggered-by').textContent = b.triggeredBy || '—';
  $('#queued-at').textContent = fmtTime(b.queuedAt);
  $('#finished-at').textContent = fmtTime(b.finishedAt) || '—';
  const message = $('#message');
  message.hidden = !b.message;
  message.textContent = b.message;
  const now = Date.now();
  const end = b.finishedAt || now;
  // Each stage runs from its mark to the next one present; a build without an image build (a copy) has no "build".
  const marks = [
    ['queued', b.queuedAt],
    ['source', b.runningAt],
    ['build', b.buildAt],
    ['push', b.pushAt],
  ];
  const rows = [];
  for (let i = 0; i < marks.length; i++) {
    const [name, began] = marks[i];
    if (!began) continue;
    const next = marks.slice(i + 1).find(([, t]) => t);
    const until = next ? next[1] : end;
    rows.push({ name, began, took: Math.max(0, until - began), open: !next && !b.finishedAt });
  }
  const total = Math.max(1, ...rows.map((r) => r.took));
  const body = document.createDocumentFragment();
  for (const r of rows) {
    const bar = el('div', { class: 'bar' });
    bar.style.width = `${Math.max(0.5, (100 * r.took) / total)}%`;
    body.append(el('tr', { 'data-stage': r.name }, el('td', { text: r.name }), el('td', { class: 'time', text: fmtTime(r.began) }), el('td', { text: fmtDuration(r.took) + (r.open ? ' …' : '') }), el('td', { class: 'barcell' }, bar)));
  }
  $('#stages tbody').replaceChildren(body);
}

// ---- login page ----

function loginPage() {
  const next = new URLSearchParams(location.search).get('next');
  if (next) $('#login').elements.next.value = next;
}

const pages = { builds: buildsPage, build: buildPage, login: loginPage };
const page = document.body.dataset.page;
if (page !== 'login') showWhoami();
pages[page]?.();
