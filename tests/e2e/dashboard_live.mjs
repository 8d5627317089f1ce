// Drives headless Chromium through the dashboard's goals (their conversions, adding and removing one), a panel's CSV
// export and the live view, and prints one JSON object of what the page showed; the Python test asserts the values.
// Half-way, before the live view's update, it prints `{"await": "event"}` and waits for a line on stdin: the test
// stores a new page view then, and the live view must show it without a reload.
//
// Env: DASHBOARD_URL (required, .../_trackside/), TOKEN (required: a moderator's), VIEWPORT ("1280x800"), CHROMIUM,
// DASHBOARD_TIMEOUT_MS, SCREENSHOT_DIR (optional: PNGs of the goals panel and the live view there).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

import { browserRun } from './browser.mjs';

const URL_ = process.env.DASHBOARD_URL || '';
const TOKEN = process.env.TOKEN || '';
const [WIDTH, HEIGHT] = (process.env.VIEWPORT || '1280x800').split('x').map(Number);
const SCREENSHOT_DIR = process.env.SCREENSHOT_DIR || '';
const TIMEOUT_MS = Number(process.env.DASHBOARD_TIMEOUT_MS || 90000);
const WAIT = { timeout: 20000 };

if (!URL_ || !TOKEN) {
  console.error('dashboard_live.mjs: DASHBOARD_URL and TOKEN are required');
  process.exit(2);
}

const run = browserRun('dashboard_live.mjs', TIMEOUT_MS);
const out = { steps: {} };
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

// The goals panel and the live view as shown (runs in the page).
function collect() {
  const text = (el) => (el ? el.textContent.trim() : null);
  const all = (sel, root = document) => Array.from(root.querySelectorAll(sel));
  const list = (name) => {
    const el = document.querySelector(`[data-list="${name}"]`);
    if (!el) return null;
    if (el.dataset.empty) return { empty: text(el) };
    return all('li', el).map((li) => [li.dataset.key, Number(li.dataset.value),
      li.querySelector('.bar-detail') ? li.querySelector('.bar-detail').dataset.detail : null]);
  };
  const error = document.querySelector('[data-goal-error]');
  const kpi = (name) => {
    const el = document.querySelector(`[data-kpi="${name}"]`);
    return el ? [text(el.querySelector('.kpi-value')), text(el.querySelector('.kpi-note'))] : null;
  };
  return {
    ready: document.querySelector('#app').dataset.ready || null,
    hash: location.hash,
    asof: all('#app [data-asof]').map((el) => text(el)),
    goals: list('goals'),
    defined: all('tr[data-goal]').map((tr) => [tr.dataset.goal, ...all('td', tr).slice(1, 4).map(text),
      Boolean(tr.querySelector('[data-action="remove-goal"]'))]),
    goal_error: error && !error.hidden ? text(error) : null,
    overflow_x: document.scrollingElement.scrollWidth - window.innerWidth,
    csv_buttons: all('[data-action="csv"]').map((b) => b.dataset.csv),
    tabs: all('[data-tab]').map((a) => [a.dataset.tab, a.getAttribute('aria-current')]),
    live: {
      now: kpi('live_now'), visitors: kpi('live_visitors'), pageviews: kpi('live_pageviews'), pages: list('live_pages'),
    },
  };
}

