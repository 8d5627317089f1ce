// Trackside's dashboard, items: one "Popular ..." panel per content kind of the site's settings (its own kinds
// too: they come from /_trackside/api/v1/kinds, never from a list in this file), and item rows that show each
// item's title, linked to the item's page in the dashboard and to its page on the site (from the content rules).
// A title is whatever the site sent (an X-Trackside-Title hint or its API's answer): it only ever reaches the
// page as text (textContent), never as HTML. Loaded after app.js, which waits for the 'trackside-items' event.
'use strict';

(() => {
  const PLURALS = { artwork: 'artworks', blog_post: 'blog posts' };
  let kindsAsked = null; // the settings' kinds, asked once per page load
  const known = new Map(); // kind -> {kind, name, page, title_url}

  function humanize(kind) {
    const words = String(kind).replace(/[_-]+/g, ' ').trim();
    return words ? words[0].toUpperCase() + words.slice(1) : String(kind);
  }

  const kindName = (kind) => (known.get(kind) || {}).name || humanize(kind);

  function plural(kind) {
    if (PLURALS[kind]) return PLURALS[kind];
    const name = kindName(kind).toLowerCase();
    return /(s|x|ch|sh)$/.test(name) ? `${name}es` : `${name}s`;
  }

  async function kinds(api) {
    if (!kindsAsked) {
      kindsAsked = api('kinds').then((answer) => {
        for (const k of answer.kinds) known.set(k.kind, k);
        return answer.kinds.map((k) => k.kind);
      });
      kindsAsked.catch(() => { kindsAsked = null; }); // asked again next time
    }
    return kindsAsked;
  }

  // Every kind's popular items of the last 30 days: {kinds: [...], answers: {kind: answer or null}}.
  async function popular(api, { refresh = false } = {}) {
    const list = await kinds(api);
    const answers = await Promise.all(list.map((kind) =>
      api(`popular?kind=${encodeURIComponent(kind)}&period=30d&limit=10`, { missingOk: true, refresh })));
    return { kinds: list, answers: Object.fromEntries(list.map((kind, i) => [kind, answers[i]])) };
  }

  // The item's page on the site, from the answer (`page`) or the kind's template; null when the rules have none.
  function pageOf(kind, id, item) {
    if (item && typeof item.page === 'string') return item.page;
    const template = (known.get(kind) || {}).page;
    return template ? template.replace('{id}', encodeURIComponent(id)) : null;
  }

  const itemHash = (kind, id) => `#/item/${encodeURIComponent(kind)}/${encodeURIComponent(id)}`;

  // The label of an item: its title (text) and its id beside it, or the id alone.
  function label(h, id, title) {
    return title
      ? [h('span', { class: 'item-name', text: title }), h('span', { class: 'item-id mono', text: id })]
      : [h('span', { class: 'item-name mono', text: id })];
  }

  function pageLink(h, kind, id, item) {
    const page = pageOf(kind, id, item);
    if (!page) return null;
    const name = (item && item.title) || id;
    return h('a', { class: 'item-page', href: page, target: '_blank', rel: 'noopener noreferrer',
      title: 'Open its page on the site', 'aria-label': `Open ${name} on the site`, text: '↗' });
  }

  function table(kind, items, { h, num }) {
    if (!items.length) {
      return h('div', { class: 'list-empty', 'data-list': `popular-${kind}`, 'data-empty': '1' },
        h('span', { text: 'No views yet' }));
    }
    const max = Math.max(...items.map((i) => i.views));
    const body = h('tbody', {});
    items.forEach((item, i) => {
      const fill = h('span', { class: 'fill', 'aria-hidden': 'true' });
      fill.style.width = `${Math.max(2, (100 * item.views) / max)}%`;
      body.append(h('tr', { 'data-key': item.id, 'data-value': item.views, 'data-title': item.title || null },
        h('td', { class: 'rank', text: i + 1 }),
        h('td', { class: 'item-cell' }, fill,
          h('span', { class: 'item-line' },
            h('a', { href: itemHash(kind, item.id), class: 'item-link', title: item.title || null },
              label(h, item.id, item.title)),
            pageLink(h, kind, item.id, item))),
        h('td', { class: 'num', text: num(item.views) }),
        h('td', { class: 'num muted', text: num(item.unique_viewers) }),
        h('td', { class: 'num muted', text: num(item.impressions) })));
    });
    return h('table', { class: 'popular', 'data-list': `popular-${kind}` },
      h('thead', {}, h('tr', {},
        h('th', { class: 'rank', text: '#' }), h('th', { text: kindName(kind) }), h('th', { class: 'num', text: 'Views' }),
        h('th', { class: 'num', text: 'Unique' }), h('th', { class: 'num', text: 'Impr.' }))),
      body);
  }

  // One card per kind the settings name, in their order; a kind whose answer failed has none.
  function panels(popularData, { h, card, num, sub }) {
    if (!popularData) return [];
    return popularData.kinds.filter((kind) => popularData.answers[kind]).map((kind) => card({
      name: `popular-${kind}`,
      title: `Popular ${plural(kind)}`,
      sub,
      body: table(kind, popularData.answers[kind].items || [], { h, num }),
    }));
  }

  // The item page's heading: the kind, then the title (text) and id; under it, the link to its page on the site.
  function heading(h, kind, id, item) {
    const title = item && item.title;
    const page = pageOf(kind, id, item);
    return [
      h('h1', { class: 'item-title', 'data-title': title || null }, `${kindName(kind)} `,
        title ? h('span', { class: 'item-heading-name', text: title }) : null, h('span', { class: 'mono', text: id })),
      page ? h('p', { class: 'item-site' }, h('a', { class: 'item-page', href: page, target: '_blank',
        rel: 'noopener noreferrer', text: `Open ${page} on the site ↗` })) : null,
    ];
  }

  // A v2 panel's row label by item id (`include.titles`: meta.titles[i] is results[i]'s title): the title as text
  // with the id beside it, or the id alone.
  function titledLabel(h, answer) {
    const titles = new Map();
    const found = (answer && answer.meta && answer.meta.titles) || [];
    ((answer && answer.results) || []).forEach((r, i) => { if (found[i]) titles.set(String(r.dimensions[0]), found[i]); });
    return (key) => (titles.has(key) ? h('span', { class: 'item-titled', 'data-title': titles.get(key) },
      h('span', { class: 'item-name', text: titles.get(key) }), h('span', { class: 'item-id mono', text: key })) : key);
  }

  window.TracksideItems = { popular, panels, heading, titledLabel, kindName, plural };
  window.dispatchEvent(new Event('trackside-items'));
})();
