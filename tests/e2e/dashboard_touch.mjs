// The dashboard's charts by keyboard and by touch, its phone layout, and the sign-in form an expired token returns
// to, in headless Chromium; prints one JSON object of what the page showed, the Python test asserts the values.
//
// MODE=keyboard: Tab into the period chart, arrow keys, Home/End, Escape; then on into the 24-hour bar chart.
// MODE=touch: taps on chart points and elsewhere (a touch context: hasTouch, isMobile), the layout at the viewport.
// MODE=expired: a share link with an expired share token, then an expired sign-in kept in the tab.
//
// Env: DASHBOARD_URL (.../_trackside/), TOKEN (a moderator's), EXPIRED_SHARE, EXPIRED_JWT (MODE=expired), MODE,
// VIEWPORT ("1280x800"), COLOR_SCHEME ("light"/"dark"), CHROMIUM, SCREENSHOT_DIR, SHOT_PREFIX, DASHBOARD_TIMEOUT_MS.
import { join } from 'node:path';

import { browserRun } from './browser.mjs';

const URL_ = process.env.DASHBOARD_URL || '';
const TOKEN = process.env.TOKEN || '';
const MODE = process.env.MODE || 'keyboard';
const [WIDTH, HEIGHT] = (process.env.VIEWPORT || '1280x800').split('x').map(Number);
const SCHEME = process.env.COLOR_SCHEME === 'dark' ? 'dark' : 'light';
const SCREENSHOT_DIR = process.env.SCREENSHOT_DIR || '';
const SHOT_PREFIX = process.env.SHOT_PREFIX || MODE;
const TIMEOUT_MS = Number(process.env.DASHBOARD_TIMEOUT_MS || 90000);
const WAIT = { timeout: 20000 };

if (!URL_ || !TOKEN) {
  console.error('dashboard_touch.mjs: DASHBOARD_URL and TOKEN are required');
  process.exit(2);
}

const run = browserRun('dashboard_touch.mjs', TIMEOUT_MS);
const out = { mode: MODE, steps: {} };

// The tooltip of one chart and the focused point (runs in the page).
function chartState(name) {
  const chart = document.querySelector(`[data-chart="${name}"]`);
  const tip = chart && chart.querySelector('.tip');
  const text = (el) => (el ? el.textContent.trim() : null);
  const focused = document.activeElement;
  const inChart = Boolean(chart && focused && chart.contains(focused));
  return {
    tip_shown: Boolean(tip && !tip.hidden),
    tip_title: tip && !tip.hidden ? text(tip.querySelector('.tip-title')) : null,
    tip_rows: tip && !tip.hidden ? Array.from(tip.querySelectorAll('.tip-row')).map((r) => [
      text(r.querySelector('.tip-label')), text(r.querySelector('.tip-value'))]) : null,
    tip_background: tip ? getComputedStyle(tip).backgroundColor : null,
    focused: inChart ? { key: focused.dataset.key, label: focused.getAttribute('aria-label'),
      role: focused.getAttribute('role'), focus_visible: focused.matches(':focus-visible') } : null,
    tab_stops: chart ? chart.querySelectorAll('.hit[tabindex="0"]').length : 0,
    hits: chart ? chart.querySelectorAll('.hit').length : 0,
    labelled: chart ? Array.from(chart.querySelectorAll('.hit')).every((el) => el.getAttribute('aria-label')) : false,
    root_role: chart && chart.querySelector('svg') ? chart.querySelector('svg').getAttribute('role') : null,
    bars: name === 'hourly' && chart ? Array.from(chart.querySelectorAll('rect.bar')).map((b) => [b.dataset.key,
      Number(b.dataset.value)]) : null,
  };
}

