// Trackside's dashboard: the journeys panel (loaded after app.js, which mounts it on the overview).
// For a chosen route label (or a path), /_trackside/api/v2/journeys answers the page before and the page after it
// within the same visit, for the overview's period and filters: drawn as a flow (previous labels -> the page ->
// next labels, each band as wide as its count) and as a table. Every string from the API reaches the page through
// textContent, never as HTML; the flow is SVG built through the DOM (attributes only, no inline style).
'use strict';

(() => {
  const API = 'api/v2/journeys'; // relative to /_trackside/
  const PICK_KEY = 'trackside.journey';
  const SVG = 'http://www.w3.org/2000/svg';

  const { h, num, pct } = window.TracksideDom;

  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined) continue;
      if (key === 'text') el.textContent = String(value);
      else el.setAttribute(key, String(value));
    }
    for (const child of children.flat()) if (child) el.append(child);
    return el;
  }

  const clip = (text, n) => (text.length > n ? `${text.slice(0, n - 1)}…` : text);

  async function ask(token, body) {
    const response = await fetch(API, {
      method: 'POST', cache: 'no-store', credentials: 'omit', body: JSON.stringify(body),
      headers: { Authorization: `Bearer ${token}`, Accept: 'application/json', 'Content-Type': 'application/json' },
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

  // The flow: the previous labels on the left, the page in the middle, the next ones on the right; each band's
  // width is its share of the page's views (the "others" beyond the listed rows get one band too).
  function flow(answer) {
    const W = 720;
    const rowH = 30;
    const side = (rows, others) => (others ? [...rows, { label: 'others', count: others, share: null }] : rows);
    const left = side(answer.previous || [], answer.previous_others);
    const right = side(answer.next || [], answer.next_others);
    const total = Math.max(1, Number(answer.pageviews) || 0);
    const n = Math.max(left.length, right.length, 1);
    const height = n * rowH + 20;
    const maxBand = rowH - 6;
    const centre = { x: W / 2 - 70, w: 140, y: 10, h: height - 20 };
    const midY = height / 2;
    const svg = s('svg', { class: 'journey-flow', viewBox: `0 0 ${W} ${height}`, role: 'img',
      'aria-label': `Pages before and after ${answer.page.label || answer.page.page}` });
    const band = (row, i, toRight) => {
      const y = 10 + i * rowH + rowH / 2;
      const width = Math.max(1.5, (maxBand * Number(row.count)) / total);
      const x1 = toRight ? centre.x + centre.w : 190;
      const x2 = toRight ? W - 190 : centre.x;
      const [ya, yb] = toRight ? [midY, y] : [y, midY];
      const path = s('path', { class: `journey-band${row.label === 'others' ? ' others' : ''}`,
        d: `M${x1},${ya} C${(x1 + x2) / 2},${ya} ${(x1 + x2) / 2},${yb} ${x2},${yb}`, 'stroke-width': width.toFixed(1),
        fill: 'none' }, s('title', { text: `${row.label}: ${num(row.count)}${row.share === null ? '' : ` (${pct(row.share)})`}` }));
      const text = s('text', { class: 'journey-label', x: toRight ? W - 184 : 184, y: y + 4,
        'text-anchor': toRight ? 'start' : 'end', text: `${clip(row.label, 22)} · ${num(row.count)}` });
      return [path, text];
    };
    left.forEach((row, i) => svg.append(...band(row, i, false)));
    right.forEach((row, i) => svg.append(...band(row, i, true)));
    svg.append(
      s('rect', { class: 'journey-page', x: centre.x, y: centre.y, width: centre.w, height: centre.h, rx: 8 }),
      s('text', { class: 'journey-page-label', x: W / 2, y: midY - 2, 'text-anchor': 'middle',
        text: clip(answer.page.label || answer.page.page, 18) }),
      s('text', { class: 'journey-page-sub', x: W / 2, y: midY + 14, 'text-anchor': 'middle',
        text: `${num(answer.pageviews)} views` }));
    return h('div', { class: 'journey-flow-wrap' }, svg);
  }

  function table(title, rows, others, side) {
    const body = rows.map((r) => h('tr', { 'data-journey-row': `${side}:${r.label}` },
      h('td', { class: 'mono', text: r.label }),
      h('td', { class: 'num', 'data-count': String(r.count), text: num(r.count) }),
      h('td', { class: 'num', text: pct(r.share) })));
    if (others) body.push(h('tr', { class: 'muted' }, h('td', { text: 'others' }), h('td', { class: 'num', text: num(others) }), h('td', {})));
    return h('table', { class: 'goals-table journey-table', 'data-journey-table': side },
      h('caption', { text: title }),
      h('thead', {}, h('tr', {}, ['Label', 'Views', 'Share'].map((t) => h('th', { text: t })))),
      h('tbody', {}, body.length ? body : [h('tr', {}, h('td', { colspan: '3', class: 'muted', text: 'None' }))]));
  }

  // The panel for the overview: `ctx` is {token, period: [from, to], filters (v2 filters), offer: the top pages panel's
  // values to offer, and whether they are paths (a label filter is on: the panel lists its paths)}.
  function panel(ctx) {
    const body = h('div', { class: 'journey-body', 'data-journey-state': 'loading' }, h('p', { class: 'muted', text: 'Loading…' }));
    const offered = (ctx.offer && ctx.offer.values) || [];
    const options = h('datalist', { id: 'journey-labels' }, offered.map((l) => h('option', { value: l })));
    const input = h('input', { class: 'mono journey-pick', 'data-journey-pick': '1', list: 'journey-labels',
      'aria-label': 'Route label, or a path', value: sessionStorage.getItem(PICK_KEY) || offered[0] || '/' });
    const form = h('form', { class: 'journey-form' }, input, options, h('button', { type: 'submit', class: 'ghost', text: 'Show' }));
    const section = h('section', { class: 'card wide', 'data-panel': 'journeys' },
      h('header', { class: 'card-head' },
        h('div', {}, h('h2', { text: 'Journeys' }),
          h('p', { class: 'card-sub', text: 'the page before and after a page within one visit · period and filters above' })),
        form),
      body);

    const show = async () => {
      const chosen = input.value.trim() || '/';
      sessionStorage.setItem(PICK_KEY, chosen);
      body.dataset.journeyState = 'loading';
      // A route label has brackets (/p/[id]) or is an offered label; an offered path, or anything else, is a path.
      const paths = Boolean(ctx.offer && ctx.offer.paths);
      const asLabel = chosen.includes('[') || (!paths && (offered.includes(chosen) || chosen === '/'));
      try {
        const answer = await ask(ctx.token, { date_range: ctx.period, filters: ctx.filters || [],
          ...(asLabel ? { label: chosen } : { page: chosen }) });
        if (!answer.pageviews) {
          body.replaceChildren(h('p', { class: 'muted', 'data-journey-empty': '1', text: `No views of ${chosen} in this period.` }));
          body.dataset.journeyState = 'empty';
          return;
        }
        body.replaceChildren(
          flow(answer),
          h('div', { class: 'grid two journey-tables' },
            table('Before it', answer.previous || [], answer.previous_others, 'previous'),
            table('After it', answer.next || [], answer.next_others, 'next')),
          h('p', { class: 'card-note', text: `${num(answer.pageviews)} views in ${num(answer.visits)} visits. `
            + `(entry): the visit began on it; (exit): the visit ended on it. Share: of the page's views.` }));
        body.dataset.journeyState = 'ready';
        body.dataset.journey = chosen;
      } catch (error) {
        body.replaceChildren(h('p', { class: 'goal-error', role: 'alert', text: String(error.message || error) }));
        body.dataset.journeyState = 'error';
      }
    };
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      show();
    });
    show();
    return section;
  }

  window.TracksideJourneys = { panel };
})();
