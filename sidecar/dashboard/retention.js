// Trackside's dashboard: the retention panel (loaded after app.js, which mounts it on the overview).
// /_trackside/api/v2/retention?weeks=12: signed-in users by the week of their first signed-in request (a row per
// cohort week), and the share of them back in each later week, drawn as a grid shaded by that share. Anonymous
// visitors are not in it by design (their id is salted anew every day): the panel says so. Strings from the API
// reach the page through textContent only.
'use strict';

(() => {
  const API = 'api/v2/retention'; // relative to /_trackside/
  const WEEKS = 12;

  const { h, num } = window.TracksideDom;

  const capital = (text) => text.charAt(0).toUpperCase() + text.slice(1);
  const shortDate = (iso) => new Date(`${iso}T00:00:00Z`).toLocaleDateString('en', { month: 'short', day: 'numeric', timeZone: 'UTC' });

  async function ask(token, weeks) {
    const response = await fetch(`${API}?weeks=${weeks}`, {
      cache: 'no-store', credentials: 'omit', headers: { Authorization: `Bearer ${token}`, Accept: 'application/json' },
    });
    let answer = null;
    try {
      answer = await response.json();
    } catch (e) {
      answer = null;
    }
    if (!response.ok) throw new Error((answer && (answer.error || answer.detail)) || `HTTP ${response.status}`);
    return answer;
  }

  function grid(answer) {
    const weeks = Number(answer.weeks) || WEEKS;
    const head = h('tr', {}, h('th', { text: 'First seen (week of)' }), h('th', { class: 'num', text: 'Users' }),
      Array.from({ length: weeks }, (_, k) => h('th', { class: 'num', text: `W+${k + 1}` })));
    const rows = (answer.cohorts || []).map((c) => h('tr', { 'data-cohort': c.week, 'data-users': String(c.users) },
      h('th', { scope: 'row', text: shortDate(c.week) }),
      h('td', { class: 'num', text: num(c.users) }),
      c.shares.map((share, k) => {
        if (share === null) return h('td', { class: 'retention-cell future', 'aria-label': 'not yet' });
        const cell = h('td', { class: 'retention-cell num', 'data-share': String(share),
          title: `${num(c.retained[k])} of ${num(c.users)} back in week ${k + 1}`, text: c.users ? `${share}%` : '—' });
        // The shade: the share's own strength of the accent (a CSSOM property: no inline style attribute).
        if (c.users) cell.style.setProperty('--share', String(Math.min(100, Number(share)) / 100));
        return cell;
      })));
    return h('div', { class: 'retention-scroll' },
      h('table', { class: 'retention-grid', 'data-retention-weeks': String(weeks) },
        h('thead', {}, head), h('tbody', {}, rows)));
  }

  // The panel for the overview: `ctx` is {token}.
  function panel(ctx) {
    const body = h('div', { class: 'retention-body', 'data-retention-state': 'loading' }, h('p', { class: 'muted', text: 'Loading…' }));
    const section = h('section', { class: 'card wide', 'data-panel': 'retention' },
      h('header', { class: 'card-head' },
        h('div', {}, h('h2', { text: 'Retention of signed-in users' }),
          h('p', { class: 'card-sub', text: `weekly cohorts (UTC weeks from Monday), the last ${WEEKS + 1} weeks · from daily rows` }))),
      body);
    (async () => {
      try {
        const answer = await ask(ctx.token, WEEKS);
        const meta = answer.meta || {};
        const through = `Through ${answer.through}${answer.partial_week ? ' (its week so far)' : ''}.`;
        body.replaceChildren(grid(answer),
          h('p', { class: 'card-note', 'data-retention-anonymous': '1', text: `${through} ${capital(meta.anonymous || '')}.` }));
        body.dataset.retentionState = 'ready';
      } catch (error) {
        body.replaceChildren(h('p', { class: 'goal-error', role: 'alert', text: String(error.message || error) }));
        body.dataset.retentionState = 'error';
      }
    })();
    return section;
  }

  window.TracksideRetention = { panel };
})();
