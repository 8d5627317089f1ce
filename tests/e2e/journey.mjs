// Drives headless Chromium (Debian's, through playwright-core) through a fixed journey on the e2e Next.js site
// behind the sidecar, and prints one JSON summary on stdout: the steps, and EVERY request the browser made, with the
// headers that decide how a proxy classifies it and whether it was answered from the browser's cache (then no proxy
// saw it). Env: BASE_URL (required: the sidecar's URL), TOKEN (optional: sign in first through /login?token=...),
// CHROMIUM (default /usr/bin/chromium), USER_AGENT (default: the browser's own with "HeadlessChrome" made "Chrome",
// since a headless UA is a bot to the sidecar), JOURNEY_TIMEOUT_MS (default 60000). Exits non-zero on any failure.
import { browserRun } from './browser.mjs';

const BASE_URL = (process.env.BASE_URL || '').replace(/\/+$/, '');
const TOKEN = process.env.TOKEN || '';
const TIMEOUT_MS = Number(process.env.JOURNEY_TIMEOUT_MS || 60000);
const QUIET_MS = Number(process.env.JOURNEY_QUIET_MS || 800);
const HEADERS = [
  'purpose', 'sec-purpose', 'x-nextjs-data', 'next-router-prefetch', 'x-middleware-prefetch', 'rsc',
  'next-router-state-tree', 'sec-fetch-dest', 'sec-fetch-mode', 'accept', 'authorization', 'if-none-match',
  'user-agent', 'sec-ch-ua',
];

if (!BASE_URL) {
  console.error('journey.mjs: BASE_URL is required');
  process.exit(2);
}

const run = browserRun('journey.mjs', TIMEOUT_MS);

const requests = []; // one entry per browser request, in the order the browser issued them
const cdpLog = []; // [{key, cached}] in issue order, from Chrome's own Network domain
let currentStep = 'launch';
let inflight = 0;
let lastActivity = Date.now();

function pick(headers) {
  const out = {};
  for (const name of HEADERS) {
    if (headers[name] !== undefined) out[name] = name === 'authorization' ? headers[name].split(' ')[0] + ' …' : headers[name];
  }
  return out;
}

function withTimeout(promise, ms, fallback) {
  return Promise.race([promise.catch(() => fallback), new Promise((r) => setTimeout(() => r(fallback), ms))]);
}

function track(page) {
  page.on('request', (req) => {
    inflight += 1;
    lastActivity = Date.now();
    const url = new URL(req.url());
    const entry = {
      seq: requests.length,
      step: currentStep,
      method: req.method(),
      url: req.url(),
      path: url.pathname + url.search,
      same_origin: url.origin === new URL(BASE_URL).origin,
      resource_type: req.resourceType(),
      navigation: req.isNavigationRequest(),
      status: null,
      content_type: null,
      failed: null,
      from_cache: false,
      headers: pick(req.headers()),
      // A beacon's body (which kind it is: a page view, an engagement, impressions).
      body: url.pathname === '/_trackside/b' ? req.postData() : null,
    };
    entry._headers = withTimeout(req.allHeaders(), 3000, req.headers()).then((h) => {
      entry.headers = pick(h);
    });
    entry._req = req;
    requests.push(entry);
  });
  const done = () => {
    inflight = Math.max(0, inflight - 1);
    lastActivity = Date.now();
  };
  page.on('requestfinished', done);
  page.on('requestfailed', (req) => {
    const entry = requests.findLast((e) => e._req === req);
    if (entry) entry.failed = req.failure()?.errorText || 'failed';
    done();
  });
}

async function trackCache(page) {
  // Playwright does not say whether a response came from the HTTP cache; Chrome's Network domain does.
  const cdp = await page.context().newCDPSession(page);
  const byId = new Map();
  cdp.on('Network.requestWillBeSent', (ev) => {
    if (ev.redirectResponse) return; // same requestId continues; the redirect target is a new Playwright request
    const rec = { key: `${ev.request.method} ${ev.request.url}`, cached: false };
    byId.set(ev.requestId, rec);
    cdpLog.push(rec);
  });
  cdp.on('Network.requestServedFromCache', (ev) => {
    const rec = byId.get(ev.requestId);
    if (rec) rec.cached = true;
  });
  cdp.on('Network.responseReceived', (ev) => {
    const rec = byId.get(ev.requestId);
    if (rec && (ev.response.fromDiskCache || ev.response.fromPrefetchCache || ev.response.fromServiceWorker)) {
      rec.cached = true;
    }
  });
  await cdp.send('Network.enable');
}

async function quiet() {
  // Network idle for the current step: nothing in flight and no new request for QUIET_MS (viewport prefetches
  // start on requestIdleCallback shortly after a render, so a short quiet window catches them).
  const deadline = Date.now() + 15000;
  while (Date.now() < deadline) {
    if (inflight === 0 && Date.now() - lastActivity >= QUIET_MS) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`step ${currentStep}: network never went quiet (${inflight} in flight)`);
}

