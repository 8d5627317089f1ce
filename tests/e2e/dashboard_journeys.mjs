// Drives headless Chromium to the dashboard's journeys and retention panels at one viewport and prints one JSON
// object of what they showed: the journeys panel for the page it offers first, then for a path typed into it; the
// retention grid. The Python test asserts the values.
// Env: DASHBOARD_URL (required, .../_trackside/), TOKEN (required: a moderator's), VIEWPORT ("1280x800"), CHROMIUM,
// SCREENSHOT_DIR (optional), SHOT_PREFIX ("desktop"), DASHBOARD_TIMEOUT_MS.
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
  console.error('dashboard_journeys.mjs: DASHBOARD_URL and TOKEN are required');
  process.exit(2);
}
const run = browserRun('dashboard_journeys.mjs', TIMEOUT_MS);

function journeys() {
  const panel = document.querySelector('[data-panel="journeys"]');
  const rows = (side) => Array.from(panel.querySelectorAll(`[data-journey-table="${side}"] tbody tr[data-journey-row]`))
    .map((tr) => Array.from(tr.querySelectorAll('td')).map((td) => td.textContent));
  const svg = panel.querySelector('svg.journey-flow');
  return {
    state: panel.querySelector('.journey-body').dataset.journeyState,
    pick: panel.querySelector('[data-journey-pick]').value,
    previous: rows('previous'),
    next: rows('next'),
    bands: svg ? Array.from(svg.querySelectorAll('path.journey-band')).map((p) => [p.querySelector('title').textContent,
      Number(p.getAttribute('stroke-width'))]) : null,
    centre: svg ? svg.querySelector('.journey-page-label').textContent : null,
    note: panel.querySelector('.card-note') ? panel.querySelector('.card-note').textContent : null,
  };
}

function retention() {
  const panel = document.querySelector('[data-panel="retention"]');
  return {
    state: panel.querySelector('.retention-body').dataset.retentionState,
    cohorts: Array.from(panel.querySelectorAll('tr[data-cohort]')).map((tr) => [tr.dataset.cohort, Number(tr.dataset.users),
      Array.from(tr.querySelectorAll('td.retention-cell')).map((td) => (td.classList.contains('future') ? null : td.textContent))]),
    note: panel.querySelector('[data-retention-anonymous]') ? panel.querySelector('[data-retention-anonymous]').textContent : null,
  };
}

async function main() {
  const context = await run.start({ viewport: { width: WIDTH, height: HEIGHT } });
  const page = context.pages()[0] || (await context.newPage());
  const problems = [];
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/status of 400/.test(m.text())) problems.push(`console: ${m.text()}`);
  });
  await page.goto(`${URL_}#/?period=7d`, { waitUntil: 'load' });
  await page.waitForSelector('#app[data-ready="login"]', WAIT);
  await page.fill('#token', TOKEN);
  await page.click('form.login button[type="submit"]');
  await page.waitForSelector('[data-panel="journeys"] .journey-body[data-journey-state="ready"]', WAIT);
  await page.waitForSelector('[data-panel="retention"] .retention-body[data-retention-state="ready"]', WAIT);
  const out = { problems, first: await page.evaluate(journeys), retention: await page.evaluate(retention) };
  if (SCREENSHOT_DIR) {
    await page.locator('[data-panel="journeys"]').screenshot({ path: join(SCREENSHOT_DIR, `journeys-${SHOT_PREFIX}.png`) });
    await page.locator('[data-panel="retention"]').screenshot({ path: join(SCREENSHOT_DIR, `retention-${SHOT_PREFIX}.png`) });
  }
  await page.fill('[data-journey-pick]', '/p/a1');
  await page.click('[data-panel="journeys"] form button[type="submit"]');
  await page.waitForFunction(() => {
    const body = document.querySelector('[data-panel="journeys"] .journey-body');
    return body.dataset.journeyState === 'ready' && body.dataset.journey === '/p/a1';
  }, null, WAIT);
  out.path = await page.evaluate(journeys);
  out.overflow_x = await page.evaluate(() => document.scrollingElement.scrollWidth - window.innerWidth);
  await run.close();
  process.stdout.write(JSON.stringify(out, null, 1) + '\n');
}

main().catch(async (err) => {
  console.error(`dashboard_journeys.mjs: failed: ${err && err.stack ? err.stack : err}`);
  await run.close();
  process.exit(1);
});
