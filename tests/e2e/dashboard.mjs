// Drives headless Chromium (Debian's, through playwright-core) through the built-in dashboard at /_trackside/ and
// prints one JSON summary on stdout of what the page shows: the login, the KPIs, the charts' SVG points and bars, the
// bar lists, the bot panel, the signed-in toggle, an item page, sign-out. The Python test asserts the values.
//
// Env: DASHBOARD_URL (required, e.g. http://127.0.0.1:8080/_trackside/), TOKEN (required: a moderator's), BAD_TOKEN
// and FORBIDDEN_TOKEN (optional: tried first, each must bring the login back with a reason), ADMIN_TOKEN (optional:
// signs in again after sign-out), ITEM (optional, "artwork/a1": the popular item to click through to), CHROMIUM
// (default /usr/bin/chromium), SCREENSHOT_DIR (optional: full-page PNGs there; never inside the repository),
// DASHBOARD_TIMEOUT_MS (default 60000). Exits non-zero on any failure.
import { join } from 'node:path';

import { browserRun } from './browser.mjs';

const URL_ = process.env.DASHBOARD_URL || '';
const TOKEN = process.env.TOKEN || '';
const BAD_TOKEN = process.env.BAD_TOKEN || '';
const FORBIDDEN_TOKEN = process.env.FORBIDDEN_TOKEN || '';
const ADMIN_TOKEN = process.env.ADMIN_TOKEN || '';
const ITEM = process.env.ITEM || '';
const SCREENSHOT_DIR = process.env.SCREENSHOT_DIR || '';
const TIMEOUT_MS = Number(process.env.DASHBOARD_TIMEOUT_MS || 60000);
const WAIT = { timeout: 20000 };

if (!URL_ || !TOKEN) {
  console.error('dashboard.mjs: DASHBOARD_URL and TOKEN are required');
  process.exit(2);
}

const run = browserRun('dashboard.mjs', TIMEOUT_MS);

// Everything the page shows, read from the DOM (runs in the page).
function collect() {
  const text = (el) => (el ? el.textContent.trim() : null);
  const all = (sel, root = document) => Array.from(root.querySelectorAll(sel));
  const chart = (name) => {
    const root = document.querySelector(`[data-chart="${name}"]`);
    if (!root) return null;
    const series = {};
    for (const g of all('[data-series]', root)) {
      const marks = all('circle.pt, rect.bar', g);
      series[g.dataset.series] = {
        count: marks.length,
        keys: marks.map((m) => m.dataset.key),
        values: marks.map((m) => Number(m.dataset.value)),
        tag: marks.length ? marks[0].tagName.toLowerCase() : null,
      };
    }
    return {
      empty: Boolean(root.querySelector('[data-empty]')),
      empty_text: text(root.querySelector('.empty-title')),
      svg: all('svg', root).length,
      svg_width: root.querySelector('svg') ? root.querySelector('svg').getBoundingClientRect().width : 0,
      tick_labels: all('text.tick', root).map((t) => t.textContent),
      series,
    };
  };
  const lists = {};
  for (const el of all('[data-list]')) {
    const name = el.dataset.list;
    if (el.dataset.empty) {
      lists[name] = { empty: true, text: text(el) };
    } else if (el.tagName === 'TABLE') {
      lists[name] = all('tbody tr', el).map((tr) => ({
        key: tr.dataset.key,
        value: Number(tr.dataset.value),
        cells: all('td', tr).map((td) => td.textContent.trim()),
        href: tr.querySelector('a') ? tr.querySelector('a').getAttribute('href') : null,
      }));
    } else {
      lists[name] = all('li', el).map((li) => ({
        key: li.dataset.key,
        value: Number(li.dataset.value),
        label: text(li.querySelector('.bar-label')),
        shown: li.offsetParent !== null,
      }));
    }
  }
  const kpis = {};
  for (const el of all('[data-kpi]')) {
    kpis[el.dataset.kpi] = {
      value: text(el.querySelector('.kpi-value')),
      note: text(el.querySelector('.kpi-note')),
      tag: text(el.querySelector('.tag')),
      help: text(el.querySelector('.help-tip')),
    };
  }
  const bots = document.querySelector('[data-panel="bots"]');
  return {
    ready: document.querySelector('#app').dataset.ready || null,
    mode: document.body.dataset.mode || null,
    hash: location.hash,
    title: text(document.querySelector('.item-title')),
    banner: text(document.querySelector('.banner')),
    toggle: all('.segmented button').map((b) => [b.dataset.mode, b.getAttribute('aria-pressed')]),
    kpis,
    charts: { daily: chart('daily'), period: chart('period'), hourly: chart('hourly'), bots: chart('bots') },
    lists,
    bots: bots ? {
      heading: text(bots.querySelector('h2')),
      total: text(bots.querySelector('[data-bots-total]')),
      note: text(bots.querySelector('.card-sub')),
      after_everything_else: !bots.nextElementSibling || bots.nextElementSibling.matches('.definitions'),
    } : null,
    notes: all('.card-note').map((n) => n.textContent.trim()),
    definitions: all('.defs dt').map((d) => d.textContent.trim()),
    empty_titles: all('.empty-title').map((e) => e.textContent.trim()),
    xss: { flag: window.__xss === undefined ? null : window.__xss, imgs: all('img').length,
      scripts: all('script').map((s) => s.getAttribute('src')), handlers: all('[onload],[onerror]').length },
    overflow_x: document.scrollingElement.scrollWidth - window.innerWidth,
    stored_token: sessionStorage.getItem('trackside.token') !== null,
    footer: text(document.querySelector('#foot')),
  };
}