async function settle(page, expect) {
  await page.waitForURL((u) => u.pathname === expect.path, { timeout: 10000 });
  await page.waitForFunction((t) => document.querySelector('#title')?.textContent === t, expect.title, {
    timeout: 10000,
  });
  if (expect.api) {
    await page.waitForFunction(() => (document.querySelector('#api-status')?.textContent || '').startsWith('api ok'), null, {
      timeout: 10000,
    });
  }
  if (expect.login) {
    await page.waitForFunction((s) => document.querySelector('#login-state')?.textContent === s, expect.login, {
      timeout: 10000,
    });
  }
  await quiet();
}

const HOME = { path: '/', title: 'Feed' };
const A1 = { path: '/p/a1', title: 'Artwork a1', api: true };
const B2 = { path: '/p/b2', title: 'Artwork b2', api: true };
const POST1 = { path: '/b/post1', title: 'Blog post1' };
const ABOUT = { path: '/about', title: 'About' };

function journey(page) {
  const steps = [];
  if (TOKEN) {
    steps.push(['login', 'document', () => page.goto(`${BASE_URL}/login?token=${encodeURIComponent(TOKEN)}`), {
      path: '/login', title: 'Login', login: 'stored',
    }]);
  }
  steps.push(
    ['home', 'document', () => page.goto(`${BASE_URL}/`), HOME],
    ['to_a1', 'click', () => page.click('#link-a1'), A1],
    ['back_home', 'back', () => page.goBack({ waitUntil: 'commit' }), HOME],
    ['forward_a1', 'forward', () => page.goForward({ waitUntil: 'commit' }), A1],
    ['reload_a1', 'reload', () => page.reload(), A1],
    ['to_b2', 'click', () => page.click('#link-b2'), B2],
    ['b2_home', 'click', () => page.click('#link-home'), HOME],
    ['to_about', 'click', () => page.click('#link-about'), ABOUT],
    ['about_home', 'click', () => page.click('#link-home'), HOME],
    ['to_post1', 'click', () => page.click('#link-post1'), POST1],
    ['back_home2', 'back', () => page.goBack({ waitUntil: 'commit' }), HOME],
  );
  return steps;
}

async function main() {
  let userAgent = process.env.USER_AGENT || '';
  const context = await run.start({ viewport: { width: 1280, height: 900 }, ...(userAgent ? { userAgent } : {}) });
  const browserVersion = context.browser()?.version() || '';
  const page = context.pages()[0] || (await context.newPage());
  if (!userAgent) {
    userAgent = (await page.evaluate(() => navigator.userAgent)).replace('HeadlessChrome', 'Chrome');
    const uaSession = await context.newCDPSession(page);
    await uaSession.send('Network.setUserAgentOverride', { userAgent });
  }
  track(page);
  await trackCache(page);

  const steps = [];
  let originSeenByNext = null;
  for (const [name, action, run, expect] of journey(page)) {
    currentStep = name;
    const first = requests.length;
    await run();
    await settle(page, expect);
    steps.push({ name, action, path: expect.path, requests: requests.slice(first).map((e) => e.seq) });
    if (name === 'home') originSeenByNext = await page.textContent('#origin');
  }
  currentStep = 'end';
  await Promise.all(requests.map((e) => e._headers));
  for (const e of requests) {
    const resp = await withTimeout(e._req.response(), 2000, null);
    if (resp) {
      e.status = resp.status();
      e.content_type = (await withTimeout(resp.headerValue('content-type'), 2000, null)) || null;
    }
  }
  // Match Chrome's cache flags to Playwright's requests by (method, url), in issue order.
  const queues = new Map();
  for (const rec of cdpLog) {
    if (!queues.has(rec.key)) queues.set(rec.key, []);
    queues.get(rec.key).push(rec);
  }
  for (const e of requests) {
    const rec = queues.get(`${e.method} ${e.url}`)?.shift();
    e.from_cache = rec ? rec.cached : false;
  }
  const localStorageToken = await page.evaluate(() => window.localStorage.getItem('access_token') !== null);
  const out = {
    base_url: BASE_URL,
    signed_in: Boolean(TOKEN),
    token_stored: localStorageToken,
    user_agent: userAgent,
    browser_version: browserVersion,
    origin_seen_by_next: originSeenByNext,
    steps,
    requests: requests.map(({ _headers, _req, ...rest }) => rest),
  };
  await run.close();
  process.stdout.write(JSON.stringify(out, null, 1) + '\n');
}

main().catch(async (err) => {
  console.error(`journey.mjs: failed in step ${currentStep}: ${err && err.stack ? err.stack : err}`);
  await run.close();
  process.exit(1);
});
