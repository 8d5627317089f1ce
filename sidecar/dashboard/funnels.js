// Trackside's dashboard: the funnel panel (loaded after app.js, which mounts it on the overview).
// A picker of the named funnels (/_trackside/api/funnels: the settings' and the stored ones), the chosen funnel
// asked of /_trackside/api/v2/funnel for the overview's period and filters, drawn as bars with the drop-off
// between steps; a moderator adds a funnel (its steps written `/ > /p/* > goal:upload`) or removes a stored one.
// Every string from the API reaches the page through textContent, never as HTML.
'use strict';

(() => {
  const API_FUNNEL = 'api/v2/funnel'; // relative to /_trackside/
  const API_FUNNELS = 'api/funnels';
  const PICK_KEY = 'trackside.funnel';

  const { h, num, pct } = window.TracksideDom;


  function seconds(s) {
    if (s === null || s === undefined) return '—';
    const secs = Math.round(Number(s));
    if (secs < 60) return `${secs}s`;
    const m = Math.floor(secs / 60);
    return m < 60 ? `${m}m ${secs % 60}s` : `${Math.floor(m / 60)}h ${m % 60}m`;
  }

  // `/ > /p/* > goal:upload` → [{page: '/'}, {page: '/p/*'}, {goal: 'upload'}] (the settings' compact form).
  function parseSteps(text) {
    return String(text).split('>').map((s) => s.trim()).filter(Boolean)
      .map((s) => (s.startsWith('goal:') ? { goal: s.slice(5).trim() } : { page: s }));
  }

  const stepText = (step) => (step.goal !== undefined ? `goal:${step.goal}` : step.page);

  async function call(token, method, url, body) {
    const headers = { Authorization: `Bearer ${token}`, Accept: 'application/json' };
    if (body) headers['Content-Type'] = 'application/json';
    const response = await fetch(url, { method, headers, body: body ? JSON.stringify(body) : undefined,
      cache: 'no-store', credentials: 'omit' });
    if (response.status === 204) return null;
    let answer = null;
    try {
      answer = await response.json();
    } catch (e) {
      answer = null;
    }
    // The funnel query answers `{"error"}` (as v2), the funnels API `{"detail"}` (as the goals API).
    if (!response.ok) throw new Error((answer && (answer.error || answer.detail)) || `HTTP ${response.status}`);
    return answer;
  }

  // The bars: each step's width is its visitors over the first step's; the part the step lost from the previous
  // one is drawn after it, lighter, with the drop-off and the median time between the two.
  function drawFunnel(answer) {
    const steps = answer.steps || [];
    const top = steps.length ? Number(steps[0].visitors) || 0 : 0;
    const list = h('ol', { class: 'funnel-steps', 'data-funnel-steps': String(steps.length) });
    let previous = top;
    steps.forEach((step, i) => {
      const visitors = Number(step.visitors) || 0;
      const kept = h('span', { class: 'funnel-kept', 'aria-hidden': 'true' });
      const lost = h('span', { class: 'funnel-lost', 'aria-hidden': 'true' });
      kept.style.width = `${top ? (100 * visitors) / top : 0}%`;
      lost.style.width = `${top ? (100 * Math.max(0, previous - visitors)) / top : 0}%`;
      const drop = i === 0 ? null : h('p', { class: 'funnel-drop', 'data-funnel-drop': String(step.dropoff) },
        h('span', { text: `−${num(step.dropoff)} dropped` }),
        h('span', { class: 'muted', text: ` · ${pct(step.conversion_rate_step)} of the previous step` }),
        h('span', { class: 'muted', 'data-funnel-median': step.median_seconds_from_previous === null ? '' : String(step.median_seconds_from_previous),
          text: ` · median ${seconds(step.median_seconds_from_previous)} after it` }));
      list.append(h('li', { class: 'funnel-step', 'data-funnel-step': String(i), 'data-visitors': String(visitors),
        'data-label': step.label, title: `${step.label}: ${num(visitors)} visitors (${pct(step.conversion_rate)})` },
      drop,
      h('div', { class: 'funnel-head' },
        h('span', { class: 'funnel-index', text: `${i + 1}` }),
        h('span', { class: 'funnel-label mono', text: step.step && step.step.goal !== undefined ? `goal ${step.label}` : step.label }),
        h('span', { class: 'funnel-value', 'data-funnel-visitors': String(visitors), text: num(visitors) }),
        h('span', { class: 'funnel-rate', 'data-funnel-rate': String(step.conversion_rate), text: pct(step.conversion_rate) })),
      h('div', { class: 'funnel-track' }, kept, lost)));
      previous = visitors;
    });
    return list;
  }

  // The panel for the overview: `ctx` is {token, period: [from, to], filters (v2 filters)}.
  function panel(ctx) {
    const body = h('div', { class: 'funnel-body', 'data-funnel-state': 'loading' }, h('p', { class: 'muted', text: 'Loading…' }));
    const picker = h('select', { class: 'funnel-pick', 'data-funnel-pick': '1', 'aria-label': 'Funnel' });
    const problem = h('p', { class: 'goal-error', 'data-funnel-error': '1', role: 'alert', hidden: true });
    const manage = h('div', { class: 'funnel-manage' });
    const section = h('section', { class: 'card wide', 'data-panel': 'funnel' },
      h('header', { class: 'card-head' },
        h('div', {}, h('h2', { text: 'Funnel' }),
          h('p', { class: 'card-sub', text: 'visitors who reached each step in order, within one visit · period and filters above' })),
        picker),
      body, problem, manage);
    const fail = (error) => {
      problem.textContent = String(error && error.message ? error.message : error);
      problem.hidden = false;
    };

    let funnels = [];
    const show = async () => {
      const chosen = funnels.find((f) => f.name === picker.value);
      if (!chosen) {
        body.replaceChildren(h('p', { class: 'muted', 'data-funnel-empty': '1',
          text: 'No funnel defined yet: add one below (TRACKSIDE_FUNNELS, or a moderator here).' }));
        body.dataset.funnelState = 'empty';
        return;
      }
      body.dataset.funnelState = 'loading';
      try {
        const answer = await call(ctx.token, 'POST', API_FUNNEL,
          { date_range: ctx.period, steps: chosen.steps, filters: ctx.filters || [] });
        const meta = answer.meta || {};
        body.replaceChildren(drawFunnel(answer),
          h('p', { class: 'card-note', text: `Visitors: ${meta.visitors || ''}` }));
        body.dataset.funnelState = 'ready';
        body.dataset.funnel = chosen.name;
      } catch (error) {
        body.replaceChildren(h('p', { class: 'goal-error', text: String(error.message || error) }));
        body.dataset.funnelState = 'error';
      }
    };
    picker.addEventListener('change', () => {
      sessionStorage.setItem(PICK_KEY, picker.value);
      show();
    });

    const name = h('input', { 'data-funnel-field': 'name', required: true, maxlength: '64', placeholder: 'Upload',
      'aria-label': 'Funnel name' });
    const steps = h('input', { 'data-funnel-field': 'steps', required: true, class: 'mono',
      placeholder: '/ > /p/* > goal:upload', 'aria-label': 'Steps, separated by >' });
    const form = h('form', { class: 'goal-form', 'data-funnel-form': '1' }, name, steps,
      h('button', { type: 'submit', class: 'ghost', text: 'Add funnel' }));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      problem.hidden = true;
      try {
        const added = await call(ctx.token, 'POST', API_FUNNELS, { name: name.value.trim(), steps: parseSteps(steps.value) });
        sessionStorage.setItem(PICK_KEY, added.name);
        name.value = '';
        steps.value = '';
        await load();
      } catch (error) {
        fail(error);
      }
    });

    const drawManage = () => {
      const rows = funnels.map((f) => h('tr', { 'data-funnel-row': f.name },
        h('td', { text: f.name }),
        h('td', { class: 'mono', text: f.steps.map(stepText).join(' > ') }),
        h('td', {}, f.origin === 'database'
          ? h('button', { type: 'button', class: 'link-button', 'data-action': 'remove-funnel',
            'aria-label': `Remove the funnel ${f.name}`, text: 'Remove', onclick: async () => {
              problem.hidden = true;
              try {
                await call(ctx.token, 'DELETE', `${API_FUNNELS}?name=${encodeURIComponent(f.name)}`);
                await load();
              } catch (error) {
                fail(error);
              }
            } })
          : h('span', { class: 'muted', title: 'Funnels of the settings change only in TRACKSIDE_FUNNELS', text: 'settings' }))));
      const details = h('details', { class: 'goals-manage', 'data-funnels': String(funnels.length) },
        h('summary', { text: `Funnels defined (${funnels.length}) · add or remove` }),
        h('table', { class: 'goals-table' },
          h('thead', {}, h('tr', {}, ['Funnel', 'Steps', ''].map((t) => h('th', { text: t })))),
          h('tbody', {}, rows)),
        form,
        h('p', { class: 'card-note', text: '2 to 8 steps separated by >: a page pattern (* any characters but /, ** any: '
          + '/p/* matches /p/a1) or goal:NAME (a goal of the goals panel).' }));
      manage.replaceChildren(details);
      return details;
    };

    const load = async () => {
      let wasOpen = manage.querySelector('details');
      wasOpen = Boolean(wasOpen && wasOpen.open);
      try {
        funnels = ((await call(ctx.token, 'GET', API_FUNNELS)) || {}).funnels || [];
      } catch (error) {
        funnels = [];
        fail(error);
      }
      const wanted = sessionStorage.getItem(PICK_KEY);
      picker.replaceChildren(...funnels.map((f) => h('option', { value: f.name, text: f.name })));
      picker.hidden = !funnels.length;
      if (funnels.some((f) => f.name === wanted)) picker.value = wanted;
      drawManage().open = wasOpen;
      await show();
    };
    load();
    return section;
  }

  window.TracksideFunnels = { panel, parseSteps };
})();
