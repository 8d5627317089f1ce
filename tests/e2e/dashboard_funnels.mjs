// Funnels end to end in headless Chromium, in two phases (PHASE):
// - "journeys": real visitors browse the site through the sidecar (document loads, and the upload as the site's
//   page would post it), each its own visitor (its own user agent: the visitor id is a hash of address and agent);
// - "dashboard": a moderator signs in, the funnel panel draws the settings' funnel for today; the moderator adds a
//   funnel through the panel's form (and one the API refuses), picks it, and removes it. Prints one JSON object of
//   what the page showed after each step; the Python test asserts the values.
//
// Env: BASE_URL (required: the sidecar's origin), TOKEN (dashboard: a moderator's), CHROMIUM, VIEWPORT, TIMEOUT_MS.
import { browserRun } from './browser.mjs';

const BASE = (process.env.BASE_URL || '').replace(/\/$/, '');
const TOKEN = process.env.TOKEN || '';
const PHASE = process.env.PHASE || '';
const [WIDTH, HEIGHT] = (process.env.VIEWPORT || '1280x800').split('x').map(Number);
const TIMEOUT_MS = Number(process.env.TIMEOUT_MS || 90000);
const WAIT = { timeout: 20000 };
const UA = (n) => `Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.${n}.0 Safari/537.36`;

// Who does what, in order. `upload` is the site's page posting to its upload API (the `upload` event rule).
export const JOURNEYS = {
  a: ['/', '/p/a1', 'upload'], // all three steps
  b: ['/', '/p/b2'], // two
  c: ['/p/a1', '/'], // the artwork first: step 1 only
  d: ['/'], // step 1 only
};

if (!BASE || !['journeys', 'dashboard'].includes(PHASE) || (PHASE === 'dashboard' && !TOKEN)) {
  console.error('dashboard_funnels.mjs: BASE_URL, PHASE (journeys or dashboard) and, for the dashboard, TOKEN');
  process.exit(2);
}

const run = browserRun('dashboard_funnels.mjs', TIMEOUT_MS);
const out = { phase: PHASE, steps: {}, problems: [] };

async function journeys(context) {
  out.requests = [];
  let n = 0;
  for (const [name, stops] of Object.entries(JOURNEYS)) {
    n += 1;
    const page = await context.newPage();
    // Every request of this visitor (documents and the page's fetch) with its own desktop Chrome agent.
    await page.setExtraHTTPHeaders({ 'User-Agent': UA(n) });
    for (const stop of stops) {
      if (stop === 'upload') {
        const status = await page.evaluate(async () => (await fetch('/api/post/upload', { method: 'POST', body: 'x' })).status);
        out.requests.push([name, 'POST /api/post/upload', status]);
      } else {
        const response = await page.goto(BASE + stop, { waitUntil: 'load' });
        out.requests.push([name, `GET ${stop}`, response.status()]);
      }
      await page.waitForTimeout(1100); // a second between steps: their order is never a tie
    }
    await page.close();
  }
}

// What the funnel panel shows (runs in the page).
function collect() {
  const panel = document.querySelector('[data-panel="funnel"]');
  if (!panel) return null;
  const body = panel.querySelector('.funnel-body');
  const text = (el) => (el ? el.textContent.trim() : null);
  return {
    state: body.dataset.funnelState,
    funnel: body.dataset.funnel || null,
    picker: Array.from(panel.querySelectorAll('[data-funnel-pick] option')).map((o) => o.value),
    picked: panel.querySelector('[data-funnel-pick]').value,
    steps: Array.from(panel.querySelectorAll('[data-funnel-step]')).map((li) => ({
      label: li.dataset.label,
      visitors: Number(li.querySelector('[data-funnel-visitors]').dataset.funnelVisitors),
      shown: text(li.querySelector('.funnel-value')),
      rate: text(li.querySelector('.funnel-rate')),
      dropoff: li.querySelector('[data-funnel-drop]') ? Number(li.querySelector('[data-funnel-drop]').dataset.funnelDrop) : null,
      median: li.querySelector('[data-funnel-median]') ? li.querySelector('[data-funnel-median]').dataset.funnelMedian : null,
    })),
    rows: Array.from(panel.querySelectorAll('[data-funnel-row]')).map((tr) => [tr.dataset.funnelRow,
      text(tr.querySelector('td.mono')), Boolean(tr.querySelector('[data-action="remove-funnel"]'))]),
    error: panel.querySelector('[data-funnel-error]').hidden ? null : text(panel.querySelector('[data-funnel-error]')),
    overflow_x: document.scrollingElement.scrollWidth - window.innerWidth,
  };
}

async function dashboard(context) {
  const page = context.pages()[0] || (await context.newPage());
  page.on('pageerror', (e) => out.problems.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    // The refused funnel (a 400 the panel shows) is the one expected failure.
    if (m.type() === 'error' && !/status of 400/.test(m.text())) out.problems.push(`console: ${m.text()}`);
  });
  const ready = (name) => page.waitForFunction((wanted) => {
    const body = document.querySelector('[data-panel="funnel"] .funnel-body');
    return body && body.dataset.funnelState === 'ready' && body.dataset.funnel === wanted;
  }, name, WAIT);

  await page.goto(`${BASE}/_trackside/#/?period=today`, { waitUntil: 'load' });
  await page.waitForSelector('#app[data-ready="login"]', WAIT);
  await page.fill('#token', TOKEN);
  await page.click('form.login button[type="submit"]');
  await page.waitForSelector('#app[data-ready="overview"]', WAIT);
  await ready('Upload');
  out.steps.settings_funnel = await page.evaluate(collect);

  await page.click('[data-panel="funnel"] details.goals-manage summary');
  // Refused: one step. The API's words are shown.
  await page.fill('[data-funnel-field="name"]', 'One step');
  await page.fill('[data-funnel-field="steps"]', '/');
  await page.click('[data-funnel-form] button[type="submit"]');
  await page.waitForSelector('[data-panel="funnel"] [data-funnel-error]:not([hidden])', WAIT);
  out.steps.refused = await page.evaluate(collect);

  await page.fill('[data-funnel-field="name"]', 'Artwork first');
  await page.fill('[data-funnel-field="steps"]', '/p/* > /');
  await page.click('[data-funnel-form] button[type="submit"]');
  await ready('Artwork first'); // the new funnel is picked
  out.steps.added = await page.evaluate(collect);

  await page.selectOption('[data-funnel-pick]', 'Upload');
  await ready('Upload');
  out.steps.picked_back = await page.evaluate(collect);

  await page.click('[data-funnel-row="Artwork first"] [data-action="remove-funnel"]');
  await page.waitForFunction(() => !document.querySelector('[data-funnel-row="Artwork first"]'), null, WAIT);
  await ready('Upload');
  out.steps.removed = await page.evaluate(collect);
}

async function main() {
  const context = await run.start({ viewport: { width: WIDTH, height: HEIGHT } });
  try {
    if (PHASE === 'journeys') await journeys(context);
    else await dashboard(context);
  } finally {
    await run.close();
  }
  process.stdout.write(JSON.stringify(out));
}

main().catch(async (error) => {
  console.error(String(error && error.stack ? error.stack : error));
  console.error(JSON.stringify(out));
  await run.close();
  process.exit(1);
});
