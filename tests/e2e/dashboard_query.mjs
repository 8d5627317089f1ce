// Drives headless Chromium through the dashboard's period, comparison and filters (answered by the Query API v2) at
// one viewport, and prints one JSON object of what the page showed after each step; the Python test asserts the values.
//
// Env: DASHBOARD_URL (required, .../_trackside/), TOKEN (required: a moderator's), VIEWPORT ("1280x800"),
// CHROMIUM, SCREENSHOT_DIR (optional: PNGs of the viewport there), SHOT_PREFIX ("desktop"), COLOR_SCHEME ("dark"
// for the dark theme), DASHBOARD_TIMEOUT_MS.
import { join } from 'node:path';

import { browserRun } from './browser.mjs';

const URL_ = process.env.DASHBOARD_URL || '';
const TOKEN = process.env.TOKEN || '';
const [WIDTH, HEIGHT] = (process.env.VIEWPORT || '1280x800').split('x').map(Number);
const SCREENSHOT_DIR = process.env.SCREENSHOT_DIR || '';
const SHOT_PREFIX = process.env.SHOT_PREFIX || 'desktop';
const TIMEOUT_MS = Number(process.env.DASHBOARD_TIMEOUT_MS || 90000);
const WAIT = { timeout: 20000 };

if (!URL_ || !TOKEN) {
  console.error('dashboard_query.mjs: DASHBOARD_URL and TOKEN are required');
  process.exit(2);
}

const run = browserRun('dashboard_query.mjs', TIMEOUT_MS);
const out = { steps: {} }; // printed on stderr too when a step fails, to show how far it got

// What the overview shows (runs in the page).
function collect() {
  const text = (el) => (el ? el.textContent.trim() : null);
  const all = (sel, root = document) => Array.from(root.querySelectorAll(sel));
  const kpis = {};
  for (const el of all('.kpis-v2 [data-kpi]')) {
    const delta = el.querySelector('.delta');
    kpis[el.dataset.kpi] = { value: text(el.querySelector('.kpi-value')), delta: delta ? delta.dataset.delta : null,
      note: text(el.querySelector('.kpi-note')) };
  }
  const lists = {};
  for (const el of all('[data-list]')) {
    lists[el.dataset.list] = el.dataset.empty ? { empty: text(el) } : all('li', el).map((li) => [li.dataset.key,
      Number(li.dataset.value), li.classList.contains('active')]);
  }
  const chart = document.querySelector('[data-chart="period"]');
  const series = {};
  for (const g of all('[data-series]', chart || document.createElement('div'))) {
    const marks = all('circle.pt', g);
    series[g.dataset.series] = { keys: marks.map((m) => m.dataset.key), values: marks.map((m) => Number(m.dataset.value)),
      dashed: Boolean(g.querySelector('.line.dashed')) };
  }
  const sub = (name) => text(document.querySelector(`[data-panel="${name}"] .card-sub`));
  return {
    ready: document.querySelector('#app').dataset.ready || null,
    hash: location.hash,
    period: document.querySelector('[data-control="period"]') ? document.querySelector('[data-control="period"]').value : null,
    compare: document.querySelector('[data-control="compare"]') ? document.querySelector('[data-control="compare"]').checked : null,
    range: document.querySelector('[data-range]') ? document.querySelector('[data-range]').dataset.range : null,
    range_text: text(document.querySelector('[data-range]')),
    chips: all('.chip').map((c) => [c.dataset.filter, text(c.querySelector('.chip-dim')), text(c.querySelector('.chip-value'))]),
    retention: text(document.querySelector('[data-note="retention"]')),
    looks_only: text(document.querySelector('[data-note="looks-only"]')),
    kpis,
    lists,
    pages_sub: sub('pages'),
    chart: series,
    overflow_x: document.scrollingElement.scrollWidth - window.innerWidth,
  };
}

