// One cold load of the dashboard's overview in headless Chromium (a fresh profile: nothing cached), timed from the
// navigation's start until every panel is filled; prints JSON. Driven by bench/dashboard_bench.py.
//
// "Filled", read from the DOM: a panel (`[data-panel]`, the definitions aside) holds rows (`[data-list] li`,
// `tbody tr`), a drawn chart (`svg.chart-svg`) or an explicit empty state (`[data-empty]`), or, for a panel that
// loads by itself, its `data-*-state` is no longer "loading" (ready, empty or error); the key figure rows
// (`.kpis-v2`, `.kpis-poster`) are filled when every card has a value. Every request the page makes through fetch
// is timed too (start, headers, body read), named after what it asks (a v2 query by its dimension).
//
// Env: DASHBOARD_URL (.../_trackside/), TOKEN (a moderator's), CHROMIUM, VIEWPORT ("1280x800"), BENCH_TIMEOUT_MS.
import { browserRun } from '../tests/e2e/browser.mjs';

const URL_ = process.env.DASHBOARD_URL || '';
const TOKEN = process.env.TOKEN || '';
const [WIDTH, HEIGHT] = (process.env.VIEWPORT || '1280x800').split('x').map(Number);
const TIMEOUT_MS = Number(process.env.BENCH_TIMEOUT_MS || 120000);

if (!URL_ || !TOKEN) {
  console.error('dashboard_bench.mjs: DASHBOARD_URL and TOKEN are required');
  process.exit(2);
}

// Runs in the page before its scripts: times every fetch and watches the DOM for filled panels.
function instrument() {
  const requests = [];
  const filled = {};
  window.__bench = { requests, filled, done: null };
  const original = window.fetch;
  window.fetch = async function timedFetch(input, init) {
    const rec = { url: String(input && input.url ? input.url : input), body: init && init.body ? String(init.body) : null,
      start: performance.now() };
    requests.push(rec);
    const response = await original.call(this, input, init);
    rec.status = response.status;
    rec.headers = performance.now();
    response.clone().arrayBuffer().then(() => { rec.end = performance.now(); }, () => {});
    return response;
  };
  const FILLED = '[data-list] li, table tbody tr, svg.chart-svg, [data-empty]';
  const check = () => {
    const app = document.querySelector('#app');
    if (!app) return;
    const now = performance.now();
    for (const el of document.querySelectorAll('#app [data-panel]')) {
      const name = el.dataset.panel;
      if (name === 'definitions' || filled[name] !== undefined) continue;
      // Panels that load by themselves (funnels, journeys, retention) say so: `data-<name>-state` "loading",
      // then "ready", "empty" or "error"; any other state is an answer.
      const states = Array.from(el.querySelectorAll('div, section')).flatMap((d) => Object.entries(d.dataset)
        .filter(([k]) => /^[a-z]+State$/.test(k)).map(([, v]) => v));
      if (states.includes('loading')) continue;
      if (states.length || el.querySelector(FILLED)) filled[name] = now;
    }
    for (const [name, sel] of [['cards', '.kpis-v2'], ['poster_cards', '.kpis-poster']]) {
      const row = document.querySelector(`#app ${sel}`);
      if (!row || filled[name] !== undefined) continue;
      const values = Array.from(row.querySelectorAll('.kpi-value'));
      if (values.length && values.every((v) => v.textContent.trim() !== '')) filled[name] = now;
    }
    if (app.dataset.ready === 'overview' && window.__bench.done === null) {
      const names = Array.from(document.querySelectorAll('#app [data-panel]')).map((el) => el.dataset.panel)
        .filter((n) => n !== 'definitions').concat(['cards', 'poster_cards']);
      if (names.every((n) => filled[n] !== undefined)) window.__bench.done = { at: now, panels: names };
    }
  };
  new MutationObserver(check).observe(document, { childList: true, subtree: true, attributes: true });
}