async function signIn(page, token) {
  await page.waitForSelector('#app[data-ready="login"] form.login', WAIT);
  await page.fill('#token', token);
  await page.click('form.login button[type="submit"]');
}

async function loginAfterRefusal(page, token) {
  await signIn(page, token);
  // The login comes back, with the reason.
  await page.waitForSelector('#app[data-ready="login"] .login-error', WAIT);
  return page.evaluate(() => ({
    ready: document.querySelector('#app').dataset.ready,
    error: document.querySelector('.login-error').textContent,
    stored_token: sessionStorage.getItem('trackside.token') !== null,
    topbar_hidden: document.querySelector('#topbar').hidden,
  }));
}

async function shot(page, name) {
  if (SCREENSHOT_DIR) await page.screenshot({ path: join(SCREENSHOT_DIR, `${name}.png`), fullPage: true });
}

async function main() {
  const context = await run.start({ viewport: { width: 1360, height: 900 } });
  const page = context.pages()[0] || (await context.newPage());
  const problems = [];
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    // The refused tokens (401, 403) and the missing item (404) are answers the page expects and shows; a 400 is the
    // query engine's answer to the dashboard asking whether it has `time_on_page` (once a tab session).
    const expected = /^Failed to load resource: the server responded with a status of 40[0134] /;
    if (m.type() === 'error' && !expected.test(m.text())) problems.push(`console: ${m.text()}`);
  });
  const origin = new URL(URL_).origin;
  const requests = [];
  page.on('request', (req) => {
    const u = new URL(req.url());
    requests.push({
      origin: u.origin, path: u.pathname, query: u.search, auth: (req.headers().authorization || '').split(' ')[0],
    });
  });

  const out = { problems };
  await page.goto(URL_, { waitUntil: 'load' });
  await page.waitForSelector('#app[data-ready="login"]', WAIT);
  out.first = await page.evaluate(() => ({
    ready: document.querySelector('#app').dataset.ready,
    heading: document.querySelector('.login h1').textContent,
    error: document.querySelector('.login-error') ? document.querySelector('.login-error').textContent : null,
    topbar_hidden: document.querySelector('#topbar').hidden,
  }));
  await shot(page, 'login');
  if (BAD_TOKEN) out.bad_token = await loginAfterRefusal(page, BAD_TOKEN);
  if (FORBIDDEN_TOKEN) out.forbidden_token = await loginAfterRefusal(page, FORBIDDEN_TOKEN);
  if (BAD_TOKEN) await shot(page, 'login-refused');

  await signIn(page, TOKEN);
  await page.waitForSelector('#app[data-ready="overview"]', WAIT);
  out.overview = await page.evaluate(collect);
  await shot(page, 'overview');

  // Hover the period's chart over its last point: the tooltip shows that day's values.
  const daily = await page.$('[data-chart="period"] svg');
  if (daily) {
    const box = await daily.boundingBox();
    await page.mouse.move(box.x + box.width - 16, box.y + box.height / 2);
    await page.waitForSelector('[data-chart="period"] .tip:not([hidden])', WAIT);
    out.daily_tip = await page.$eval('[data-chart="period"] .tip', (t) => Array.from(t.children).map((c) => c.textContent));
    await page.mouse.move(2, 2);
  }
  const hourly = await page.$('[data-chart="hourly"] svg');
  if (hourly) {
    const box = await hourly.boundingBox();
    await page.mouse.move(box.x + box.width - 14, box.y + box.height / 2);
    await page.waitForSelector('[data-chart="hourly"] .tip:not([hidden])', WAIT);
    out.hourly_tip = await page.$eval('[data-chart="hourly"] .tip', (t) => Array.from(t.children).map((c) => c.textContent));
    await page.mouse.move(2, 2);
  }

  await page.click('.segmented button[data-mode="auth"]');
  await page.waitForSelector('body[data-mode="auth"] #app[data-ready="overview"]', WAIT);
  out.signed_in = await page.evaluate(collect);
  await shot(page, 'overview-signed-in');
  await page.click('.segmented button[data-mode="all"]');
  await page.waitForSelector('body[data-mode="all"] #app[data-ready="overview"]', WAIT);
  out.back_to_all = await page.evaluate(() => document.querySelector('[data-kpi="pageviews"] .kpi-value').textContent);

  // A narrow screen: the charts fit, nothing scrolls sideways.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.waitForTimeout(300);
  out.narrow = await page.evaluate(collect);
  await shot(page, 'overview-narrow');
  await page.setViewportSize({ width: 1360, height: 900 });
  await page.waitForTimeout(200);

  if (ITEM) {
    const [kind, id] = ITEM.split('/');
    await page.click(`[data-list="popular-${kind}"] tr[data-key="${id}"] a`);
    await page.waitForSelector(`#app[data-ready="item"] [data-item="${kind}/${id}"]`, WAIT);
    out.item = await page.evaluate(collect);
    await shot(page, 'item');
    await page.click('.segmented button[data-mode="auth"]');
    await page.waitForSelector('body[data-mode="auth"] #app[data-ready="item"]', WAIT);
    out.item_signed_in = await page.evaluate(collect);
    await page.click('.segmented button[data-mode="all"]');
    await page.waitForSelector('body[data-mode="all"] #app[data-ready="item"]', WAIT);

    // A reload keeps the sign-in (sessionStorage) and the page (the hash).
    await page.reload({ waitUntil: 'load' });
    await page.waitForSelector(`#app[data-ready="item"] [data-item="${kind}/${id}"]`, WAIT);
    out.item_reloaded = await page.evaluate(collect);

    await page.evaluate(() => { location.hash = '#/item/artwork/no-such-item'; });
    await page.waitForSelector('#app[data-ready="item"] [data-item="artwork/no-such-item"]', WAIT);
    out.missing_item = await page.evaluate(collect);
    await shot(page, 'item-missing');

    await page.click('.crumbs a');
    await page.waitForSelector('#app[data-ready="overview"]', WAIT);
    out.back_to_overview = await page.evaluate(() => location.hash);
  }

  // The Refresh button loads the overview again, asking past the server's cache.
  await page.waitForSelector('#app[data-ready="overview"]', WAIT);
  const beforeRefresh = requests.length;
  await page.click('[data-action="refresh"]');
  await page.waitForSelector('#app[data-ready="overview"]', WAIT);
  out.refresh = requests.slice(beforeRefresh).filter((r) => r.path.includes('/api/')).map((r) => r.path + r.query).sort();

  await page.click('[data-action="signout"]');
  await page.waitForSelector('#app[data-ready="login"]', WAIT);
  out.signed_out = await page.evaluate(() => ({
    stored_token: sessionStorage.getItem('trackside.token') !== null,
    error: document.querySelector('.login-error') ? document.querySelector('.login-error').textContent : null,
  }));

  if (ADMIN_TOKEN) {
    await signIn(page, ADMIN_TOKEN);
    await page.waitForSelector('#app[data-ready="overview"]', WAIT);
    out.admin = await page.evaluate(() => document.querySelector('[data-kpi="pageviews"] .kpi-value').textContent);
  }

  out.requests = {
    other_origins: requests.filter((r) => r.origin !== origin).map((r) => `${r.origin}${r.path}`),
    api_without_bearer: requests.filter((r) => r.path.includes('/api/') && r.auth !== 'Bearer').map((r) => r.path),
    api: requests.filter((r) => r.path.includes('/api/')).length,
    paths: [...new Set(requests.map((r) => r.path))].sort(),
  };
  return out;
}

try {
  const out = await main();
  await run.close();
  process.stdout.write(`${JSON.stringify(out)}\n`);
  process.exit(0);
} catch (error) {
  console.error(`dashboard.mjs: ${error && error.stack ? error.stack : error}`);
  await run.close();
  process.exit(1);
}