async function main() {
  const context = await run.start({ viewport: { width: WIDTH, height: HEIGHT }, acceptDownloads: true });
  const page = context.pages()[0] || (await context.newPage());
  const problems = [];
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    // The goals API's refusals (the test's bad goal, its duplicate) are expected; anything else is a problem.
    if (m.type() === 'error' && !/status of (400|409)/.test(m.text())) problems.push(`console: ${m.text()}`);
  });
  out.problems = problems;

  const redraw = async (name, action) => {
    await page.evaluate(() => { window.__before = document.querySelector('#app .page'); });
    await action();
    await page.waitForFunction(() => {
      const app = document.querySelector('#app');
      const current = app.querySelector('.page');
      return app.dataset.ready && app.dataset.ready !== 'login' && current && current !== window.__before;
    }, null, WAIT);
    out.steps[name] = await page.evaluate(collect);
  };
  const shown = async (name) => { out.steps[name] = await page.evaluate(collect); };
  const shot = async (name, selector) => {
    if (!SCREENSHOT_DIR) return;
    const path = join(SCREENSHOT_DIR, `dashboard-${WIDTH < 600 ? 'phone' : 'desktop'}-${name}.png`);
    if (selector) await page.locator(selector).screenshot({ path });
    else await page.screenshot({ path });
  };

  await page.goto(`${URL_}#/?period=30d`, { waitUntil: 'load' });
  await page.waitForSelector('#app[data-ready="login"]', WAIT);
  await redraw('overview', async () => {
    await page.fill('#token', TOKEN);
    await page.click('form.login button[type="submit"]');
  });

  // Goals: add a page pattern from the form; refusals are shown as the API words them; remove it.
  await page.click('.goals-manage summary');
  const addGoal = async (name, kind, match) => {
    await page.fill('[data-goal-field="name"]', name);
    await page.selectOption('[data-goal-field="kind"]', kind);
    await page.fill('[data-goal-field="match"]', match);
    await page.click('[data-goal-form] button[type="submit"]');
  };
  await redraw('goal_added', () => addGoal('Saw "art"', 'page', '/p/*'));
  await addGoal('Saw "art"', 'page', '/b/*');
  await page.waitForSelector('[data-goal-error]:not([hidden])', WAIT);
  await shown('goal_duplicate');
  await addGoal('Bad', 'page', 'p/*');
  await page.waitForFunction(() => /^match:/.test(document.querySelector('[data-goal-error]').textContent), null, WAIT);
  await shown('goal_bad');
  await shot('goals', '[data-panel="goals"]');
  // A goal whose name would be a spreadsheet formula: its CSV cell is quoted out of being one.
  await redraw('goal_formula', () => addGoal('=cmd', 'event', 'nothing'));

  // The goals panel's CSV: built in the page, downloaded.
  const [download] = await Promise.all([page.waitForEvent('download', WAIT),
    page.click('[data-action="csv"][data-csv="goals"]')]);
  out.csv = { name: download.suggestedFilename(), text: readFileSync(await download.path(), 'utf8') };
  const [sources] = await Promise.all([page.waitForEvent('download', WAIT),
    page.click('[data-action="csv"][data-csv="sources"]')]);
  out.csv_sources = { name: sources.suggestedFilename(), text: readFileSync(await sources.path(), 'utf8') };

  await redraw('formula_removed', () => page.click('tr[data-goal="=cmd"] [data-action="remove-goal"]'));
  await redraw('goal_removed', () => page.click('tr[data-goal="Saw \\"art\\""] [data-action="remove-goal"]'));

  // An item page says as of when too.
  await redraw('item', () => page.evaluate(() => { location.hash = '#/item/artwork/a1'; }));

  // The live view: a tab; updated in place every 5 s.
  await redraw('live', () => page.click('[data-tab="live"]'));
  await page.evaluate(() => { window.__live = document.querySelector('#app .page'); });
  process.stdout.write(`${JSON.stringify({ await: 'event' })}\n`);
  const answer = await lines.next();
  const asked = Date.now();
  const before = out.steps.live.live.now[0];
  await page.waitForFunction((was) => {
    const el = document.querySelector('[data-kpi="live_now"] .kpi-value');
    return el && el.textContent.trim() !== was;
  }, before, { timeout: 15000 });
  out.live_update_ms = Date.now() - asked;
  out.live_same_page = await page.evaluate(() => document.querySelector('#app .page') === window.__live);
  await shown('live_updated');
  await shot('live');
  out.stored = JSON.parse(answer.value);
  return out;
}

try {
  await main();
  await run.close();
  process.stdout.write(`${JSON.stringify(out)}\n`);
  process.exit(0);
} catch (error) {
  console.error(`dashboard_live.mjs: ${error && error.stack ? error.stack : error}`);
  console.error(JSON.stringify(out.steps));
  await run.close();
  process.exit(1);
}
