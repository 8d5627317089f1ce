// Trackside dashboard: chart tooltips by keyboard, touch and mouse (loaded before app.js, which draws the charts).
//
// `TracksideCharts.interact(root, {hits, label, show, hide})` makes one drawn chart reachable:
// - every point (a line chart's day, a bar) has a hit area `hits[i]` (an SVG element) with an aria-label naming
//   its exact value; one of them is in the tab order at a time (a roving tabindex: Tab enters the chart on the
//   latest point, Tab again leaves it), focus shows its tooltip;
// - ArrowLeft/ArrowRight (and Up/Down) move between points, Home/End go to the first/last, Escape hides the
//   tooltip (an arrow key shows it again, on the same point);
// - a mouse shows the tooltip while it hovers (a click too, until it leaves); a tap (touch or pen) shows it and keeps it until a tap elsewhere,
//   and a finger sliding along the chart moves it.
// The chart's root becomes a `group` (a role="img" would hide its points from assistive technology).
'use strict';

(() => {
  // The charts whose tooltip stays after a tap, each with its hide(); a tap outside them hides it.
  const pinned = new Map();

  document.addEventListener('pointerdown', (event) => {
    for (const [root, hide] of [...pinned]) {
      if (!root.isConnected) {
        pinned.delete(root);
      } else if (!root.contains(event.target)) {
        pinned.delete(root);
        hide();
      }
    }
  }, true);

  function interact(root, { hits, label, show, hide }) {
    const count = hits.length;
    if (!count) return;
    root.setAttribute('role', 'group');
    root.setAttribute('tabindex', '-1'); // Chromium would put the <svg> itself in the tab order, before its points
    let current = count - 1; // the point in the tab order: the latest, until another is chosen
    let shown = -1;

    hits.forEach((hit, i) => {
      hit.classList.add('hit');
      hit.dataset.index = String(i);
      hit.setAttribute('role', 'img');
      hit.setAttribute('aria-label', label(i));
      hit.setAttribute('tabindex', i === current ? '0' : '-1');
    });

    const display = (i) => {
      shown = i;
      show(i);
    };
    const conceal = () => {
      shown = -1;
      pinned.delete(root);
      hide();
    };
    const move = (i, { focus = true } = {}) => {
      const next = Math.max(0, Math.min(count - 1, i));
      if (next !== current) {
        hits[current].setAttribute('tabindex', '-1');
        hits[next].setAttribute('tabindex', '0');
        current = next;
      }
      if (focus && document.activeElement !== hits[next]) hits[next].focus({ preventScroll: true });
      display(next);
    };
    const indexOf = (target) => {
      const hit = target && target.closest ? target.closest('.hit') : null;
      return hit && root.contains(hit) ? Number(hit.dataset.index) : -1;
    };

    root.addEventListener('focusin', (event) => {
      const i = indexOf(event.target);
      if (i < 0) return;
      if (i !== current) move(i, { focus: false });
      else if (shown !== i) display(i);
    });
    root.addEventListener('focusout', (event) => {
      if (!root.contains(event.relatedTarget) && !pinned.has(root)) conceal();
    });
    root.addEventListener('keydown', (event) => {
      const keys = { ArrowLeft: -1, ArrowDown: -1, ArrowRight: 1, ArrowUp: 1 };
      if (event.key in keys) {
        event.preventDefault();
        move(shown < 0 ? current : current + keys[event.key]);
      } else if (event.key === 'Home' || event.key === 'End') {
        event.preventDefault();
        move(event.key === 'Home' ? 0 : count - 1);
      } else if (event.key === 'Escape' && shown >= 0) {
        event.preventDefault();
        conceal();
      }
    });

    // Pointers: a mouse hovers; a tap pins the tooltip; a finger sliding along the chart moves it.
    const touchy = (event) => event.pointerType === 'touch' || event.pointerType === 'pen';
    const at = (event) => {
      const i = indexOf(event.target);
      if (i >= 0 || !touchy(event)) return i;
      return indexOf(document.elementFromPoint(event.clientX, event.clientY)); // the finger's target stays the first
    };
    root.addEventListener('pointerdown', (event) => {
      const i = at(event);
      if (i < 0) return;
      if (touchy(event)) {
        pinned.set(root, conceal);
        move(i, { focus: false });
      } else {
        display(i);
      }
    });
    root.addEventListener('pointermove', (event) => {
      const i = at(event);
      if (i < 0 || (touchy(event) && !pinned.has(root)) || i === shown) return;
      if (touchy(event)) move(i, { focus: false });
      else display(i);
    });
    root.addEventListener('pointerleave', (event) => {
      if (!touchy(event) && !pinned.has(root)) conceal();
    });
    hide();
  }

  window.TracksideCharts = { interact };
})();