async function main() {
  const context = await run.start({ viewport: { width: WIDTH, height: HEIGHT },
    colorScheme: process.env.COLOR_SCHEME === 'dark' ? 'dark' : 'light' });
  const page = context.pages()[0] || (await context.newPage());
  const problems = [];
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  out.refused = 0; // 400s: the query engine's answer to the dashboard asking whether it has `time_on_page`
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    if (/^Failed to load resource: the server responded with a status of 400 /.test(m.text())) out.refused += 1;
    else problems.push(`console: ${m.text()}`);
  });
  page.on('request', (req) => {
    if (req.method() === 'POST' && req.postData().includes('time_on_page')) out.time_on_page_asked = (out.time_on_page_asked || 0) + 1;
  });
  out.problems = problems;

  // A step: do something, then wait until a new overview is drawn (the page element is replaced on every draw).
  const step = async (name, action) => {
    await page.evaluate(() => { window.__before = document.querySelector('#app .page'); });
    await action();
    await page.waitForFunction(() => {
      const app = document.querySelector('#app');
      const current = app.querySelector('.page');
      return app.dataset.ready === 'overview' && current && current !== window.__before;
    }, null, WAIT);
    out.steps[name] = await page.evaluate(collect);
  };
  const shot = async (name) => {
    if (!SCREENSHOT_DIR) return;
    await page.evaluate(() => window.scrollTo({ top: 0 })); // the top of the view: period, chips, cards
    await page.mouse.move(1, 1);
    await page.screenshot({ path: join(SCREENSHOT_DIR, `dashboard-${SHOT_PREFIX}-${name}.png`) });
  };

  // A shared link opens the view it names once signed in.
  await page.goto(`${URL_}#/?period=7d`, { waitUntil: 'load' });
  await page.waitForSelector('#app[data-ready="login"]', WAIT);
  await step('d7', async () => {
    await page.fill('#token', TOKEN);
    await page.click('form.login button[type="submit"]');
  });
  await step('d7_compare', () => page.click('[data-control="compare"]'));
  await step('d30_compare', () => page.selectOption('[data-control="period"]', '30d'));
  await shot('compare');
  await step('source', () => page.click('[data-list="sources"] li[data-key="Reddit"]'));
  await step('label', () => page.click('[data-list="pages"] li[data-key="/p/[post]"]'));
  await shot('filters');
  await step('reloaded', () => page.reload({ waitUntil: 'load' }));
  await step('path', () => page.click('[data-list="pages"] li[data-key="/p/b2"]'));
  await step('no_source', () => page.click('.chip[data-filter^="visit:source|"] .chip-remove'));
  await step('cleared', () => page.click('[data-action="clear-filters"]'));
  await step('goal', () => page.click('[data-list="goals"] li[data-key="signup"]'));
  await step('goal_removed', () => page.click('.chip .chip-remove'));
  await step('player', () => page.click('[data-list="view_types"] li[data-key="player"]'));
  await step('player_removed', () => page.click('.chip .chip-remove'));
  // The item page's views by type open the overview filtered on the item and that view type.
  await page.evaluate(() => { location.hash = '#/item/artwork/a1'; });
  await page.waitForSelector('#app[data-ready="item"] [data-list="types"] li[data-key="player"]', WAIT);
  await step('item_player', () => page.click('[data-list="types"] li[data-key="player"]'));
  await page.evaluate(() => { location.hash = '#/?period=30d&compare=1'; });
  await page.waitForSelector('#app[data-ready="overview"] [data-control="compare"]:checked', WAIT);
  await step('os', () => page.click('[data-list="os"] li[data-key="iOS"]'));
  await step('os_removed', () => page.click('.chip .chip-remove'));
  await step('year', () => page.selectOption('[data-control="period"]', '12mo'));
  await step('custom', async () => {
    await page.selectOption('[data-control="period"]', 'custom');
    await page.fill('[data-control="from"]', process.env.CUSTOM_FROM);
    await page.fill('[data-control="to"]', process.env.CUSTOM_TO);
    await page.click('[data-control="apply"]');
  });
  await step('yesterday', () => page.selectOption('[data-control="period"]', 'yesterday'));
  await step('today', () => page.selectOption('[data-control="period"]', 'today'));
  // A share link carries its token in the fragment: signed in, and the token leaves the address bar.
  await page.evaluate(() => sessionStorage.clear());
  await step('share_link', () => page.goto(`${URL_}#token=${encodeURIComponent(TOKEN)}`, { waitUntil: 'load' }));
  out.share_link_token_kept = await page.evaluate(() => sessionStorage.getItem('trackside.token') !== null);
  return out;
}

try {
  await main();
  await run.close();
  process.stdout.write(`${JSON.stringify(out)}\n`);
  process.exit(0);
} catch (error) {
  console.error(`dashboard_query.mjs: ${error && error.stack ? error.stack : error}`);
  console.error(JSON.stringify(out.steps));
  await run.close();
  process.exit(1);
}