// The page's layout at this viewport (runs in the page).
function layout() {
  const rect = (el) => el.getBoundingClientRect();
  const bar = document.querySelector('#topbar');
  const parts = Array.from(bar.children).filter((el) => rect(el).width > 0 && rect(el).height > 0);
  const middle = (el) => Math.round(rect(el).top + rect(el).height / 2); // a flex line centres its items
  const rows = [...new Set(parts.map(middle))].sort((a, b) => a - b);
  const main = document.querySelector('#app');
  const inner = rect(main);
  const padding = parseFloat(getComputedStyle(main).paddingLeft);
  const cards = Array.from(document.querySelectorAll('#app .grid > .card'));
  return {
    overflow_x: document.scrollingElement.scrollWidth - window.innerWidth,
    inner_width: window.innerWidth,
    topbar_rows: rows.length,
    topbar_row_of: Object.fromEntries(parts.map((el) => [el.dataset.action || el.className.split(' ')[0],
      rows.indexOf(middle(el))])),
    topbar_outside: parts.filter((el) => rect(el).right > window.innerWidth + 0.5 || rect(el).left < -0.5)
      .map((el) => el.className),
    cards: cards.length,
    // One column: every panel card starts at the content's left edge and spans its width.
    cards_off_column: cards.filter((c) => Math.abs(rect(c).left - (inner.left + padding)) > 1
      || Math.abs(rect(c).width - (inner.width - 2 * padding)) > 1).map((c) => c.dataset.panel),
    body_background: getComputedStyle(document.body).backgroundColor,
    card_background: cards.length ? getComputedStyle(cards[0]).backgroundColor : null,
    color_scheme: window.matchMedia('(prefers-color-scheme: dark)').matches ? 'dark' : 'light',
  };
}

