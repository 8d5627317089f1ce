// Drives headless Chromium through the dashboard's item rows at one viewport: the popular panels (one per content
// kind of the settings, a custom kind too), each row's title and links, then an item page; prints one JSON object of
// what the page showed. The Python test (test_dashboard_items.py) asserts the values.
//
// Env: DASHBOARD_URL (required, .../_trackside/), TOKEN (required: a moderator's), VIEWPORT ("1280x800"), CHROMIUM,
// SCREENSHOT_DIR (optional: PNGs there), SHOT_PREFIX ("desktop"), DASHBOARD_TIMEOUT_MS.
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
  console.error('dashboard_items.mjs: DASHBOARD_URL and TOKEN are required');
  process.exit(2);
}

const run = browserRun('dashboard_items.mjs', TIMEOUT_MS);
const out = {};

// The popular panels as drawn (runs in the page).
function collectPanels() {
  const text = (el) => (el ? el.textContent.trim() : null);
  const all = (sel, root = document) => Array.from(root.querySelectorAll(sel));
  const panels = {};
  for (const card of all('[data-panel^="popular-"]')) {
    const rows = all('tbody tr', card).map((tr) => {
      const link = tr.querySelector('a.item-link');
      const page = tr.querySelector('a.item-page');
      const name = tr.querySelector('.item-name');
      return {
        key: tr.dataset.key,
        name: text(name),
        id: text(tr.querySelector('.item-id')),
        elements_in_name: name ? name.children.length : null, // a title is text: no element inside
        href: link ? link.getAttribute('href') : null,
        page: page ? page.getAttribute('href') : null,
        page_target: page ? page.getAttribute('target') : null,
        page_label: page ? page.getAttribute('aria-label') : null,
        views: text(tr.querySelector('td.num')),
      };
    });
    panels[card.dataset.panel] = { title: text(card.querySelector('h2')), column: text(card.querySelector('thead th:nth-child(2)')),
      rows, empty: text(card.querySelector('[data-empty]')) };
  }
  // The looked-at items panel (v2 by content id): each row's key, shown title and text.
  const looked = all('[data-list="items"] li').map((li) => [li.dataset.key,
    li.querySelector('.item-titled') ? li.querySelector('.item-titled').dataset.title : null,
    text(li.querySelector('.bar-label'))]);
  return {
    looked,
    order: all('[data-panel^="popular-"]').map((c) => c.dataset.panel),
    panels,
    bold: all('#app b').length, // `<b>` in a title stays text
    overflow_x: document.scrollingElement.scrollWidth - window.innerWidth,
  };
}

function collectItem() {
  const text = (el) => (el ? el.textContent.trim() : null);
  const h1 = document.querySelector('h1.item-title');
  const page = document.querySelector('#app .item-site a.item-page');
  return {
    ready: document.querySelector('#app').dataset.ready || null,
    hash: location.hash,
    heading: text(h1),
    title: text(h1 && h1.querySelector('.item-heading-name')),
    data_title: h1 ? h1.dataset.title || null : null,
    page: page ? page.getAttribute('href') : null,
    page_text: text(page),
    crumbs: text(document.querySelector('.crumbs')),
    bold: document.querySelectorAll('#app b').length,
    overflow_x: document.scrollingElement.scrollWidth - window.innerWidth,
  };
}

async function main() {
  const context = await run.start({ viewport: { width: WIDTH, height: HEIGHT } });
  const page = context.pages()[0] || (await context.newPage());
  const problems = [];
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
  out.refused = [];
  page.on('response', (r) => { if (r.status() >= 400) out.refused.push(`${r.status()} ${r.url()}`); });
  out.problems = problems;
  out.kinds_asked = 0;
  page.on('request', (r) => { if (r.url().endsWith('/api/v1/kinds')) out.kinds_asked += 1; });

  await page.goto(`${URL_}#/?period=30d`, { waitUntil: 'load' });
  await page.waitForSelector('#app[data-ready="login"]', WAIT);
  await page.fill('#token', TOKEN);
  await page.click('form.login button[type="submit"]');
  await page.waitForSelector('#app[data-ready="overview"] [data-panel="popular-recipe"]', WAIT);
  out.overview = await page.evaluate(collectPanels);
  if (SCREENSHOT_DIR) {
    await page.locator('[data-panel^="popular-"]').first().scrollIntoViewIfNeeded();
    await page.mouse.move(1, 1);
    await page.screenshot({ path: join(SCREENSHOT_DIR, `dashboard-${SHOT_PREFIX}-items.png`) });
  }
  // A title's link opens the item's page in the dashboard.
  await page.click('[data-panel="popular-artwork"] tr[data-key="a1"] a.item-link');
  await page.waitForSelector('#app[data-ready="item"] h1.item-title', WAIT);
  out.item = await page.evaluate(collectItem);
  // A custom kind's item page, reached by its address.
  await page.evaluate(() => { location.hash = '#/item/recipe/r1'; });
  await page.waitForFunction(() => document.querySelector('#app').dataset.ready === 'item'
    && document.querySelector('#app .page[data-item="recipe/r1"]'), null, WAIT);
  out.recipe = await page.evaluate(collectItem);
  return out;
}

try {
  await main();
  await run.close();
  process.stdout.write(`${JSON.stringify(out)}\n`);
  process.exit(0);
} catch (error) {
  console.error(`dashboard_items.mjs: ${error && error.stack ? error.stack : error}`);
  console.error(JSON.stringify(out));
  await run.close();
  process.exit(1);
}
