// What every browser script here shares: Debian's Chromium (never a downloaded build) driven by playwright-core,
// started with the flags this machine needs, in a fresh profile directory that is removed afterwards.
import { mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

// playwright-core comes with the e2e site's `npm ci` (tests/e2e/nextsite/node_modules): one install for all.
const require = createRequire(new URL('./nextsite/package.json', import.meta.url));
const { chromium } = require('playwright-core');

export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
export const ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync',
];

export function profileDir(name) {
  return mkdtempSync(join(tmpdir(), `trackside-${name}-`));
}

export function removeProfile(dir) {
  rmSync(dir, { recursive: true, force: true });
}

export function launch(userDataDir, options = {}) {
  return chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM, headless: true, args: ARGS, timeout: 30000, ...options,
  });
}

// One browser run: a fresh profile, a watchdog that ends the process (exit 3) once `timeoutMs` has passed, and
// `close()`, which stops the watchdog, closes the browser (3 s at most) and removes the profile.
export function browserRun(name, timeoutMs) {
  const userDataDir = profileDir(name);
  let context = null;
  const close = async () => {
    clearTimeout(watchdog);
    const open = context;
    context = null;
    const closing = (async () => {
      if (open) await open.close().catch(() => {});
      removeProfile(userDataDir);
    })();
    await Promise.race([closing, new Promise((r) => setTimeout(r, 3000))]);
  };
  const watchdog = setTimeout(async () => {
    console.error(`${name}: overall timeout of ${timeoutMs} ms exceeded`);
    await close();
    process.exit(3);
  }, timeoutMs);
  return {
    async start(options = {}) {
      context = await launch(userDataDir, options);
      return context;
    },
    close,
  };
}
