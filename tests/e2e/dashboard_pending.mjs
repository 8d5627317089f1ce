// Opens the dashboard's overview (last 30 days) with a moderator's token and prints one JSON object: the
// figures' cards and the notice of events not derived yet, as shown. The Python test asserts the values.
//
// Env: DASHBOARD_URL (required, .../_trackside/), TOKEN (required: a moderator's), CHROMIUM, DASHBOARD_TIMEOUT_MS.
import { browserRun } from './browser.mjs';

const URL_ = process.env.DASHBOARD_URL || '';
const TOKEN = process.env.TOKEN || '';
const TIMEOUT_MS = Number(process.env.DASHBOARD_TIMEOUT_MS || 60000);
const WAIT = { timeout: 20000 };

if (!URL_ || !TOKEN) {
  console.error('dashboard_pending.mjs: DASHBOARD_URL and TOKEN are required');
  process.exit(2);
}

const run = browserRun('dashboard_pending.mjs', TIMEOUT_MS);

async function main() {
  const context = await run.start({ viewport: { width: 1280, height: 800 } });
  const page = context.pages()[0] || (await context.newPage());
  const problems = [];
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
  // What the cards' v2 query (asked first, alone) answered: the notice must say exactly that.
  const answered = [];
  page.on('response', async (r) => {
    if (!r.url().endsWith('api/v2/query')) return;
    try {
      const asked = JSON.parse(r.request().postData() || '{}');
      if (!(asked.metrics || []).includes('bounce_rate')) return;
      const body = await r.json();
      answered.push(body.meta && body.meta.pending ? body.meta.pending.visitor_days : null);
    } catch (e) { problems.push(`cards answer: ${e}`); }
  });
  const collect = () => {
    const note = document.querySelector('[data-note="pending"]');
    const kpi = (name) => {
      const el = document.querySelector(`[data-kpi="${name}"] .kpi-value`);
      return el ? el.textContent.trim() : null;
    };
    return {
      pending: note ? Number(note.dataset.pending) : null,
      text: note ? note.textContent.trim() : null,
      role: note ? note.getAttribute('role') : null,
      pageviews: kpi('pageviews'),
      visitors: kpi('visitors'),
      item: document.querySelector('[data-item]') ? document.querySelector('[data-item]').dataset.item : null,
    };
  };
  // First an item's page (its read is the sidecar's first: it derives 500 and names the rest), then the overview.
  await page.goto(`${URL_}#/item/artwork/a1`, { waitUntil: 'load' });
  await page.waitForSelector('#app[data-ready="login"]', WAIT);
  await page.fill('#token', TOKEN);
  await page.click('form.login button[type="submit"]');
  await page.waitForSelector('#app[data-ready]:not([data-ready="login"]) .page[data-item]', WAIT);
  const item = await page.evaluate(collect);
  await page.goto(`${URL_}#/?period=30d`, { waitUntil: 'load' });
  await page.waitForSelector('#app[data-ready]:not([data-ready="login"]) .page:not([data-item])', WAIT);
  const shown = await page.evaluate(collect);
  console.log(JSON.stringify({ item_page: item, ...shown, answered, problems }));
}

main().then(() => run.close()).catch(async (e) => {
  console.error(e && e.stack ? e.stack : String(e));
  await run.close();
  process.exit(1);
});
