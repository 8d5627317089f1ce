/* Trackside web snippet: reports what a proxy cannot see. No dependencies, no cookies, no build step.
 *
 * On the site's own pages (served from the same origin as this script):
 * - a page view per navigation, client-side ones included (history.pushState/replaceState, popstate);
 *   the server drops the ones its proxy already saw, so each navigation counts once;
 * - impressions of elements marked data-trackside-item="artwork:a1" (inside an element with
 *   data-trackside-view="search" for search results, else "listing").
 * On any page, another site's included: widget views of elements marked data-trackside-widget="artwork:a1".
 * An item counts once per page, once at least half of it (or half the viewport) has been visible for
 * one second while the tab is in front.
 * With data-honor-dnt on its tag, nothing is sent when Do Not Track or Global Privacy Control is on.
 * Engagement (the site's own pages): once per page view, when the page is hidden or left (or a
 * client-side navigation leaves it), the deepest scroll (% of the page seen) and the milliseconds it
 * was visible; never two such beacons within ENGAGE_GAP ms (one that would be is not sent).
 */
(function () {
  'use strict';
  var w = window, d = document, nav = navigator, me = d.currentScript;
  if (!me || w.__trackside) return;
  if (me.hasAttribute('data-honor-dnt') &&
      (nav.doNotTrack === '1' || w.doNotTrack === '1' || nav.globalPrivacyControl === true)) return;
  var origin;
  try { origin = new URL(me.src, location.href).origin; } catch (e) { return; }
  w.__trackside = true;
  var endpoint = origin + '/_trackside/b';
  var home = origin === location.origin;
  var token = me.getAttribute('data-token') || '';
  var page = null, seen = {}, pending = {}, flushTimer = 0, scanTimer = 0, gen = 0, watched = [];
  var ENGAGE_GAP = 5000, depth = 0, shownMs = 0, shownSince = 0, engaged = false, lastEngage = -ENGAGE_GAP;

  function send(data) {
    if (home && token) data.k = token;
    var body = JSON.stringify(data);
    if (w.fetch) {
      // A keepalive fetch outlives the page like sendBeacon, and lets us read a renewed page token.
      fetch(endpoint, { method: 'POST', body: body, keepalive: true, credentials: 'omit',
                        mode: home ? 'same-origin' : 'no-cors' })
        .then(function (r) { var t = r.headers.get('x-trackside-token'); if (t) token = t; })
        .catch(function () {});
    } else if (!(nav.sendBeacon && nav.sendBeacon(endpoint, body))) {
      var q = [];
      for (var k in data) q.push(k + '=' + encodeURIComponent(data[k]));
      new Image().src = endpoint + '?' + q.join('&');
    }
  }

  function flush() {
    clearTimeout(flushTimer);
    for (var view in pending) {
      var items = pending[view];
      for (var i = 0; i < items.length; i += 40) {
        var part = items.slice(i, i + 40);
        send(view === 'widget' ? { t: 'widget', i: part, r: location.origin }
                               : { t: 'impression', p: page, v: view, i: part });
      }
    }
    pending = {};
  }

  function shown(el) {
    var item = el.getAttribute('data-trackside-widget'), view = 'widget';
    if (!item) {
      item = el.getAttribute('data-trackside-item');
      var box = el.closest('[data-trackside-view]');
      view = box && box.getAttribute('data-trackside-view') === 'search' ? 'search' : 'listing';
    }
    if (!item || seen[view + ' ' + item]) return;
    seen[view + ' ' + item] = 1;
    (pending[view] = pending[view] || []).push(item);
    clearTimeout(flushTimer);
    flushTimer = setTimeout(flush, 300);
  }

  var observer = w.IntersectionObserver && new IntersectionObserver(function (entries) {
    entries.forEach(function (e) {
      var el = e.target;
      var visible = e.isIntersecting &&
        (e.intersectionRatio >= 0.5 || e.intersectionRect.height >= w.innerHeight / 2);
      if (visible && !el.__tsTimer) {
        el.__tsTimer = setTimeout(function () {
          el.__tsTimer = 0;
          if (d.visibilityState === 'visible') shown(el);
        }, 1000);
      } else if (!visible && el.__tsTimer) {
        clearTimeout(el.__tsTimer);
        el.__tsTimer = 0;
      }
    });
  }, { threshold: [0, 0.5, 1] });

  function scan() {
    if (!observer) return;
    var found = d.querySelectorAll(home ? '[data-trackside-item],[data-trackside-widget]' : '[data-trackside-widget]');
    for (var i = 0; i < found.length; i++) {
      if (found[i].__tsGen !== gen) {
        found[i].__tsGen = gen;
        watched.push(found[i]);
        observer.observe(found[i]);
      }
    }
  }

  function now() { return w.performance && performance.now ? performance.now() : Date.now(); }

  function measure(e) {
    // Before the page has loaded its height is not final: only a scroll counts then.
    if (!e && d.readyState !== 'complete') return;
    var root = d.documentElement, body = d.body;
    var height = Math.max(root.scrollHeight, body ? body.scrollHeight : 0);
    var bottom = (w.pageYOffset || root.scrollTop || 0) + w.innerHeight;
    var pct = height > 0 ? Math.round(Math.min(1, bottom / height) * 100) : 100;
    if (pct > depth) depth = pct;
  }

  function engage() {
    if (page === null || engaged) return;
    engaged = true;
    if (shownSince) { shownMs += now() - shownSince; shownSince = d.visibilityState === 'visible' ? now() : 0; }
    var at = now();
    if (at - lastEngage < ENGAGE_GAP) return;
    lastEngage = at;
    send({ t: 'engagement', p: page, s: depth, m: Math.round(shownMs) });
  }

  function pageview() {
    var here = (location.pathname + location.search).slice(0, 512);
    if (here === page) return;
    var first = page === null;
    // The page left: what it saw is sent once, and the next one is measured from now.
    engage();
    depth = 0; shownMs = 0; engaged = false;
    shownSince = d.visibilityState === 'visible' ? now() : 0;
    // A new page: what the last one showed is sent, and every item may count again here.
    flush();
    if (observer) observer.disconnect();
    watched.forEach(function (el) { clearTimeout(el.__tsTimer); el.__tsTimer = 0; });
    watched = [];
    seen = {};
    gen++;
    page = here;
    send({ t: 'pageview', p: here, r: first ? d.referrer : '' });
    scan();
    measure();
  }

  function start() {
    if (!home) return scan();
    ['pushState', 'replaceState'].forEach(function (name) {
      var original = history[name];
      history[name] = function () {
        var out = original.apply(this, arguments);
        pageview();
        return out;
      };
    });
    w.addEventListener('popstate', pageview);
    w.addEventListener('scroll', measure, { passive: true });
    w.addEventListener('load', function () { measure(); });
    w.addEventListener('pagehide', engage);
    d.addEventListener('visibilitychange', function () {
      if (d.visibilityState === 'hidden') engage();
      else if (!shownSince) shownSince = now();
    });
    pageview();
  }
  // A prerendered page runs its scripts before anyone sees it: it counts once it is shown.
  if (d.prerendering) d.addEventListener('prerenderingchange', start, { once: true });
  else start();
  if (w.MutationObserver) {
    new MutationObserver(function () {
      clearTimeout(scanTimer);
      scanTimer = setTimeout(scan, 100);
    }).observe(d.documentElement, { childList: true, subtree: true });
  }
  w.addEventListener('pagehide', flush);
  d.addEventListener('visibilitychange', function () { if (d.visibilityState === 'hidden') flush(); });
})();
