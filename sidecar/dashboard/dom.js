// Trackside dashboard: the DOM helpers and number formats that app.js and every panel use (loaded first).
// Every string reaches the page through textContent or an attribute, never as HTML.
'use strict';

(() => {
  // Attributes: `text` is the text content, `on<event>` a listener, `true` an empty attribute; null, undefined and
  // false leave the attribute out.
  function setAttrs(el, attrs) {
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === 'text') el.textContent = String(value);
      else if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
      else el.setAttribute(key, value === true ? '' : String(value));
    }
  }

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    setAttrs(el, attrs);
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  const numberFormat = new Intl.NumberFormat('en');
  const num = (n) => numberFormat.format(Number(n) || 0);
  const pct = (n) => `${numberFormat.format(Math.round((Number(n) || 0) * 10) / 10)}%`;

  window.TracksideDom = { h, setAttrs, numberFormat, num, pct };
})();