async function main() {
  const touch = MODE === 'touch';
  const context = await run.start({ viewport: { width: WIDTH, height: HEIGHT }, colorScheme: SCHEME,
    hasTouch: touch, isMobile: touch, deviceScaleFactor: touch ? 2 : 1 });
  const page = context.pages()[0] || (await context.newPage());
  const problems = [];
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    // A refused token is a 401 the browser logs; the expired-token runs expect them.
    if (m.type() === 'error' && !(MODE === 'expired' && /status of 401/.test(m.text()))) problems.push(`console: ${m.text()}`);
  });
  out.problems = problems;
  const record = async (name, chart) => { out.steps[name] = await page.evaluate(chartState, chart); };
  const shot = async (name) => {
    if (SCREENSHOT_DIR) await page.screenshot({ path: join(SCREENSHOT_DIR, `dashboard-${SHOT_PREFIX}-${name}.png`) });
  };

  if (MODE === 'expired') {
    // 1. A share link whose token expired: the sign-in form, with the reason; the token left the address bar.
    await page.goto(`${URL_}#token=${encodeURIComponent(process.env.EXPIRED_SHARE)}`, { waitUntil: 'load' });
    await page.waitForSelector('#app[data-ready="login"] .login-error', WAIT);
    out.share = await page.evaluate(() => ({ error: document.querySelector('.login-error').textContent,
      hash: location.hash, stored: sessionStorage.getItem('trackside.token'),
      topbar_hidden: document.querySelector('#topbar').hidden }));
    await shot('share-expired');
    // 2. A sign-in kept in this tab whose JWT has expired since: the page opens on the sign-in form, with the reason.
    await page.evaluate((t) => sessionStorage.setItem('trackside.token', t), process.env.EXPIRED_JWT);
    await page.goto('about:blank'); // (a new hash alone would not load the page again)
    await page.goto(`${URL_}#/?period=7d`, { waitUntil: 'load' });
    await page.waitForSelector('#app[data-ready="login"] .login-error', WAIT);
    out.jwt = await page.evaluate(() => ({ error: document.querySelector('.login-error').textContent,
      hash: location.hash, stored: sessionStorage.getItem('trackside.token') }));
    // 3. A fresh token signs in from the form again.
    await page.fill('#token', TOKEN);
    await page.click('form.login button[type="submit"]');
    await page.waitForSelector('#app[data-ready="overview"]', WAIT);
    out.signed_in_again = await page.evaluate(() => location.hash);
    return out;
  }

  await page.goto(`${URL_}#token=${encodeURIComponent(TOKEN)}`, { waitUntil: 'load' });
  await page.waitForSelector('#app[data-ready="overview"] [data-chart="period"] .hit', WAIT);
  await page.waitForSelector('#app [data-chart="hourly"] .hit', WAIT);
  out.layout = await page.evaluate(layout);

  if (MODE === 'keyboard') {
    // Tab from the top of the page until the period chart has the focus (its one tab stop, the latest day).
    const tabInto = async (chart, most = 120) => {
      for (let i = 0; i < most; i += 1) {
        await page.keyboard.press('Tab');
        if (await page.evaluate((c) => Boolean(document.activeElement.closest(`[data-chart="${c}"]`)), chart)) return i + 1;
      }
      throw new Error(`Tab never reached the ${chart} chart`);
    };
    await page.evaluate(() => document.activeElement && document.activeElement.blur());
    out.tabs_to_period = await tabInto('period');
    await record('period_focus', 'period');
    await page.keyboard.press('ArrowLeft');
    await page.keyboard.press('ArrowLeft');
    await record('period_left2', 'period');
    await shot('keyboard');
    await page.keyboard.press('Home');
    await record('period_home', 'period');
    await page.keyboard.press('End');
    await record('period_end', 'period');
    await page.keyboard.press('Escape');
    await record('period_escape', 'period');
    await page.keyboard.press('ArrowLeft');
    await record('period_after_escape', 'period');
    out.tabs_to_hourly = await tabInto('hourly', 40);
    await record('hourly_focus', 'hourly');
    out.period_after_tab = await page.evaluate(chartState, 'period');
    // Left until a bar with page views has the focus.
    for (let i = 0; i < 30; i += 1) {
      const now = await page.evaluate(() => Number(document.activeElement.dataset.key !== undefined
        && document.querySelector(`[data-chart="hourly"] rect.bar[data-key="${document.activeElement.dataset.key}"]`).dataset.value));
      if (now > 0) break;
      await page.keyboard.press('ArrowLeft');
    }
    await record('hourly_busy', 'hourly');
    await page.keyboard.press('Shift+Tab');
    await record('back_to_period', 'period');
    return out;
  }

  // MODE=touch: taps at the centre of a point's hit column.
  const tapOn = async (selector) => {
    const el = await page.$(selector);
    if (!el) throw new Error(`nothing to tap at ${selector}`);
    await el.scrollIntoViewIfNeeded();
    const box = await el.boundingBox();
    await page.touchscreen.tap(box.x + box.width / 2, box.y + box.height / 2);
    await page.waitForTimeout(100);
  };
  const keys = JSON.parse(process.env.TAP_KEYS || '[]');
  await tapOn(`[data-chart="period"] .hit[data-key="${keys[0]}"]`);
  await record('tap_first', 'period');
  await shot('tap');
  await tapOn(`[data-chart="period"] .hit[data-key="${keys[1]}"]`);
  await record('tap_second', 'period');
  // A tap elsewhere (the period card's title) hides it.
  await tapOn('[data-panel="period"] .card-head h2');
  await record('tap_elsewhere', 'period');
  // A bar of the 24-hour chart: the busiest hour.
  const busiest = await page.evaluate(() => {
    const bars = Array.from(document.querySelectorAll('[data-chart="hourly"] rect.bar'));
    return bars.reduce((best, b) => (Number(b.dataset.value) > Number(best.dataset.value) ? b : best)).dataset.key;
  });
  await tapOn(`[data-chart="hourly"] .hit[data-key="${busiest}"]`);
  await record('tap_bar', 'hourly');
  out.period_after_bar = await page.evaluate(chartState, 'period');
  await tapOn('[data-panel="pages"] .card-head h2');
  await record('bar_elsewhere', 'hourly');
  await page.evaluate(() => window.scrollTo({ top: 0 }));
  await shot('top');
  out.layout_after = await page.evaluate(layout);
  return out;
}

try {
  await main();
  await run.close();
  console.log(JSON.stringify(out));
} catch (error) {
  console.error(error && error.stack ? error.stack : error);
  console.error(JSON.stringify(out).slice(0, 6000));
  await run.close();
  process.exit(1);
}
