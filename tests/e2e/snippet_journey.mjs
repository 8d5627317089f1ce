// Headless Chromium (Debian's, through playwright-core) on one page for the web snippet's tests, printing one JSON
// summary on stdout: every beacon the page sent (its body and answer) and what the page looked like.
// Env: PAGE_URL (required), SCENARIO ("feed": wait, show the item #item-c3 for 300 ms, scroll back, wait; "widget":
// wait), CHROMIUM (default /usr/bin/chromium), USER_AGENT (a desktop Chrome UA: a headless one is a bot),
// JOURNEY_TIMEOUT_MS (default 60000). Exits non-zero on any failure.
import { browserRun } from './browser.mjs';

const PAGE_URL = process.env.PAGE_URL || '';
const SCENARIO = process.env.SCENARIO || 'widget';
const USER_AGENT = process.env.USER_AGENT || '';
const TIMEOUT_MS = Number(process.env.JOURNEY_TIMEOUT_MS || 60000);

if (!PAGE_URL) {
  console.error('snippet_journey.mjs: PAGE_URL is required');
  process.exit(2);
}

const run = browserRun('snippet_journey.mjs', TIMEOUT_MS);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function main() {
  const context = await run.start({
    viewport: { width: 1280, height: 900 },
    ...(USER_AGENT ? { userAgent: USER_AGENT } : {}),
  });
  const page = context.pages()[0] || (await context.newPage());
  const beacons = [];
  page.on('request', (req) => {
    if (!req.url().includes('/_trackside/b')) return;
    const entry = { method: req.method(), url: req.url(), body: req.postData(), status: null };
    beacons.push(entry);
    req.response().then((resp) => { if (resp) entry.status = resp.status(); }).catch(() => {});
  });
  const scripts = [];
  page.on('request', (req) => { if (req.resourceType() === 'script') scripts.push(req.url()); });

  await page.goto(PAGE_URL, { waitUntil: 'load' });
  if (SCENARIO === 'feed') {
    await page.waitForFunction(() => document.querySelector('#title')?.textContent === 'Feed items');
    await sleep(2500); // the items in view: visible for more than a second, then sent
    await page.evaluate(() => document.querySelector('#item-c3').scrollIntoView({ block: 'center' }));
    await sleep(300); // c3 shown, but not for a second
    await page.evaluate(() => window.scrollTo(0, 0));
    await sleep(2000);
  } else {
    await sleep(2500);
  }
  const state = await page.evaluate(() => ({
    snippet: Boolean(window.__trackside),
    token_in_tag: Boolean(document.querySelector('script[data-token]')),
    scroll_height: document.documentElement.scrollHeight,
  }));
  await sleep(300); // answers of the last beacons
  const out = { page_url: PAGE_URL, scenario: SCENARIO, state, scripts, beacons };
  await run.close();
  process.stdout.write(JSON.stringify(out, null, 1) + '\n');
}

main().catch(async (err) => {
  console.error(`snippet_journey.mjs: failed: ${err && err.stack ? err.stack : err}`);
  await run.close();
  process.exit(1);
});