// What a request asks, in the panel names of the page.
const V2_NAMES = {
  'event:props:label': 'pages', 'event:page': 'pages', 'visit:entry_page': 'entry_pages',
  'visit:exit_page': 'exit_pages', 'visit:source': 'sources', 'visit:referrer': 'referrers',
  'visit:country': 'countries', 'visit:utm_source': 'utm_source', 'visit:utm_medium': 'utm_medium',
  'visit:utm_campaign': 'utm_campaign', 'visit:device': 'devices', 'visit:browser': 'browsers', 'visit:os': 'os',
  'event:goal': 'goals', 'event:props:view_type': 'view_types', 'event:props:content_id': 'items',
};

function requestName(rec) {
  const path = new URL(rec.url, URL_).pathname.replace(/^.*\/_trackside\//, '');
  if (path === 'api/v2/batch') return 'v2 batch';
  if (path === 'api/v2/query' && rec.body) {
    const body = JSON.parse(rec.body);
    const dim = (body.dimensions || [])[0];
    if (!dim) return 'v2 cards';
    if (dim.startsWith('time:')) return `v2 chart (${dim})`;
    return `v2 ${V2_NAMES[dim] || dim}`;
  }
  const query = new URL(rec.url, URL_).search;
  return `${path.replace(/^api\//, '')}${query.includes('kind=') ? ` ${/kind=([a-z_]+)/.exec(query)[1]}` : ''}`;
}

const run = browserRun('dashboard_bench.mjs', TIMEOUT_MS);
try {
  const context = await run.start({ viewport: { width: WIDTH, height: HEIGHT } });
  await context.addInitScript(instrument);
  const page = context.pages()[0] || (await context.newPage());
  const problems = [];
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
  const wall = Date.now();
  await page.goto(`${URL_}#token=${encodeURIComponent(TOKEN)}`, { waitUntil: 'commit' });
  // Not filled within the time given: what was filled by then, and the requests still waiting, are printed.
  const timedOut = await page.waitForFunction(() => window.__bench && window.__bench.done, null,
    { timeout: TIMEOUT_MS - 15000, polling: 50 }).then(() => false, () => true);
  const got = await page.evaluate(() => {
    const nav = performance.getEntriesByType('navigation')[0];
    const script = performance.getEntriesByType('resource').find((r) => r.name.endsWith('/app.js'));
    const present = Array.from(document.querySelectorAll('#app [data-panel]')).map((el) => el.dataset.panel);
    return { ...window.__bench, present, ready: document.querySelector('#app').dataset.ready || null,
      domContentLoaded: nav ? nav.domContentLoadedEventEnd : null,
      appJs: script ? script.responseEnd : null };
  });
  const round = (ms) => (ms === undefined || ms === null ? null : Math.round(ms));
  const out = {
    all_filled_ms: timedOut ? null : round(got.done.at),
    timed_out_ms: timedOut ? TIMEOUT_MS - 15000 : null,
    unfilled: timedOut ? { ready: got.ready, panels: got.present.filter((n) => n !== 'definitions' && got.filled[n] === undefined) } : null,
    wall_ms: Date.now() - wall,
    dom_content_loaded_ms: round(got.domContentLoaded),
    app_js_ms: round(got.appJs),
    panels: timedOut ? Object.fromEntries(Object.entries(got.filled).map(([n, at]) => [n, round(at)]))
      : Object.fromEntries(got.done.panels.map((n) => [n, round(got.filled[n])])),
    requests: got.requests.map((r) => ({ what: requestName(r), status: r.status, start_ms: round(r.start),
      headers_ms: round(r.headers), end_ms: round(r.end), url: r.url, body: r.body })),
    problems,
  };
  console.log(JSON.stringify(out));
  await run.close();
} catch (error) {
  console.error(error && error.stack ? error.stack : error);
  await run.close();
  process.exit(1);
}
