// Headless Chromium (Debian's, through playwright-core) on one tall page with the injected snippet, for the
// engagement test: wait, scroll so the bottom of the viewport is at half the page, hide the page, wait; show it
// again, scroll to the end, hide it again, wait; leave it. Then a second view of the page: scrolled to half, left.
// Prints one JSON summary on stdout: every beacon the pages sent (body and answer) and what they saw.
// Env: PAGE_URL (required), CHROMIUM, USER_AGENT (a desktop Chrome UA: a headless one is a bot), JOURNEY_TIMEOUT_MS.
import { ARGS, browserRun } from './browser.mjs';

const PAGE_URL = process.env.PAGE_URL || '';
const USER_AGENT = process.env.USER_AGENT || '';
const TIMEOUT_MS = Number(process.env.JOURNEY_TIMEOUT_MS || 60000);
if (!PAGE_URL) {
  console.error('engagement_journey.mjs: PAGE_URL is required');
  process.exit(2);
}
const run = browserRun('engagement_journey.mjs', TIMEOUT_MS);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function main() {
  // The user agent as a flag too: a keepalive request that outlives its page is sent without the context's
  // override, and a headless user agent is a bot's.
  const context = await run.start({
    viewport: { width: 1280, height: 900 },
    ...(USER_AGENT ? { userAgent: USER_AGENT, args: [...ARGS, `--user-agent=${USER_AGENT}`] } : {}),
  });
  const page = context.pages()[0] || (await context.newPage());
  const beacons = [];
  context.on('request', (req) => {
    if (!req.url().includes('/_trackside/b')) return;
    const entry = { method: req.method(), url: req.url(), body: req.postData(), status: null, at: Date.now() };
    beacons.push(entry);
    req.response().then((resp) => { if (resp) entry.status = resp.status(); }).catch(() => {});
  });
  await page.goto(PAGE_URL, { waitUntil: 'load' });
  await page.waitForFunction(() => window.__trackside === true);
  const loaded = Date.now();
  await sleep(1500);
  const height = await page.evaluate(() => document.documentElement.scrollHeight);
  // The bottom of the viewport at half the page: 50 %.
  await page.evaluate((y) => window.scrollTo(0, y), height / 2 - 900);
  await sleep(300);
  // Headless Chromium keeps every tab visible (another tab in front, a minimized window: still "visible"), so the
  // first hide is the page's own visibilitychange with visibilityState reading "hidden", as a tab switch fires it.
  const setVisibility = (state) => page.evaluate((s) => {
    Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => s });
    document.dispatchEvent(new Event('visibilitychange'));
  }, state);
  await setVisibility('hidden');
  const hiddenAfterMs = Date.now() - loaded;
  await sleep(1500);
  // Shown again, scrolled to the end, hidden again, past the snippet's gap between beacons: already reported.
  await setVisibility('visible');
  await page.evaluate(() => window.scrollTo(0, document.documentElement.scrollHeight));
  await sleep(300);
  await setVisibility('hidden');
  await sleep(5500);
  await setVisibility('visible');
  // Leaving it (a real pagehide, and a real visibilitychange to hidden): nothing more either.
  await page.goto('about:blank');
  await sleep(500);
  const firstView = beacons.length;
  // A second page view, scrolled to half and left: its one beacon is sent by the real pagehide.
  await page.goto(PAGE_URL, { waitUntil: 'load' });
  await page.waitForFunction(() => window.__trackside === true);
  await sleep(1000);
  await page.evaluate((y) => window.scrollTo(0, y), height / 2 - 900);
  await sleep(300);
  await page.goto('about:blank');
  await sleep(1000);
  const out = { page_url: PAGE_URL, height, hidden_after_ms: hiddenAfterMs, first_view: firstView, beacons };
  await run.close();
  process.stdout.write(JSON.stringify(out, null, 1) + '\n');
}

main().catch(async (err) => {
  console.error(`engagement_journey.mjs: failed: ${err && err.stack ? err.stack : err}`);
  await run.close();
  process.exit(1);
});
