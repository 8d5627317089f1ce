// Trackside's built-in dashboard: plain JavaScript, no library, no build step.
// The overview's period, filters and comparison are answered by the Query API v2 (/_trackside/api/v2/query); the
// 30-day poster parts (24 hours, signups, errors, popular items, bots) and item pages by /_trackside/api/v1/, all
// with the moderator's token (kept in sessionStorage). Goals are listed, added and removed through
// /_trackside/api/goals; the live view (#/live) asks v1 realtime and v2 every 5 s; CSV exports are built in the page.
// Every string from the API reaches the page through textContent or an attribute, never as HTML:
// page labels and referrers are whatever visitors sent.
'use strict';

(() => {
  const API = 'api/v1/'; // relative to /_trackside/
  const API_V2 = 'api/v2/query';
  const API_V2_BATCH = 'api/v2/batch';
  const API_GOALS = 'api/goals';
  const TOKEN_KEY = 'trackside.token';
  const MODE_KEY = 'trackside.mode';
  const SVG_NS = 'http://www.w3.org/2000/svg';
  // Content kinds, their popular panels and item rows (titles, links to the site's pages) are items.js's
  // (window.TracksideItems, loaded after this file): the kinds come from the site's settings, none are built in.
  let Items = null;
  const itemsReady = new Promise((resolve) => {
    if (window.TracksideItems) resolve(window.TracksideItems);
    else window.addEventListener('trackside-items', () => resolve(window.TracksideItems), { once: true });
  }).then((module) => { Items = module; return module; });
  const REALTIME_EVERY_MS = 30000;
  const LIVE_EVERY_MS = 5000; // the live view's refresh
  const LIVE_MINUTES = 30;
  const UNIQUE_NOTE = 'unique visitors = signed-in users merged + anonymous visitor-days';

  const state = {
    token: sessionStorage.getItem(TOKEN_KEY) || '',
    mode: sessionStorage.getItem(MODE_KEY) === 'auth' ? 'auth' : 'all',
    page: null, // {view: 'overview'} or {view: 'item', kind, id}
    data: null, // what the current page loaded
    seq: 0,
    timer: null,
  };

  // ------------------------------------------------------------------------------------------ DOM helpers

  const { h, setAttrs, numberFormat, num } = window.TracksideDom;

  function svg(tag, attrs, parent) {
    const el = document.createElementNS(SVG_NS, tag);
    setAttrs(el, attrs);
    if (parent) parent.append(el);
    return el;
  }

  const $ = (sel, root = document) => root.querySelector(sel);

  // ------------------------------------------------------------------------------------------ formatting

  const compactFormat = new Intl.NumberFormat('en', { notation: 'compact', maximumFractionDigits: 1 });
  const dayFormat = new Intl.DateTimeFormat('en', { month: 'short', day: 'numeric', timeZone: 'UTC' });
  const longDayFormat = new Intl.DateTimeFormat('en', {
    weekday: 'short', month: 'short', day: 'numeric', year: 'numeric', timeZone: 'UTC',
  });
  const timeFormat = new Intl.DateTimeFormat('en-GB', { hour: '2-digit', minute: '2-digit', timeZone: 'UTC' });
  const stampFormat = new Intl.DateTimeFormat('en', {
    month: 'short', day: 'numeric', year: 'numeric', hour: '2-digit', minute: '2-digit', hourCycle: 'h23',
    timeZone: 'UTC',
  });
  let regionNames = null;
  try {
    regionNames = new Intl.DisplayNames(['en'], { type: 'region' });
  } catch (e) {
    regionNames = null;
  }

  const compact = (n) => compactFormat.format(Number(n) || 0);
  const plural = (n, one, many) => `${num(n)} ${Number(n) === 1 ? one : many}`;
  const dayOf = (iso) => new Date(`${iso}T00:00:00Z`);
  const shortDay = (iso) => dayFormat.format(dayOf(iso));
  const longDay = (iso) => longDayFormat.format(dayOf(iso));
  const hourOf = (iso) => timeFormat.format(new Date(iso));
  const hourRange = (iso) => {
    const start = new Date(iso);
    return `${timeFormat.format(start)}–${timeFormat.format(new Date(start.getTime() + 3600e3))} UTC`;
  };
  const stamp = (iso) => (iso ? `${stampFormat.format(new Date(iso))} UTC` : '—');
  const share = (n, total) => {
    if (!total) return '';
    const p = (100 * n) / total;
    return p >= 10 || p === 0 ? `${Math.round(p)}%` : `${p.toFixed(1)}%`;
  };

  function countryName(code) {
    if (!/^[A-Z]{2}$/.test(code) || !regionNames) return code;
    try {
      const name = regionNames.of(code);
      return name && name !== code ? name : code;
    } catch (e) {
      return code;
    }
  }

  const capital = (s) => (s ? s.charAt(0).toUpperCase() + s.slice(1) : s);
  const ERROR_NAMES = {
    upstream_5xx: 'Upstream 5xx',
    upstream_unreachable: 'Upstream unreachable (502)',
    upstream_timeout: 'Upstream timeout (504)',
    not_found: 'Not found (404)',
  };
  const VIEW_TYPES = { view: 'Page view', listing: 'Feed / listing', search: 'Search result', widget: 'Widget',
    player: 'Player' };

  // ------------------------------------------------------------------------------------------ API

  class AuthError extends Error {
    constructor(status, detail) {
      super(detail || `HTTP ${status}`);
      this.status = status;
      this.detail = detail;
    }
  }

  async function api(path, { missingOk = false, refresh = false } = {}) {
    const url = API + path + (refresh ? `${path.includes('?') ? '&' : '?'}refresh=true` : '');
    const response = await fetch(url, {
      headers: { Authorization: `Bearer ${state.token}`, Accept: 'application/json' },
      cache: 'no-store',
      credentials: 'omit',
    });
    if (response.status === 401 || response.status === 403 || response.status === 429) {
      let detail = response.status === 429 ? `try again in ${response.headers.get('Retry-After') || 60} s` : '';
      if (response.status !== 429) {
        try {
          detail = String((await response.json()).detail || '');
        } catch (e) {
          detail = '';
        }
      }
      throw new AuthError(response.status, detail);
    }
    if (missingOk && (response.status === 404 || response.status === 400)) return null;
    if (!response.ok) throw new Error(`${path.split('?')[0]} answered HTTP ${response.status}`);
    return response.json();
  }

  // Each figure in the chosen mode: its `_authenticated` twin when signed-in is on and a twin exists.
  function pick(data, name) {
    if (!data) return undefined;
    if (state.mode === 'auth' && Object.prototype.hasOwnProperty.call(data, `${name}_authenticated`)) {
      return data[`${name}_authenticated`];
    }
    return data[name];
  }
  const hasTwin = (data, name) => Boolean(data) && Object.prototype.hasOwnProperty.call(data, `${name}_authenticated`);

  // ------------------------------------------------------------------------------------------ charts

  // Charts are drawn at their container's pixel width (crisp text at any size) and redrawn on resize.
  const drawers = new Map();
  function drawAt(draw, width) {
    if (draw && width > 0 && width !== draw.width) {
      draw.width = width;
      draw(width);
    }
  }

  const resizer = new ResizeObserver((entries) => {
    for (const entry of entries) drawAt(drawers.get(entry.target), Math.round(entry.contentRect.width));
  });

  function mount(wrap, draw) {
    drawers.set(wrap, draw);
    resizer.observe(wrap);
  }

  // Charts mounted by a render, drawn at once once the page is in the document: the ResizeObserver would
  // draw them only at the next rendering step, after the page says it is ready (a test, or a reader's
  // first frame, would find it without its charts).
  function drawMounted() {
    for (const [wrap, draw] of drawers) {
      const style = getComputedStyle(wrap);
      drawAt(draw, Math.round(wrap.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight)));
    }
  }

  function unmountAll() {
    for (const el of drawers.keys()) resizer.unobserve(el);
    drawers.clear();
  }

  function niceScale(max, count = 4) {
    const top = Math.max(1, max);
    const raw = top / count;
    const mag = 10 ** Math.floor(Math.log10(raw));
    const norm = raw / mag;
    let step = (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 2.5 ? 2.5 : norm <= 5 ? 5 : 10) * mag;
    step = Math.max(1, Math.ceil(step));
    const end = Math.ceil(top / step) * step;
    const ticks = [];
    for (let t = 0; t <= end; t += step) ticks.push(t);
    return { end, ticks };
  }

  function emptyState(text, sub) {
    return h('div', { class: 'empty', 'data-empty': '1' },
      h('div', { class: 'empty-mark', 'aria-hidden': 'true' }),
      h('p', { class: 'empty-title', text: text || 'No data yet' }),
      sub ? h('p', { class: 'empty-sub', text: sub }) : null);
  }

  function tooltip(wrap) {
    const tip = h('div', { class: 'tip', role: 'status', hidden: true });
    wrap.append(tip);
    return {
      show(x, y, title, rows) {
        tip.replaceChildren(h('div', { class: 'tip-title', text: title }));
        for (const [label, value, cls] of rows) {
          tip.append(h('div', { class: 'tip-row' },
            h('span', { class: `swatch ${cls || ''}` }), h('span', { class: 'tip-label', text: label }),
            h('span', { class: 'tip-value', text: value })));
        }
        tip.hidden = false;
        const width = wrap.clientWidth;
        const tw = tip.offsetWidth;
        let left = x + 14;
        if (left + tw > width - 4) left = Math.max(4, x - tw - 14);
        tip.style.left = `${left}px`;
        tip.style.top = `${Math.max(0, y - 10)}px`;
      },
      hide() {
        tip.hidden = true;
      },
    };
  }

  function xLabelEvery(count, innerWidth, minGap) {
    return Math.max(1, Math.ceil(count / Math.max(1, Math.floor(innerWidth / minGap))));
  }

  // A line chart over days: `points` [{key, values: {series: n}}], `series` [{id, name, cls, area, dots}].
  function lineChart({ name, points, series, label, height = 260, emptyText, emptySub,
    format = { short: shortDay, long: longDay } }) {
    const wrap = h('div', { class: 'chart', 'data-chart': name });
    const total = points.reduce((sum, p) => sum + series.reduce((s, se) => s + (p.values[se.id] || 0), 0), 0);
    if (!total) {
      wrap.append(emptyState(emptyText, emptySub));
      return wrap;
    }
    const holder = h('div', { class: 'svg-holder' });
    wrap.append(holder);
    const tip = tooltip(wrap);
    const chartId = `c${Math.random().toString(36).slice(2, 8)}`;

    mount(wrap, (width) => {
      const H = width < 520 ? Math.round(height * 0.8) : height;
      const max = Math.max(...points.flatMap((p) => series.map((se) => p.values[se.id] || 0)));
      const scale = niceScale(max);
      const m = { l: 12 + 7 * compact(scale.end).length, r: 14, t: 14, b: 30 };
      const iw = width - m.l - m.r;
      const ih = H - m.t - m.b;
      const n = points.length;
      const x = (i) => m.l + (n === 1 ? iw / 2 : (i * iw) / (n - 1));
      const y = (v) => m.t + ih - (v / scale.end) * ih;
      const root = svg('svg', {
        width, height: H, viewBox: `0 0 ${width} ${H}`, role: 'img', 'aria-label': label, class: 'chart-svg',
      });
      const defs = svg('defs', {}, root);
      for (const se of series.filter((s) => s.area)) {
        const grad = svg('linearGradient', { id: `${chartId}-${se.id}`, x1: 0, y1: 0, x2: 0, y2: 1 }, defs);
        svg('stop', { offset: '0%', class: `stop-top ${se.cls}` }, grad);
        svg('stop', { offset: '100%', class: `stop-bottom ${se.cls}` }, grad);
      }
      const grid = svg('g', { class: 'grid' }, root);
      for (const t of scale.ticks) {
        svg('line', { x1: m.l, x2: width - m.r, y1: y(t), y2: y(t), class: t === 0 ? 'baseline' : 'gridline' }, grid);
        svg('text', { x: m.l - 8, y: y(t) + 4, 'text-anchor': 'end', class: 'tick', text: compact(t) }, grid);
      }
      const every = xLabelEvery(n, iw, 64);
      for (let i = n - 1; i >= 0; i -= every) {
        const anchor = i === n - 1 ? 'end' : i === 0 ? 'start' : 'middle';
        svg('text', { x: x(i), y: H - 9, 'text-anchor': anchor, class: 'tick', text: format.short(points[i].key) }, grid);
      }
      const guide = svg('line', { x1: 0, x2: 0, y1: m.t, y2: m.t + ih, class: 'guide', visibility: 'hidden' }, root);
      const dots = [];
      for (const se of [...series].reverse()) { // the first series is the main one: drawn last, on top
        const g = svg('g', { class: `series ${se.cls}`, 'data-series': se.id }, root);
        const coords = points.map((p, i) => [x(i), y(p.values[se.id] || 0)]);
        const line = coords.map(([px, py], i) => `${i ? 'L' : 'M'}${px.toFixed(1)},${py.toFixed(1)}`).join('');
        if (se.area) {
          const area = `${line}L${x(n - 1).toFixed(1)},${y(0)}L${x(0).toFixed(1)},${y(0)}Z`;
          svg('path', { d: area, class: 'area', fill: `url(#${chartId}-${se.id})` }, g);
        }
        svg('path', { d: line, class: se.dashed ? 'line dashed' : 'line' }, g);
        dots.unshift(coords.map(([px, py], i) => svg('circle', {
          cx: px, cy: py, r: se.dots ? 2.6 : 3,
          class: `pt${se.dots ? '' : ' pt-quiet'}${points[i].values[se.id] ? '' : ' pt-zero'}`,
          'data-key': points[i].key, 'data-value': points[i].values[se.id] || 0,
        }, g)));
      }
      // One hit column per point (by mouse, touch and keyboard: touch.js), over the whole plot's height.
      const hitLayer = svg('g', { class: 'hits' }, root);
      const half = n === 1 ? iw / 2 + 6 : iw / (n - 1) / 2;
      const hits = points.map((p, i) => {
        const left = Math.max(m.l - 6, x(i) - half);
        return svg('rect', { x: left.toFixed(1), y: 0, width: (Math.min(width - m.r + 6, x(i) + half) - left).toFixed(1),
          height: H, class: 'overlay', 'data-key': p.key }, hitLayer);
      });
      let active = -1;
      const focus = (i) => {
        if (i === active) return;
        if (active >= 0) dots.forEach((list) => list[active].classList.remove('on'));
        active = i;
        if (i < 0) {
          guide.setAttribute('visibility', 'hidden');
          tip.hide();
          return;
        }
        dots.forEach((list) => list[i].classList.add('on'));
        guide.setAttribute('x1', x(i));
        guide.setAttribute('x2', x(i));
        guide.setAttribute('visibility', 'visible');
        tip.show(x(i), m.t + 8, format.long(points[i].key),
          series.map((se) => [se.name, num(points[i].values[se.id] || 0), se.cls]));
      };
      const values = (i) => series.map((se) => `${se.name} ${num(points[i].values[se.id] || 0)}`).join(', ');
      window.TracksideCharts.interact(root, { hits, show: focus, hide: () => focus(-1),
        label: (i) => `${format.long(points[i].key)}: ${values(i)}` });
      holder.replaceChildren(root);
    });
    return wrap;
  }

  // A bar chart: `points` [{key, value, title, detail}], x labels from `tickLabel(point, i)` (null: none).
  function barChart({ name, points, label, height = 220, tickLabel, minGap = 44, valueName, emptyText, emptySub,
    cls = 'c1', extra }) {
    const wrap = h('div', { class: 'chart', 'data-chart': name });
    if (!points.some((p) => p.value)) {
      wrap.append(emptyState(emptyText, emptySub));
      return wrap;
    }
    const holder = h('div', { class: 'svg-holder' });
    wrap.append(holder);
    const tip = tooltip(wrap);
    mount(wrap, (width) => {
      const H = width < 520 ? Math.round(height * 0.85) : height;
      const max = Math.max(...points.map((p) => p.value));
      const scale = niceScale(max);
      const m = { l: 12 + 7 * compact(scale.end).length, r: 10, t: 14, b: 30 };
      const iw = width - m.l - m.r;
      const ih = H - m.t - m.b;
      const n = points.length;
      const step = iw / n;
      const bw = Math.max(2, Math.min(28, step * 0.66));
      const y = (v) => m.t + ih - (v / scale.end) * ih;
      const root = svg('svg', {
        width, height: H, viewBox: `0 0 ${width} ${H}`, role: 'img', 'aria-label': label, class: 'chart-svg',
      });
      const grid = svg('g', { class: 'grid' }, root);
      for (const t of scale.ticks) {
        svg('line', { x1: m.l, x2: width - m.r, y1: y(t), y2: y(t), class: t === 0 ? 'baseline' : 'gridline' }, grid);
        svg('text', { x: m.l - 8, y: y(t) + 4, 'text-anchor': 'end', class: 'tick', text: compact(t) }, grid);
      }
      const every = xLabelEvery(n, iw, minGap);
      for (let i = n - 1; i >= 0; i -= every) {
        const text = tickLabel ? tickLabel(points[i], i) : null;
        if (text) svg('text', { x: m.l + step * (i + 0.5), y: H - 9, 'text-anchor': 'middle', class: 'tick', text }, grid);
      }
      const g = svg('g', { class: `series ${cls}`, 'data-series': 'value' }, root);
      const bars = points.map((p, i) => {
        const bh = p.value ? Math.max(2, y(0) - y(p.value)) : 0;
        return svg('rect', {
          x: (m.l + step * i + (step - bw) / 2).toFixed(1), y: (y(0) - bh).toFixed(1), width: bw.toFixed(1),
          height: bh.toFixed(1), rx: Math.min(3, bw / 3), class: 'bar', 'data-key': p.key, 'data-value': p.value,
        }, g);
      });
      const hitLayer = svg('g', { class: 'hits' }, root);
      const hits = points.map((p, i) => svg('rect', { x: m.l + step * i, y: m.t, width: step, height: ih + 4,
        class: 'overlay', 'data-key': p.key }, hitLayer));
      const rowsOf = (p) => [[valueName, num(p.value), cls], ...(extra ? extra(p) : [])];
      // Mouse, touch and keyboard (touch.js): each bar a focusable hit area named with its exact figures.
      window.TracksideCharts.interact(root, { hits,
        label: (i) => `${points[i].title}: ${rowsOf(points[i]).map(([k, v]) => `${k} ${v}`).join(', ')}`,
        show: (i) => {
          bars.forEach((b, j) => b.classList.toggle('dim', j !== i));
          tip.show(m.l + step * (i + 0.5), Math.min(y(points[i].value), m.t + ih / 2), points[i].title, rowsOf(points[i]));
        },
        hide: () => {
          bars.forEach((b) => b.classList.remove('dim'));
          tip.hide();
        } });
      holder.replaceChildren(root);
    });
    return wrap;
  }

  // Three small figures under a 24-hour chart: the total, the busiest hour, the current hour.
  function hourSummary(points, one, many) {
    const total = points.reduce((sum, p) => sum + p.value, 0);
    const busiest = points.reduce((best, p) => (p.value > (best ? best.value : 0) ? p : best), null);
    const current = points.length ? points[points.length - 1] : null;
    const stat = (label, value, sub) => h('div', { class: 'stat' },
      h('span', { class: 'stat-label', text: label }), h('span', { class: 'stat-value', text: value }),
      h('span', { class: 'stat-sub', text: sub }));
    return h('div', { class: 'stats', 'data-summary': 'hourly' },
      stat('24 hours', num(total), Number(total) === 1 ? one : many),
      stat('Busiest hour', busiest ? hourOf(busiest.key) : '—', busiest ? `${plural(busiest.value, one, many)} · UTC` : 'none yet'),
      stat('This hour', current ? num(current.value) : '0', current ? `since ${hourOf(current.key)} UTC` : ''));
  }

  // A tiny trend line for a KPI card: no axes, drawn in a 100x28 box stretched to the card.
  function sparkline(values, cls) {
    if (!values || !values.some((v) => v)) return h('div', { class: 'spark spark-empty' });
    const max = Math.max(...values);
    const n = values.length;
    const pts = values.map((v, i) => `${((i / Math.max(1, n - 1)) * 100).toFixed(2)},${(26 - (v / max) * 24).toFixed(2)}`);
    const root = svg('svg', { viewBox: '0 0 100 28', preserveAspectRatio: 'none', class: `spark ${cls || 'c1'}`,
      'aria-hidden': 'true' });
    svg('path', { d: `M${pts.join('L')}L100,28L0,28Z`, class: 'spark-area' }, root);
    svg('path', { d: `M${pts.join('L')}`, class: 'spark-line' }, root);
    return root;
  }

  // ------------------------------------------------------------------------------------------ panels

  // A horizontal bar list of a {key: count} map, largest first.
  // `onPick(key)`: rows are buttons (a click adds a filter); `active`: the keys already filtered on.
  function barList({ name, data, limit = 8, label = (k) => k, mono = false, emptyText = 'No data yet', tone, onPick,
    active = [], pickTitle, detail, shares = true }) {
    const entries = Object.entries(data || {})
      .map(([k, v]) => [k, Number(v) || 0])
      .filter(([, v]) => v > 0)
      .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    if (!entries.length) {
      return h('div', { class: 'list-empty', 'data-list': name, 'data-empty': '1' }, h('span', { text: emptyText }));
    }
    const total = entries.reduce((s, [, v]) => s + v, 0);
    const max = entries[0][1];
    const list = h('ol', { class: `bars ${tone || ''}`, 'data-list': name });
    entries.forEach(([key, value], i) => {
      const fill = h('span', { class: 'fill', 'aria-hidden': 'true' });
      fill.style.width = `${Math.max(1.5, (100 * value) / max)}%`;
      const shown = label(key);
      const classes = ['bar-row', i >= limit ? 'more' : '', onPick ? 'pick' : '', active.includes(key) ? 'active' : '']
        .filter(Boolean).join(' ');
      const row = h('li', { class: classes, 'data-key': key, 'data-value': value,
        title: `${pickTitle ? `${pickTitle}: ` : ''}${typeof shown === 'string' ? shown : key}: ${num(value)} (${share(value, total)})`,
        role: onPick ? 'button' : null, tabindex: onPick ? '0' : null,
        onclick: onPick ? () => onPick(key) : null,
        onkeydown: onPick ? (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); onPick(key); } } : null },
      fill,
      h('span', { class: mono ? 'bar-label mono' : 'bar-label' }, shown),
      detail ? h('span', { class: 'bar-detail', 'data-detail': detail(key), text: detail(key) }) : null,
      shares ? h('span', { class: 'bar-share', text: share(value, total) }) : null,
      h('span', { class: 'bar-value', text: num(value) }));
      list.append(row);
    });
    if (entries.length <= limit) return list;
    const more = h('button', { type: 'button', class: 'link-button', text: `Show all ${entries.length}` });
    more.addEventListener('click', () => {
      const open = list.classList.toggle('open');
      more.textContent = open ? 'Show fewer' : `Show all ${entries.length}`;
    });
    return h('div', {}, list, more);
  }

  function countryLabel(code) {
    const name = countryName(code);
    if (name === code) return h('span', { text: code });
    return h('span', {}, h('span', { class: 'code', text: code }), name);
  }

  function card({ title, sub, note, cls, body, action, name }) {
    return h('section', { class: `card ${cls || ''}`, 'data-panel': name },
      h('header', { class: 'card-head' },
        h('div', {}, h('h2', { text: title }), sub ? h('p', { class: 'card-sub', text: sub }) : null),
        action || null),
      body,
      note ? h('p', { class: 'card-note', text: note }) : null);
  }

  function help(text) {
    if (!text) return null;
    return h('span', { class: 'help', tabindex: '0', role: 'note', 'aria-label': text },
      h('span', { class: 'help-mark', text: '?', 'aria-hidden': 'true' }),
      h('span', { class: 'help-tip', text: capital(String(text)) }));
  }

  // A KPI card. `split` false: the figure has no signed-in twin (it stays the all-visitors figure).
  function kpi({ name, title, value, note, definition, spark, sparkCls, split = true, live = false, delta: change }) {
    const notSplit = state.mode === 'auth' && !split;
    return h('div', { class: `kpi${notSplit ? ' not-split' : ''}${live ? ' live' : ''}`, 'data-kpi': name },
      h('div', { class: 'kpi-head' },
        live ? h('span', { class: 'pulse', 'aria-hidden': 'true' }) : null,
        h('span', { class: 'kpi-title', text: title }), help(definition)),
      h('div', { class: 'kpi-value', text: value }),
      change || null,
      h('div', { class: 'kpi-note', title: note || null }, notSplit ? h('span', { class: 'tag', text: 'all visitors' }) : null, note || ''),
      spark ? sparkline(spark, sparkCls) : null);
  }

  const counts = (series, field = 'count') => (series || []).map((p) => Number(p[field]) || 0);

  function modeBanner() {
    if (state.mode !== 'auth') return null;
    return h('div', { class: 'banner' },
      h('strong', { text: 'Signed-in visitors only. ' }),
      'Every figure with a signed-in twin shows it; figures marked “all visitors” have none.');
  }

  // ------------------------------------------------------------------------------------------ the view (in the URL)

  // Period, comparison and filters live in the hash (`#/?period=7d&compare=1&f=visit:source|Reddit`), so a view
  // can be bookmarked and shared. Every day is a UTC day.
  const PERIODS = [
    ['today', 'Today'], ['yesterday', 'Yesterday'], ['7d', 'Last 7 days'], ['30d', 'Last 30 days'],
    ['month', 'This month'], ['last_month', 'Last month'], ['12mo', 'Last 12 months'], ['custom', 'Custom range'],
  ];
  const DIM_NAMES = {
    'event:page': 'Page', 'event:props:label': 'Route', 'event:goal': 'Goal', 'visit:source': 'Source',
    'visit:referrer': 'Referrer', 'visit:utm_source': 'UTM source', 'visit:utm_medium': 'UTM medium',
    'visit:utm_campaign': 'UTM campaign', 'visit:country': 'Country', 'visit:device': 'Device',
    'visit:browser': 'Browser', 'visit:os': 'OS', 'visit:entry_page': 'Entry page', 'visit:exit_page': 'Exit page',
    'event:props:view_type': 'View type', 'event:props:content_id': 'Item',
  };
  // Looks (content views) have their own facts: the query engine filters them by these only, and filters visit
  // figures by none of the look-only ones (view type, item).
  const LOOK_ONLY = new Set(['event:props:view_type', 'event:props:content_id']);
  const LOOK_FILTERS = new Set([...LOOK_ONLY, 'visit:device', 'visit:country', 'visit:referrer']);
  const ISO_DAY = /^\d{4}-\d{2}-\d{2}$/;
  const isoOf = (d) => d.toISOString().slice(0, 10);
  const todayIso = () => isoOf(new Date());
  const addDays = (iso, n) => isoOf(new Date(dayOf(iso).getTime() + n * 864e5));
  const daysBetween = (a, b) => Math.round((dayOf(b) - dayOf(a)) / 864e5) + 1;
  const monthStart = (iso, back = 0) => {
    const d = dayOf(iso);
    return isoOf(new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth() - back, 1)));
  };

  function parseView(query) {
    const params = new URLSearchParams(query || '');
    let period = params.get('period') || '30d';
    if (!PERIODS.some(([p]) => p === period)) period = '30d';
    let from = params.get('from') || '';
    let to = params.get('to') || '';
    if (period === 'custom' && !(ISO_DAY.test(from) && ISO_DAY.test(to))) period = '30d';
    if (period === 'custom' && from > to) [from, to] = [to, from];
    const filters = [];
    for (const f of params.getAll('f')) {
      const at = f.indexOf('|');
      const dim = at > 0 ? f.slice(0, at) : '';
      if (DIM_NAMES[dim] && !filters.some(([d, v]) => d === dim && v === f.slice(at + 1))) {
        filters.push([dim, f.slice(at + 1)]);
      }
    }
    return { period, from, to, compare: params.get('compare') === '1', filters };
  }

  function viewHash(view) {
    const params = new URLSearchParams();
    params.set('period', view.period);
    if (view.period === 'custom') {
      params.set('from', view.from);
      params.set('to', view.to);
    }
    if (view.compare) params.set('compare', '1');
    for (const [dim, value] of view.filters) params.append('f', `${dim}|${value}`);
    return `#/?${params.toString()}`;
  }

  function go(change) {
    const next = { ...state.page.viewState, ...change };
    location.hash = viewHash(next);
  }

  // The period's first and last UTC day, and the previous period of as many days just before it.
  function rangeOf(view) {
    const t = todayIso();
    const ranges = {
      today: [t, t],
      yesterday: [addDays(t, -1), addDays(t, -1)],
      '7d': [addDays(t, -6), t],
      '30d': [addDays(t, -29), t],
      month: [monthStart(t), t],
      last_month: [monthStart(t, 1), addDays(monthStart(t), -1)],
      '12mo': [monthStart(t, 11), t],
      custom: [view.from, view.to],
    };
    const [from, to] = ranges[view.period];
    const days = daysBetween(from, to);
    return { from, to, days, prev: [addDays(from, -days), addDays(from, -1)],
      grain: days === 1 ? 'hour' : days <= 92 ? 'day' : 'month' };
  }

  // Chips of one dimension are alternatives (is any of), different dimensions all apply.
  function v2Filters(filters) {
    const byDim = new Map();
    for (const [dim, value] of filters) byDim.set(dim, [...(byDim.get(dim) || []), value]);
    return [...byDim].map(([dim, values]) => ['is', dim, values]);
  }

  async function query(body) {
    return v2Call(API_V2, body);
  }

  // Several v2 queries in one request (`/_trackside/api/v2/batch`): a promise per query, in their order, each
  // its answer or its refusal (an Error naming it); a refused token rejects them all (AuthError). One request
  // instead of one each: the browser opens at most 6 connections to a host, the sidecar answers them together.
  function queryBatch(bodies) {
    const all = v2Call(API_V2_BATCH, { queries: bodies });
    return bodies.map((_, i) => all.then(({ results }) => {
      const got = results[i];
      if (got.status !== 200) throw new Error(got.error || `the query answered HTTP ${got.status}`);
      return got.answer;
    }));
  }

  async function v2Call(url, body) {
    const response = await fetch(url, {
      method: 'POST',
      headers: { Authorization: `Bearer ${state.token}`, Accept: 'application/json', 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
      cache: 'no-store',
      credentials: 'omit',
    });
    let answer = null;
    try {
      answer = await response.json();
    } catch (e) {
      answer = null;
    }
    if (response.status === 429) {
      throw new AuthError(429, `try again in ${response.headers.get('Retry-After') || 60} s`);
    }
    if (response.status === 401 || response.status === 403) throw new AuthError(response.status, answer && answer.error);
    if (!response.ok) throw new Error((answer && answer.error) || `the query answered HTTP ${response.status}`);
    return answer;
  }

  // The goals API (`/_trackside/api/goals`): its refusals are `{"detail": "field: why"}`, shown as they are.
  async function goalsCall(method, { body, name } = {}) {
    const headers = { Authorization: `Bearer ${state.token}`, Accept: 'application/json' };
    if (body) headers['Content-Type'] = 'application/json';
    // A name in the query string, not the path: a goal's name may hold a slash.
    const url = API_GOALS + (name ? `?name=${encodeURIComponent(name)}` : '');
    const response = await fetch(url, { method, headers, body: body ? JSON.stringify(body) : undefined,
      cache: 'no-store', credentials: 'omit' });
    if (response.status === 204) return null;
    let answer = null;
    try {
      answer = await response.json();
    } catch (e) {
      answer = null;
    }
    if (!response.ok) throw new Error((answer && answer.detail) || `the goals API answered HTTP ${response.status}`);
    return answer;
  }

  const CARD_METRICS = ['visitors', 'visits', 'pageviews', 'views_per_visit', 'bounce_rate', 'visit_duration'];

  // The panels: each a breakdown by one dimension, every row a filter.
  function panelSpecs(view) {
    const label = view.filters.find(([d]) => d === 'event:props:label');
    return [
      label
        ? { name: 'pages', title: 'Top pages', sub: `paths of ${label[1]} · page views`, dim: 'event:page', metric: 'pageviews', mono: true, timeOnPage: true }
        : { name: 'pages', title: 'Top pages', sub: 'page views by route · a route opens its paths', dim: 'event:props:label', metric: 'pageviews', mono: true, timeOnPage: true },
      { name: 'entry_pages', title: 'Entry pages', sub: 'visits starting there', dim: 'visit:entry_page', metric: 'visits', mono: true },
      { name: 'exit_pages', title: 'Exit pages', sub: 'visits ending there', dim: 'visit:exit_page', metric: 'visits', mono: true },
      { name: 'sources', title: 'Sources', sub: 'visitors', dim: 'visit:source', metric: 'visitors' },
      { name: 'referrers', title: 'Referrers', sub: 'visitors arriving from another site', dim: 'visit:referrer', metric: 'visitors', mono: true, hide: ['Direct / None'], emptyText: 'No referrers yet' },
      { name: 'countries', title: 'Countries', sub: 'visitors', dim: 'visit:country', metric: 'visitors', label: countryLabel },
      { name: 'utm_source', title: 'UTM source', sub: 'visitors', dim: 'visit:utm_source', metric: 'visitors', hide: ['(not set)'], emptyText: 'No UTM-tagged visits' },
      { name: 'utm_medium', title: 'UTM medium', sub: 'visitors', dim: 'visit:utm_medium', metric: 'visitors', hide: ['(not set)'], emptyText: 'No UTM-tagged visits' },
      { name: 'utm_campaign', title: 'UTM campaign', sub: 'visitors', dim: 'visit:utm_campaign', metric: 'visitors', hide: ['(not set)'], emptyText: 'No UTM-tagged visits' },
      { name: 'devices', title: 'Devices', sub: 'visitors', dim: 'visit:device', metric: 'visitors' },
      { name: 'browsers', title: 'Browsers', sub: 'visitors', dim: 'visit:browser', metric: 'visitors' },
      { name: 'os', title: 'Operating systems', sub: 'visitors', dim: 'visit:os', metric: 'visitors' },
      { name: 'goals', title: 'Goals', sub: 'visitors who reached each · conversion rate', dim: 'event:goal', metric: 'visitors', conversion: true, emptyText: 'No goal reached (or none defined)' },
      { name: 'view_types', title: 'Looks by view type', sub: 'content views: web pages, players, widgets', dim: 'event:props:view_type', metric: 'content_views', looks: true, label: (k) => VIEW_TYPES[k] || capital(k), emptyText: 'No content views' },
      { name: 'items', title: 'Looked-at items', sub: 'content views by item', dim: 'event:props:content_id', metric: 'content_views', looks: true, mono: true, titles: true, emptyText: 'No content views' },
    ];
  }

  // The pages panels also show time on page (Plausible's `time_on_page`: seconds until the visitor's next page).
  // The goals panel also shows each goal's conversion rate (percent of the period's visitors).
  const panelMetrics = (spec) => [spec.metric, ...(spec.timeOnPage ? ['time_on_page'] : []),
    ...(spec.conversion ? ['conversion_rate'] : [])];

  function panelBody(spec, period, filters) {
    const metrics = panelMetrics(spec);
    return { metrics, date_range: period, filters, dimensions: [spec.dim],
      order_by: [[spec.metric, 'desc'], [spec.dim, 'asc']], pagination: { limit: 100 },
      ...(spec.titles ? { include: { titles: true } } : {}) }; // items' titles: items.js
  }

  // Everything the overview's v2 part asks: the cards, the chart, each panel; the previous period when comparing.
  // The cards' query goes first, alone: a refused token costs one refusal, not twenty (the sidecar limits refused
  // tokens per minute and address); the rest are asked together once it is answered.
  async function loadQueries(view, afterCards = () => []) {
    const range = rangeOf(view);
    const filters = v2Filters(view.filters.filter(([d]) => !LOOK_ONLY.has(d)));
    const lookFilters = v2Filters(view.filters.filter(([d]) => LOOK_FILTERS.has(d)));
    const period = [range.from, range.to];
    const previous = range.prev;
    const timeDim = `time:${range.grain}`;
    const series = (dr) => ({ metrics: ['visitors', 'pageviews'], date_range: dr, filters,
      dimensions: [timeDim], include: { time_labels: true } });
    const specs = panelSpecs(view);
    const cards = await query({ metrics: CARD_METRICS, date_range: period, filters });
    const others = afterCards();
    for (const other of others) other.catch(() => {}); // awaited below; a refusal there is not left unhandled
    // The chart, the previous period's and every panel in one batch; but the top pages panel alone, beside it: the
    // journeys panel starts from its rows (`earlyPanels`).
    const pagesAt = specs.findIndex((spec) => spec.name === 'pages');
    const bodies = [
      view.compare ? { metrics: CARD_METRICS, date_range: previous, filters } : null,
      series(period),
      view.compare ? series(previous) : null,
      ...specs.map((spec, i) => (i === pagesAt ? null : panelBody(spec, period, spec.looks ? lookFilters : filters))),
    ];
    const pages = pagesAt >= 0 ? query(panelBody(specs[pagesAt], period, filters)) : null;
    const answers = queryBatch(bodies.filter(Boolean));
    const answered = bodies.map((body, i) => (body ? answers.shift() : i === 3 + pagesAt ? pages : null));
    const first = answered.slice(0, 3);
    const asked = answered.slice(3).map((answer) => answer
      .catch((e) => (e instanceof AuthError ? Promise.reject(e) : { error: String(e.message || e) })));
    const early = earlyPanels(period, filters, specs, asked);
    const [prevCards, chart, prevChart, ...panels] = await Promise.all([...first, ...asked]);
    return { q: { view, range, cards, prevCards, chart, prevChart, specs, panels, early },
      others: await Promise.all(others) };
  }

  // The funnel, journeys and retention panels load by themselves (funnels.js, journeys.js, retention.js): they are
  // made here, so that their queries are asked beside the panels' (journeys once the top pages are known, it offers
  // them), not after the whole overview is drawn; the overview's first drawing takes them (`takeEarly`).
  function earlyPanels(period, filters, specs, asked) {
    const early = {};
    if (window.TracksideFunnels) early.funnels = window.TracksideFunnels.panel({ token: state.token, period, filters });
    if (window.TracksideRetention) early.retention = window.TracksideRetention.panel({ token: state.token });
    const at = specs.findIndex((spec) => spec.name === 'pages');
    if (window.TracksideJourneys && at >= 0) {
      asked[at].then((answer) => {
        const panels = specs.map((spec, i) => (i === at ? answer : null));
        early.journeys = window.TracksideJourneys.panel({ token: state.token, period, filters,
          offer: pageOffer({ specs, panels }) });
      }, () => {});
    }
    return early;
  }

  function takeEarly(q, name) {
    const panel = q.early ? q.early[name] : null;
    if (panel) q.early[name] = null; // a later drawing (the visitors toggle) makes its own
    return panel || null;
  }

  // ------------------------------------------------------------------------------------------ the view's parts

  const durationText = (s) => {
    const secs = Math.round(Number(s) || 0);
    if (secs < 60) return `${secs}s`;
    const m = Math.floor(secs / 60);
    return m < 60 ? `${m}m ${secs % 60}s` : `${Math.floor(m / 60)}h ${m % 60}m`;
  };

  // The change from the previous period, in percent (a rate's change in percentage points).
  function delta(now, before, { points = false, lowerBetter = false } = {}) {
    const cur = Number(now) || 0;
    const prev = Number(before) || 0;
    let text;
    let change;
    if (points) {
      change = Math.round((cur - prev) * 10) / 10;
      text = `${change > 0 ? '+' : change < 0 ? '−' : ''}${num(Math.abs(change))} pp`;
    } else if (!prev) {
      change = cur ? 1 : 0;
      text = cur ? 'new' : '0%';
    } else {
      change = Math.round((100 * (cur - prev)) / prev);
      text = `${change > 0 ? '+' : change < 0 ? '−' : ''}${num(Math.abs(change))}%`;
    }
    const good = lowerBetter ? change < 0 : change > 0;
    const cls = change === 0 ? 'flat' : good ? 'good' : 'bad';
    return h('span', { class: `delta ${cls}`, 'data-delta': text, title: 'compared with the previous period' },
      change > 0 ? '▲ ' : change < 0 ? '▼ ' : '', text);
  }

  function rangeText(range) {
    if (range.from === range.to) return `${longDay(range.from)} · UTC`;
    return `${shortDay(range.from)} – ${longDay(range.to)} · UTC days`;
  }

  function controls(view, range, meta, prevMeta) {
    const select = h('select', { 'data-control': 'period', 'aria-label': 'Period' },
      PERIODS.map(([value, text]) => h('option', { value, text, selected: view.period === value })));
    const from = h('input', { type: 'date', 'data-control': 'from', value: range.from, 'aria-label': 'First day (UTC)' });
    const to = h('input', { type: 'date', 'data-control': 'to', value: range.to, 'aria-label': 'Last day (UTC)' });
    const apply = h('button', { type: 'button', class: 'ghost', 'data-control': 'apply', text: 'Apply',
      onclick: () => {
        if (ISO_DAY.test(from.value) && ISO_DAY.test(to.value)) go({ period: 'custom', from: from.value, to: to.value });
      } });
    const custom = h('span', { class: 'custom-range', hidden: view.period !== 'custom' }, from, '–', to, apply);
    select.addEventListener('change', () => {
      if (select.value === 'custom') {
        custom.hidden = false;
        from.focus();
      } else {
        go({ period: select.value });
      }
    });
    const compare = h('input', { type: 'checkbox', 'data-control': 'compare', checked: view.compare,
      onchange: (e) => go({ compare: e.target.checked }) });
    const chips = view.filters.map(([dim, value], i) => h('span', { class: 'chip', 'data-filter': `${dim}|${value}` },
      h('span', { class: 'chip-dim', text: DIM_NAMES[dim] }),
      h('span', { class: 'chip-value', text: dim === 'visit:country' ? countryName(value) : value }),
      h('button', { type: 'button', class: 'chip-remove', 'aria-label': `Remove the filter ${DIM_NAMES[dim]} ${value}`,
        text: '×', onclick: () => go({ filters: view.filters.filter((_, j) => j !== i) }) })));
    return h('section', { class: 'controls', 'aria-label': 'Period and filters' },
      h('div', { class: 'controls-row' },
        select, custom,
        h('label', { class: 'compare' }, compare, 'Compare with the previous period'),
        h('span', { class: 'range', 'data-range': `${range.from}/${range.to}`, text: rangeText(range) }),
        asOf(meta && meta.computed_at)),
      chips.length ? h('div', { class: 'chips', 'aria-label': 'Filters' }, chips,
        h('button', { type: 'button', class: 'link-button', 'data-action': 'clear-filters', text: 'Clear all',
          onclick: () => go({ filters: [] }) })) : null,
      view.filters.some(([d]) => LOOK_ONLY.has(d)) ? h('p', { class: 'notice-retention', 'data-note': 'looks-only',
        role: 'note', text: 'View type and item filters apply to the looks panels only: the cards, the chart and the '
          + 'visit panels are not filtered by them.' }) : null,
      meta && meta.facts_note ? h('p', { class: 'notice-retention', 'data-note': 'retention', role: 'note',
        text: `This period begins before the oldest fact day: ${meta.facts_note}.` }) : null,
      !(meta && meta.facts_note) && prevMeta && prevMeta.facts_note ? h('p', { class: 'notice-retention',
        'data-note': 'retention', role: 'note',
        text: `The previous period begins before the oldest fact day: ${prevMeta.facts_note}; `
          + 'its figures and the changes are partial.' }) : null,
      meta && meta.pending ? pendingNote(meta.pending) : null);
  }

  // Stored events the figures do not hold yet (the deriver is behind a busy site): said, never a silent shortfall.
  function pendingNote(pending) {
    const oldest = pending.oldest_queued_at ? new Date(pending.oldest_queued_at) : null;
    const since = oldest && !Number.isNaN(oldest.getTime()) ? ` (the oldest stored at ${asOfText(oldest)})` : '';
    return h('p', { class: 'notice-retention', 'data-note': 'pending', 'data-pending': String(pending.visitor_days),
      role: 'note', text: `Not in these figures yet: ${num(pending.visitor_days)} visitor-days of events stored and `
        + `still being derived${since}. They are added within seconds unless the deriver is behind; Refresh to see them.` });
  }

  // "as of 16:05:09 UTC": when the figures were read (an answer's computed_at).
  function asOf(iso) {
    if (!iso) return null;
    const at = new Date(iso);
    if (Number.isNaN(at.getTime())) return null;
    return h('span', { class: 'asof', 'data-asof': iso, title: stamp(iso), text: `as of ${asOfText(at)}` });
  }
  const asOfText = (at) => `${at.toISOString().slice(11, 19)} UTC`;

  function addFilter(view, dim, value) {
    if (view.filters.some(([d, v]) => d === dim && v === value)) return;
    go({ filters: [...view.filters, [dim, value]] });
  }

  function metricCards(q) {
    const row = (q.cards.results[0] || { metrics: [] }).metrics;
    const prev = q.prevCards ? (q.prevCards.results[0] || { metrics: [] }).metrics : null;
    const at = (name) => CARD_METRICS.indexOf(name);
    const byKey = new Map((q.chart.results || []).map((r) => [r.dimensions[0], r.metrics]));
    const labels = (q.chart.meta && q.chart.meta.time_labels) || [...byKey.keys()];
    const trend = (name) => labels.map((k) => Number((byKey.get(k) || [])[name === 'visitors' ? 0 : 1]) || 0);
    const card = (name, title, text, definition, opts = {}) => kpi({
      name, title, value: text(row[at(name)] || 0), definition, split: false,
      note: prev ? `was ${text(prev[at(name)] || 0)}` : opts.note || rangeText(q.range).replace(' · UTC days', ''),
      delta: prev ? delta(row[at(name)], prev[at(name)], opts) : null,
      spark: opts.spark, sparkCls: opts.sparkCls,
    });
    return h('section', { class: 'kpis kpis-v2', 'aria-label': 'Key figures of the period' },
      card('visitors', 'Visitors', num, 'a signed-in user once over the period, an anonymous visitor once a UTC day',
        { spark: trend('visitors'), sparkCls: 'c2' }),
      card('visits', 'Visits', num, 'a visit ends after 30 minutes without a page view'),
      card('pageviews', 'Page views', num, 'every navigation seen, bots left out', { spark: trend('pageviews') }),
      card('views_per_visit', 'Views per visit', num, 'page views divided by visits'),
      card('bounce_rate', 'Bounce rate', (v) => `${num(v)}%`, 'visits with one page view and nothing else',
        { points: true, lowerBetter: true }),
      card('visit_duration', 'Visit duration', durationText, 'the mean time from the first to the last event of a visit'));
  }

  function timeKeys(grain) {
    if (grain === 'hour') {
      const at = (k) => new Date(`${k.replace(' ', 'T')}Z`);
      return { short: (k) => timeFormat.format(at(k)), long: (k) => `${longDayFormat.format(at(k))}, ${timeFormat.format(at(k))} UTC` };
    }
    if (grain === 'month') {
      const f = new Intl.DateTimeFormat('en', { month: 'short', year: 'numeric', timeZone: 'UTC' });
      return { short: (k) => f.format(dayOf(k)), long: (k) => f.format(dayOf(k)) };
    }
    return { short: shortDay, long: longDay };
  }

  function periodChart(q) {
    // Every bucket of the period (time_labels), the previous period's buckets matched by position.
    const filled = (answer) => {
      if (!answer) return [];
      const byKey = new Map((answer.results || []).map((r) => [r.dimensions[0], r.metrics]));
      const labels = (answer.meta && answer.meta.time_labels) || [...byKey.keys()];
      return labels.map((key) => ({ key, metrics: byKey.get(key) || [0, 0] }));
    };
    const prevRows = filled(q.prevChart);
    const points = filled(q.chart).map((r, i) => ({ key: r.key, values: {
      views: r.metrics[1], visitors: r.metrics[0], previous: prevRows[i] ? prevRows[i].metrics[1] : 0 } }));
    const series = [
      { id: 'views', name: 'Page views', cls: 'c1', area: true, dots: true },
      { id: 'visitors', name: 'Visitors', cls: 'c2' },
    ];
    if (q.prevChart) series.push({ id: 'previous', name: 'Page views, previous period', cls: 'c4', dashed: true });
    return lineChart({ name: 'period', points, series, format: timeKeys(q.range.grain),
      label: `Page views and visitors per ${q.range.grain === 'hour' ? 'hour' : q.range.grain} (UTC), ${rangeText(q.range)}`,
      emptyText: 'No page views in this period', emptySub: q.view.filters.length ? 'No visit matches every filter.' : null });
  }

  // ------------------------------------------------------------------------------------------ CSV

  // RFC 4180: a field with a quote, comma, CR or LF is quoted, its quotes doubled; rows end with CRLF. A text
  // field starting like a formula (= + - @, a tab or CR) gets a leading ' so a spreadsheet shows it, never runs
  // it: page paths and referrers are whatever visitors sent.
  function csvField(value) {
    if (value === null || value === undefined) return '';
    let text = String(value);
    if (typeof value === 'string' && /^[=+\-@\t\r]/.test(text)) text = `'${text}`;
    return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
  }

  const csvText = (rows) => rows.map((row) => `${row.map(csvField).join(',')}\r\n`).join('');

  // Built in the page (a Blob behind a download link): the rows are those the panel was drawn from.
  function downloadCsv(filename, rows) {
    const url = URL.createObjectURL(new Blob([csvText(rows)], { type: 'text/csv;charset=utf-8' }));
    const link = h('a', { href: url, download: filename, hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  }

  function panelRows(spec, answer) {
    return (answer.results || []).filter((r) => !(spec.hide || []).includes(String(r.dimensions[0])))
      .map((r) => [String(r.dimensions[0]), ...r.metrics]);
  }

  function csvButton(q, spec, answer) {
    if (!answer || answer.error) return null;
    return h('button', { type: 'button', class: 'link-button csv', 'data-action': 'csv', 'data-csv': spec.name,
      title: `Download these rows as CSV (${rangeText(q.range)})`, text: 'Export CSV',
      onclick: () => downloadCsv(`trackside-${spec.name}-${q.range.from}_${q.range.to}.csv`,
        [[spec.dim, ...panelMetrics(spec)], ...panelRows(spec, answer)]) });
  }

  function panel(q, spec, answer, extra) {
    let body;
    if (answer && answer.error) {
      body = h('div', { class: 'list-empty', 'data-list': spec.name, 'data-empty': '1' }, h('span', { text: answer.error }));
    } else {
      const data = {};
      const second = {};
      for (const r of answer.results || []) {
        const key = String(r.dimensions[0]);
        if (!(spec.hide || []).includes(key)) data[key] = r.metrics[0];
        if (r.metrics.length > 1 && r.metrics[1] !== null && r.metrics[1] !== undefined) second[key] = r.metrics[1];
      }
      // A goal's share of the list would read like its conversion rate: the goals panel shows the rate alone.
      const shown = spec.timeOnPage ? (v) => `${durationText(v)} on page` : (v) => `${num(v)}% conv.`;
      const active = q.view.filters.filter(([d]) => d === spec.dim).map(([, v]) => v);
      const label = spec.titles ? Items.titledLabel(h, answer) : spec.label || ((k) => k);
      body = barList({ name: spec.name, data, mono: spec.mono, label, emptyText: spec.emptyText,
        active, onPick: (key) => addFilter(q.view, spec.dim, key), pickTitle: `Filter on this ${DIM_NAMES[spec.dim].toLowerCase()}`,
        detail: Object.keys(second).length ? (key) => (key in second ? shown(second[key]) : '') : null,
        shares: !spec.conversion });
    }
    return card({ name: spec.name, title: spec.title, sub: spec.sub, body: extra ? h('div', {}, body, extra) : body,
      action: csvButton(q, spec, answer) });
  }

  // ------------------------------------------------------------------------------------------ goals

  // The site's goals with their conversions in the period; a moderator adds one (a site event or a page pattern)
  // or removes a stored one. The API's refusal (400 naming the field, 409 a taken name) is shown as it is.
  function goalsManager(q, goals, answer) {
    if (!goals) return h('p', { class: 'card-note', 'data-goals': 'unavailable', text: 'The goals could not be listed.' });
    const figures = new Map(((answer && answer.results) || []).map((r) => [String(r.dimensions[0]), r.metrics]));
    const problem = h('p', { class: 'goal-error', 'data-goal-error': '1', role: 'alert', hidden: true });
    const fail = (error) => {
      problem.textContent = String(error && error.message ? error.message : error);
      problem.hidden = false;
    };
    const rows = goals.goals.map((goal) => {
      const [visitors, rate] = figures.get(goal.name) || [0, 0];
      const remove = goal.origin === 'database' ? h('button', { type: 'button', class: 'link-button', 'data-action': 'remove-goal',
        'aria-label': `Remove the goal ${goal.name}`, text: 'Remove', onclick: async () => {
          try {
            await goalsCall('DELETE', { name: goal.name });
            state.goalsOpen = true;
            load();
          } catch (error) {
            fail(error);
          }
        } }) : h('span', { class: 'muted', title: 'Goals of the settings change only in the settings', text: 'settings' });
      return h('tr', { 'data-goal': goal.name },
        h('td', { text: goal.name }),
        h('td', { class: 'mono', text: `${goal.kind === 'page' ? 'page' : 'event'} ${goal.match}` }),
        h('td', { class: 'num', 'data-goal-visitors': String(visitors), text: num(visitors) }),
        h('td', { class: 'num', 'data-goal-rate': String(rate), text: `${num(rate)}%` }),
        h('td', {}, remove));
    });
    const name = h('input', { name: 'goal-name', 'data-goal-field': 'name', required: true, maxlength: '120',
      placeholder: 'Read an artwork', 'aria-label': 'Goal name' });
    const kind = h('select', { name: 'goal-kind', 'data-goal-field': 'kind', 'aria-label': 'Goal kind' },
      h('option', { value: 'page', text: 'Page pattern' }), h('option', { value: 'event', text: 'Site event' }));
    const match = h('input', { name: 'goal-match', 'data-goal-field': 'match', required: true, class: 'mono',
      placeholder: '/p/*', 'aria-label': 'Page pattern or event name' });
    kind.addEventListener('change', () => { match.placeholder = kind.value === 'page' ? '/p/*' : 'signup'; });
    const form = h('form', { class: 'goal-form', 'data-goal-form': '1' }, name, kind, match,
      h('button', { type: 'submit', class: 'ghost', text: 'Add goal' }));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      problem.hidden = true;
      try {
        await goalsCall('POST', { body: { name: name.value.trim(), kind: kind.value, match: match.value.trim() } });
        state.goalsOpen = true;
        load();
      } catch (error) {
        fail(error);
      }
    });
    const details = h('details', { class: 'goals-manage', 'data-goals': String(goals.goals.length), open: Boolean(state.goalsOpen) },
      h('summary', { text: `Goals defined (${goals.goals.length}) · add or remove` }),
      h('table', { class: 'goals-table' },
        h('thead', {}, h('tr', {}, ['Goal', 'Reached by', 'Visitors', 'Rate', ''].map((t) => h('th', { text: t })))),
        h('tbody', {}, rows)),
      form, problem,
      h('p', { class: 'card-note', text: 'A page pattern: * any characters but /, ** any (/p/* matches /p/a1). '
        + 'Visitors and rate are of the period and filters above.' }));
    details.addEventListener('toggle', () => { state.goalsOpen = details.open; });
    return details;
  }

  // ------------------------------------------------------------------------------------------ pages

  function renderOverview(data) {
    const { site, realtime, popular, q, goals } = data;
    const defs = site.definitions || {};
    const auth = state.mode === 'auth';
    const who = auth ? 'signed-in visitors' : 'all visitors';
    const hourly = pick(site, 'hourly_views') || [];
    const hourlyVisitors = new Map((pick(site, 'hourly_unique_visitors') || []).map((p) => [p.hour, p.count]));
    const meta = q.cards.meta || {};

    // The last 30 days' poster figures that the query engine does not answer (signups, uploads, API calls, errors).
    const kpis = h('section', { class: 'kpis kpis-poster', 'aria-label': 'Key figures, last 30 days' },
      kpi({ name: 'signups', title: 'Signups', value: num(site.new_signups_30d), note: 'last 30 days',
        definition: 'accounts created: the signup routes answered 2xx', spark: counts(site.daily_signups),
        sparkCls: 'c3', split: false }),
      kpi({ name: 'uploads', title: 'Uploads', value: num(site.new_posts_30d), note: 'last 30 days',
        definition: 'posts created: the upload routes answered 2xx', spark: counts(site.daily_posts),
        sparkCls: 'c3', split: false }),
      kpi({ name: 'api_calls', title: 'API calls', value: num(site.total_api_calls_30d), note: 'last 30 days',
        definition: defs.api_calls, spark: counts(site.daily_api_calls), sparkCls: 'c4', split: false }),
      kpi({ name: 'errors', title: 'Errors', value: num(site.total_errors_30d), note: 'last 30 days',
        definition: defs.errors, spark: counts(site.daily_errors), sparkCls: 'c5', split: false }),
      kpi({ name: 'realtime', title: 'Visitors now', value: realtime ? num(realtime.visitors) : '—',
        note: realtime ? `${plural(realtime.page_views, 'page view', 'page views')} · last 5 min` : 'unavailable',
        definition: realtime && realtime.definition, split: false, live: true }));

    const hourPoints = hourly.map((p) => ({ key: p.hour, value: p.count, title: hourRange(p.hour) }));
    const hourlyChart = barChart({
      name: 'hourly',
      label: `Page views per hour, last 24 hours (UTC), ${who}`,
      points: hourPoints,
      tickLabel: (p) => hourOf(p.key),
      valueName: 'Page views',
      extra: (p) => [['Unique visitors', num(hourlyVisitors.get(p.key) || 0), 'c2']],
      emptyText: 'No page views in the last 24 hours',
    });
    const legend = h('div', { class: 'legend' },
      h('span', {}, h('span', { class: 'swatch c1' }), 'Page views'),
      h('span', {}, h('span', { class: 'swatch c2 line' }), 'Visitors'),
      q.prevChart ? h('span', {}, h('span', { class: 'swatch c4 line dashed' }), 'Previous period') : null);

    const popularPanels = Items.panels(popular, { h, card, num,
      sub: auth ? 'last 30 days · all visitors (no signed-in split)' : 'last 30 days' });

    const bots = site.bot_traffic || { total_30d: 0, by_bot: {}, daily: [] };
    const botPanel = h('section', { class: 'bots', 'data-panel': 'bots', 'aria-label': 'Bot traffic' },
      h('header', { class: 'bots-head' },
        h('div', {},
          h('h2', {}, 'Bot traffic ', h('span', { class: 'tag tag-bot', text: 'excluded from every other figure' })),
          h('p', { class: 'card-sub', text: `${capital(defs.bot_traffic || 'requests from bots')}. Crawlers, monitors and scrapers never count as page views, visitors, errors or API calls above.` })),
        h('div', { class: 'bots-total' },
          h('span', { class: 'kpi-value', 'data-bots-total': '1', text: num(bots.total_30d) }),
          h('span', { class: 'kpi-note', text: 'bot requests · 30 days' }))),
      h('div', { class: 'bots-body' },
        barChart({
          name: 'bots', cls: 'c6', valueName: 'Bot requests', height: 150, minGap: 64,
          label: 'Bot requests per day, last 30 days',
          points: (bots.daily || []).map((p) => ({ key: p.date, value: p.count, title: longDay(p.date) })),
          tickLabel: (p) => shortDay(p.key),
          emptyText: 'No bot traffic yet',
        }),
        barList({ name: 'bots', data: bots.by_bot, limit: 8, tone: 'tone-bot', emptyText: 'No bots seen yet' })));

    const panels = new Map(q.specs.map((spec, i) => [spec.name, panel(q, spec, q.panels[i],
      spec.name === 'goals' ? goalsManager(q, goals, q.panels[i]) : null)]));
    const grid = (cls, ...names) => h('div', { class: `grid ${cls}` }, names.map((n) => panels.get(n)));
    const v2Note = auth ? h('div', { class: 'banner' }, h('strong', { text: 'All visitors. ' }),
      'The period’s figures and panels have no signed-in split; the 24 hours chart does.') : null;
    const periodName = (PERIODS.find(([p]) => p === q.view.period) || [0, ''])[1];
    const chartSub = `per ${q.range.grain === 'hour' ? 'hour' : q.range.grain === 'month' ? 'month' : 'day'}, UTC · all visitors`;

    return h('div', { class: 'page' },
      modeBanner(),
      controls(q.view, q.range, meta, q.prevCards && q.prevCards.meta),
      v2Note,
      metricCards(q),
      h('div', { class: 'grid charts' },
        card({ name: 'period', cls: 'wide', title: `${periodName}: page views and visitors`, sub: chartSub,
          action: legend, body: periodChart(q), note: UNIQUE_NOTE.replace('unique visitors', 'visitors') }),
        card({ name: 'hourly', title: 'Last 24 hours', sub: `page views per hour (UTC) · ${who}`,
          body: h('div', {}, hourlyChart, hourSummary(hourPoints, 'page view', 'page views')) })),
      grid('three', 'pages', 'entry_pages', 'exit_pages'),
      grid('three', 'sources', 'referrers', 'countries'),
      grid('three', 'utm_source', 'utm_medium', 'utm_campaign'),
      grid('three', 'devices', 'browsers', 'os'),
      grid('two', 'view_types', 'items'),
      h('div', { class: 'grid two' }, panels.get('goals'),
        card({ name: 'errors', title: 'Errors by type', sub: auth ? 'last 30 days · all visitors (no signed-in split)'
          : 'last 30 days', note: defs.errors ? capital(defs.errors) : null, body:
          barList({ name: 'errors', data: site.errors_by_type, label: (k) => ERROR_NAMES[k] || k, tone: 'tone-error',
            emptyText: 'No errors' }) })),
      // The funnel panel (funnels.js): the chosen funnel for the period and filters of the visit panels.
      takeEarly(q, 'funnels') || (window.TracksideFunnels ? window.TracksideFunnels.panel({ token: state.token,
        period: [q.range.from, q.range.to], filters: v2Filters(q.view.filters.filter(([d]) => !LOOK_ONLY.has(d))) })
        : null),
      // Journeys and retention (journeys.js, retention.js): the top pages panel's rows are offered as pages.
      takeEarly(q, 'journeys') || (window.TracksideJourneys ? window.TracksideJourneys.panel({ token: state.token,
        period: [q.range.from, q.range.to], filters: v2Filters(q.view.filters.filter(([d]) => !LOOK_ONLY.has(d))),
        offer: pageOffer(q) }) : null),
      takeEarly(q, 'retention') || (window.TracksideRetention ? window.TracksideRetention.panel({ token: state.token })
        : null),
      kpis,
      popularPanels.length ? h('div', { class: 'grid two' }, popularPanels) : null,
      botPanel,
      definitions(defs, { unique_visitors: UNIQUE_NOTE, ...(realtime ? { realtime: realtime.definition } : {}) }));
  }

  function pageOffer(q) {
    const at = q.specs.findIndex((spec) => spec.name === 'pages');
    const answer = at < 0 ? null : q.panels[at];
    const values = ((answer && answer.results) || []).map((r) => r.dimensions[0]).slice(0, 50);
    return { values, paths: at >= 0 && q.specs[at].dim === 'event:page' };
  }

  function definitions(defs, extra) {
    const all = { ...defs, ...extra };
    const names = Object.keys(all).filter((k) => all[k]);
    if (!names.length) return null;
    const list = h('dl', { class: 'defs' });
    for (const name of names) {
      list.append(h('dt', { text: capital(name.replace(/_/g, ' ')) }), h('dd', { text: capital(String(all[name])) }));
    }
    return h('details', { class: 'definitions', 'data-panel': 'definitions' },
      h('summary', { text: 'What the figures mean' }), list);
  }

  function renderItem({ kind, id, item }) {
    const kindName = Items.kindName(kind);
    const crumbs = h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' },
      h('a', { href: state.overviewHash || '#/', text: 'Overview' }), h('span', { class: 'sep', text: '/' }),
      h('span', { text: capital(Items.plural(kind)) }), h('span', { class: 'sep', text: '/' }),
      h('span', { class: 'mono', text: id }));
    if (!item) {
      return h('div', { class: 'page', 'data-item': `${kind}/${id}` }, crumbs,
        Items.heading(h, kind, id, null),
        h('section', { class: 'card' }, emptyState('No data yet',
          `No views or impressions of this ${kindName.toLowerCase()} in the last 30 days.`)));
    }
    const defs = item.definitions || {};
    const auth = state.mode === 'auth';
    const who = auth ? 'signed-in viewers' : 'all viewers';
    const daily = pick(item, 'daily_views') || [];
    const hourly = pick(item, 'hourly_views') || [];
    const kpis = h('section', { class: 'kpis kpis-item', 'aria-label': `${kindName} key figures` },
      kpi({ name: 'views', title: 'Views', value: num(pick(item, 'total_views')), note: `30 days · ${who}`,
        definition: defs.views, spark: counts(daily, 'views') }),
      kpi({ name: 'unique_viewers', title: 'Unique viewers', value: num(pick(item, 'unique_viewers')),
        note: auth ? 'signed-in users, merged' : 'users merged + visitor-days',
        definition: `${capital(defs.unique_viewers || UNIQUE_NOTE)}: a signed-in user counts once in 30 days, an `
          + 'anonymous viewer once a day (their id rotates daily).',
        spark: counts(daily, 'unique_viewers'), sparkCls: 'c2' }),
      kpi({ name: 'impressions', title: 'Impressions', value: num(pick(item, 'total_impressions')),
        note: `30 days · ${who}`, definition: defs.impressions, spark: counts(daily, 'impressions'), sparkCls: 'c3',
        split: hasTwin(item, 'total_impressions') }),
      kpi({ name: 'first_view', title: 'First view', value: item.first_view_at ? shortDay(item.first_view_at.slice(0, 10)) : '—',
        note: stamp(item.first_view_at), split: false }),
      kpi({ name: 'last_view', title: 'Last view', value: item.last_view_at ? shortDay(item.last_view_at.slice(0, 10)) : '—',
        note: stamp(item.last_view_at), split: false }));
    const chart = lineChart({
      name: 'daily',
      label: `Views, unique viewers and impressions per day of ${kindName} ${id}, last 30 days`,
      points: daily.map((p) => ({ key: p.date, values: { views: p.views, viewers: p.unique_viewers,
        impressions: p.impressions } })),
      series: [
        { id: 'views', name: 'Views', cls: 'c1', area: true, dots: true },
        { id: 'viewers', name: 'Unique viewers', cls: 'c2' },
        { id: 'impressions', name: 'Impressions', cls: 'c3', dashed: true },
      ],
      emptyText: auth ? 'No signed-in views yet' : 'No views yet',
    });
    const hourPoints = hourly.map((p) => ({ key: p.hour, value: p.views, impressions: p.impressions,
      title: hourRange(p.hour) }));
    const hours = barChart({
      name: 'hourly',
      label: `Views per hour of ${kindName} ${id}, last 24 hours (UTC)`,
      points: hourPoints,
      tickLabel: (p) => hourOf(p.key),
      valueName: 'Views',
      extra: (p) => [['Impressions', num(p.impressions), 'c3']],
      emptyText: 'No views in the last 24 hours',
    });
    const legend = h('div', { class: 'legend' },
      h('span', {}, h('span', { class: 'swatch c1' }), 'Views'),
      h('span', {}, h('span', { class: 'swatch c2 line' }), 'Unique viewers'),
      h('span', {}, h('span', { class: 'swatch c3 line dashed' }), 'Impressions'));
    return h('div', { class: 'page', 'data-item': `${kind}/${id}` },
      crumbs,
      Items.heading(h, kind, id, item),
      asOf(item.computed_at),
      item.pending ? pendingNote(item.pending) : null,
      modeBanner(),
      kpis,
      h('div', { class: 'grid charts' },
        card({ name: 'daily', cls: 'wide', title: 'Views, last 30 days', sub: `per UTC day · ${who}`, action: legend,
          body: chart, note: 'unique viewers = signed-in users merged + anonymous visitor-days; impressions are not views' }),
        card({ name: 'hourly', title: 'Last 24 hours', sub: `views per hour (UTC) · ${who}`,
          body: h('div', {}, hours, hourSummary(hourPoints, 'view', 'views')) })),
      h('div', { class: 'grid four' },
        card({ name: 'countries', title: 'Countries', sub: 'views', body:
          barList({ name: 'countries', data: pick(item, 'views_by_country'), label: countryLabel }) }),
        card({ name: 'devices', title: 'Devices', sub: 'views', body:
          barList({ name: 'devices', data: pick(item, 'views_by_device'), label: capital }) }),
        card({ name: 'types', title: 'How it was seen', sub: 'views and impressions by type', body:
          barList({ name: 'types', data: pick(item, 'views_by_type'), label: (k) => VIEW_TYPES[k] || k,
            pickTitle: 'Open the overview filtered on this item and view type',
            onPick: (key) => { location.hash = viewHash({ period: '30d', compare: false,
              filters: [['event:props:content_id', id], ['event:props:view_type', key]] }); } }) }),
        card({ name: 'referrers', title: 'Referrers', sub: 'views arriving from another site', body:
          barList({ name: 'referrers', data: pick(item, 'top_referrers'), mono: true, emptyText: 'No referrers yet' }) })),
      definitions(defs, { unique_viewers: UNIQUE_NOTE.replace(/visitors/g, 'viewers') }));
  }

  // ------------------------------------------------------------------------------------------ live

  // The live view: visitors now (v1 realtime: the last 5 minutes) and the last 30 minutes' page views by page (v2
  // with a date-time range), asked again every 5 s and redrawn in place. The range ends two minutes past this
  // browser's clock: nothing is stored in the future, and a clock a little behind the server's loses nothing.
  const isoSecond = (ms) => `${new Date(ms).toISOString().slice(0, 19)}Z`;

  async function liveFigures() {
    const now = Date.now();
    const range = [isoSecond(now - LIVE_MINUTES * 60000), isoSecond(now + 120000)];
    const [realtime, totals, pages] = await Promise.all([
      api('realtime'),
      query({ metrics: ['visitors', 'pageviews'], date_range: range }),
      query({ metrics: ['pageviews', 'visitors'], date_range: range, dimensions: ['event:page'],
        order_by: [['pageviews', 'desc'], ['event:page', 'asc']], pagination: { limit: 100 } }),
    ]);
    return { realtime, totals, pages, range };
  }

  function liveBody(live) {
    const [visitors, pageviews] = (live.totals.results[0] || { metrics: [0, 0] }).metrics;
    const data = Object.fromEntries((live.pages.results || []).map((r) => [String(r.dimensions[0]), r.metrics[0]]));
    const rows = (live.pages.results || []).map((r) => [String(r.dimensions[0]), ...r.metrics]);
    const at = live.totals.meta && live.totals.meta.computed_at;
    const csv = h('button', { type: 'button', class: 'link-button csv', 'data-action': 'csv', 'data-csv': 'live_pages',
      text: 'Export CSV', onclick: () => downloadCsv(`trackside-live-pages-${(at || '').slice(0, 19).replace(/:/g, '')}.csv`,
        [['event:page', 'pageviews', 'visitors'], ...rows]) });
    return [
      h('section', { class: 'kpis kpis-live', 'aria-label': 'Live figures' },
        kpi({ name: 'live_now', title: 'Visitors now', value: num(live.realtime.visitors), live: true, split: false,
          note: `${plural(live.realtime.page_views, 'page view', 'page views')} · last 5 min`,
          definition: live.realtime.definition }),
        kpi({ name: 'live_visitors', title: 'Visitors', value: num(visitors), split: false,
          note: `last ${LIVE_MINUTES} min`, definition: 'distinct visitors with an event in the last 30 minutes' }),
        kpi({ name: 'live_pageviews', title: 'Page views', value: num(pageviews), split: false,
          note: `last ${LIVE_MINUTES} min` })),
      card({ name: 'live_pages', title: 'Pages', sub: `page views in the last ${LIVE_MINUTES} minutes, by page`, action: csv,
        body: barList({ name: 'live_pages', data, mono: true, limit: 15, emptyText: `No page views in the last ${LIVE_MINUTES} minutes` }) }),
    ];
  }

  function renderLive({ live }) {
    return h('div', { class: 'page', 'data-live': '1' },
      h('h1', { class: 'item-title' }, 'Live ', h('span', { class: 'live-dot pulse', 'aria-hidden': 'true' })),
      h('p', { class: 'card-sub' }, `Updated every ${LIVE_EVERY_MS / 1000} s · all visitors · `,
        h('span', { 'data-live-asof': '1' }, asOf(live.totals.meta && live.totals.meta.computed_at)),
        h('span', { class: 'live-stale', 'data-live-stale': '1', role: 'status' })),
      h('div', { 'data-live-body': '1' }, liveBody(live)));
  }

  async function refreshLive() {
    const seq = state.seq;
    const live = await liveFigures();
    if (seq !== state.seq || !state.data || state.data.view !== 'live') return;
    state.data.live = live;
    const body = $('[data-live-body]');
    if (!body) return;
    body.replaceChildren(...liveBody(live));
    drawMounted();
    $('[data-live-stale]').textContent = '';
    $('[data-live-asof]').replaceChildren(asOf(live.totals.meta && live.totals.meta.computed_at) || '');
    footer(live.totals.meta && live.totals.meta.computed_at);
  }

  // ------------------------------------------------------------------------------------------ shell

  function renderShell() {
    const bar = $('#topbar');
    const toggle = h('div', { class: 'segmented', role: 'group', 'aria-label': 'Visitors' },
      ...[['all', 'All visitors'], ['auth', 'Signed-in']].map(([mode, text]) => h('button', {
        type: 'button', 'data-mode': mode, 'aria-pressed': String(state.mode === mode), text,
        onclick: () => setMode(mode),
      })));
    const current = state.page && state.page.view === 'live' ? 'live' : 'overview';
    const tab = (name, href, text) => h('a', { class: 'tab', href, 'data-tab': name, text,
      'aria-current': current === name ? 'page' : null });
    bar.replaceChildren(
      h('a', { class: 'brand', href: '#/' }, h('span', { class: 'brand-mark', 'aria-hidden': 'true' }), 'Trackside'),
      h('span', { class: 'brand-sub', text: 'days in UTC' }),
      h('nav', { class: 'tabs', 'aria-label': 'Views' }, tab('overview', state.overviewHash || '#/', 'Overview'),
        tab('live', '#/live', 'Live')),
      h('div', { class: 'spacer' }),
      toggle,
      h('button', { type: 'button', class: 'ghost', 'data-action': 'refresh', text: 'Refresh', onclick: () => load({ refresh: true }) }),
      h('button', { type: 'button', class: 'ghost', 'data-action': 'signout', text: 'Sign out', onclick: signOut }));
    bar.hidden = false;
  }

  function setMode(mode) {
    if (state.mode === mode) return;
    state.mode = mode;
    sessionStorage.setItem(MODE_KEY, mode);
    for (const b of document.querySelectorAll('.segmented button')) {
      b.setAttribute('aria-pressed', String(b.dataset.mode === mode));
    }
    draw();
  }

  function footer(computedAt) {
    const foot = $('#foot');
    foot.replaceChildren(
      h('span', { text: computedAt ? `Computed ${stamp(computedAt)}` : '' }),
      h('span', { text: 'Trackside · own routes are never proxied nor counted' }));
    foot.hidden = false;
  }

  function draw() {
    const app = $('#app');
    unmountAll();
    app.removeAttribute('data-ready');
    if (!state.data) return;
    // The item page's way back returns to the overview as it was left (period, filters, comparison).
    if (state.data.view === 'overview') state.overviewHash = /^#\/\?./.test(location.hash) ? location.hash : '';
    const view = state.data.view;
    const page = view === 'item' ? renderItem(state.data) : view === 'live' ? renderLive(state.data) : renderOverview(state.data);
    app.replaceChildren(page);
    drawMounted();
    footer(view === 'item' ? state.data.item && state.data.item.computed_at
      : view === 'live' ? state.data.live.totals.meta && state.data.live.totals.meta.computed_at : state.data.site.computed_at);
    document.body.dataset.mode = state.mode;
    app.dataset.ready = state.data.view;
  }

  function parseRoute() {
    if (/^#\/live\/?$/.test(location.hash)) return { view: 'live' };
    const match = /^#\/item\/([^/]+)\/([^/]+)\/?$/.exec(location.hash);
    if (match) {
      try {
        return { view: 'item', kind: decodeURIComponent(match[1]), id: decodeURIComponent(match[2]) };
      } catch (e) {
        return { view: 'overview', viewState: parseView('') };
      }
    }
    const query = /^#\/?\?(.*)$/.exec(location.hash);
    return { view: 'overview', viewState: parseView(query ? query[1] : '') };
  }

  function loading() {
    const app = $('#app');
    app.removeAttribute('data-ready');
    if (!app.querySelector('.page')) {
      app.replaceChildren(h('div', { class: 'loading', role: 'status' }, h('span', { class: 'spinner' }), 'Loading figures…'));
    } else {
      app.classList.add('busy');
    }
  }

  // `refresh`: the Refresh button's load, which asks past the server's cache (`?refresh=true`);
  // without it the server may answer what it computed a few seconds ago.
  async function load({ refresh = false } = {}) {
    if (!state.token) {
      showLogin();
      return;
    }
    const seq = ++state.seq;
    const route = parseRoute();
    state.page = route;
    renderShell();
    loading();
    try {
      let data;
      if (route.view === 'live') {
        data = { view: 'live', live: await liveFigures() };
      } else if (route.view === 'item') {
        await itemsReady;
        const item = /^[A-Za-z0-9_-]+$/.test(route.kind)
          ? await api(`items/${encodeURIComponent(route.kind)}/${encodeURIComponent(route.id)}`, { missingOk: true, refresh })
          : null;
        data = { view: 'item', kind: route.kind, id: route.id, item };
      } else {
        await itemsReady;
        const { q, others: [site, realtime, goals, popular] } = await loadQueries(route.viewState, () => [
          api('site', { refresh }),
          api('realtime').catch((e) => (e instanceof AuthError ? Promise.reject(e) : null)),
          goalsCall('GET').catch(() => null),
          Items.popular(api, { refresh }), // one panel per content kind of the settings
        ]);
        data = { view: 'overview', q, site, realtime, goals, popular };
      }
      if (seq !== state.seq) return;
      const sameView = state.data && state.data.view === data.view && data.view === 'overview';
      state.data = data;
      $('#app').classList.remove('busy');
      draw();
      if (!sameView) window.scrollTo({ top: 0 }); // a filter or a period keeps the reader where they were
      schedule();
    } catch (error) {
      if (seq !== state.seq) return;
      $('#app').classList.remove('busy');
      if (error instanceof AuthError) {
        signOut(null, reason(error));
      } else {
        showError(error);
      }
    }
  }

  // When a JWT's `exp` (read, not verified: only to say why the server refused it) has passed, in ms; else null.
  function expiredAt(token) {
    const parts = String(token || '').split('.');
    if (parts.length !== 3) return null;
    try {
      const claims = JSON.parse(atob(parts[1].replace(/-/g, '+').replace(/_/g, '/')));
      const exp = Number(claims && claims.exp);
      return Number.isFinite(exp) && exp * 1000 <= Date.now() ? exp * 1000 : null;
    } catch (e) {
      return null;
    }
  }

  function reason(error) {
    const detail = error.detail ? `: ${error.detail}` : '';
    // An expired token says so: a share link's (the server names it), a sign-in's (its JWT's exp has passed).
    if (error.status === 401 && /share token expired/.test(error.detail || '')) {
      return `This share link has expired (401${detail}). Ask for a new link, or sign in with a moderator’s token.`;
    }
    const expired = error.status === 401 ? expiredAt(state.token) : null;
    if (expired !== null) {
      return `Your sign-in token expired on ${stamp(new Date(expired).toISOString())} (401${detail}). `
        + 'Sign in again with a fresh token.';
    }
    if (error.status === 403) return `This token may not read the dashboard (403${detail}). A moderator's token is needed.`;
    if (error.status === 429) return `Too many refused tokens from this address (429${detail}).`;
    return `The token was refused (401${detail}).`;
  }

  function schedule() {
    clearInterval(state.timer);
    if (state.data && state.data.view === 'live') {
      state.timer = setInterval(async () => {
        if (document.hidden) return;
        try {
          await refreshLive();
        } catch (error) {
          if (error instanceof AuthError) signOut(null, reason(error));
          // The figures shown stay, said to be old: the next refresh may well succeed.
          const stale = $('[data-live-stale]');
          if (stale) stale.textContent = ` · not updated: ${String(error && error.message ? error.message : error)}`;
        }
      }, LIVE_EVERY_MS);
      return;
    }
    state.timer = setInterval(async () => {
      if (document.hidden || !state.data || state.data.view !== 'overview') return;
      try {
        const realtime = await api('realtime');
        state.data.realtime = realtime;
        const card = $('[data-kpi="realtime"]');
        if (card) {
          $('.kpi-value', card).textContent = num(realtime.visitors);
          $('.kpi-note', card).textContent = `${plural(realtime.page_views, 'page view', 'page views')} · last 5 min`;
        }
      } catch (error) {
        if (error instanceof AuthError) signOut(null, reason(error));
      }
    }, REALTIME_EVERY_MS);
  }

  function showError(error) {
    const app = $('#app');
    app.replaceChildren(h('section', { class: 'card error-card', role: 'alert' },
      h('h2', { text: 'The figures could not be loaded' }),
      h('p', { class: 'card-sub', text: String(error && error.message ? error.message : error) }),
      h('button', { type: 'button', class: 'primary', text: 'Try again', onclick: () => load() })));
    app.dataset.ready = 'error';
  }

  function signOut(event, why) {
    clearInterval(state.timer);
    state.token = '';
    state.data = null;
    state.seq += 1;
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin(why);
  }

  function showLogin(why) {
    unmountAll();
    $('#topbar').hidden = true;
    $('#foot').hidden = true;
    const input = h('input', {
      id: 'token', name: 'token', type: 'password', autocomplete: 'off', spellcheck: 'false', required: true,
      placeholder: 'eyJhbGciOiJIUzI1NiIs…', 'aria-describedby': 'token-help',
    });
    const form = h('form', { class: 'login', 'aria-labelledby': 'login-title', novalidate: true },
      h('div', { class: 'brand big' }, h('span', { class: 'brand-mark', 'aria-hidden': 'true' }), 'Trackside'),
      h('h1', { id: 'login-title', text: 'Moderator sign-in' }),
      why ? h('p', { class: 'login-error', role: 'alert', text: why }) : null,
      h('label', { for: 'token', text: 'Access token' }),
      input,
      h('p', { id: 'token-help', class: 'login-help', text:
        'Paste a moderator’s access token (a JWT of the site) or the static admin token. It stays in this tab only '
        + '(sessionStorage) and is sent only to this sidecar’s API.' }),
      h('button', { type: 'submit', class: 'primary', text: 'Open the dashboard' }));
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      const token = input.value.trim().replace(/^Bearer\s+/i, '');
      if (!token) {
        showLogin('Paste a token first.');
        return;
      }
      if (!/^[\x21-\x7e]+$/.test(token)) {
        showLogin('That is not a token: a token has no spaces or other special characters.');
        return;
      }
      state.token = token;
      sessionStorage.setItem(TOKEN_KEY, token);
      load();
    });
    const app = $('#app');
    app.replaceChildren(h('div', { class: 'login-wrap' }, form));
    app.dataset.ready = 'login';
    input.focus();
  }

  // A shared link `/_trackside/#token=<token>` signs in with that token (a fragment never reaches a server log);
  // the token leaves the address bar at once, so it is not bookmarked nor shared on.
  function tokenFromLink() {
    const match = /^#token=([\x21-\x7e]+)$/.exec(location.hash);
    if (!match) return;
    state.token = decodeURIComponent(match[1]);
    sessionStorage.setItem(TOKEN_KEY, state.token);
    history.replaceState(null, '', `${location.pathname}${location.search}#/`);
  }

  window.addEventListener('hashchange', () => {
    tokenFromLink();
    if (state.token) load();
  });
  tokenFromLink();

  if (state.token) load();
  else showLogin();
})();
