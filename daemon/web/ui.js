// Small DOM and text helpers shared by the kiosk page and the staff console
// (loaded before their own script).
"use strict";

const $ = (id) => document.getElementById(id);

/** An element with `props` assigned and `children` appended. */
function el(tag, props, ...children) {
  const e = document.createElement(tag);
  Object.assign(e, props || {});
  e.append(...children);
  return e;
}

/**
 * The translator of a page: `t(key, params)` looks `key` up in `texts[lang()]`
 * (falling back to Chinese, then to the key) and fills `{name}` placeholders.
 */
function translator(texts, lang) {
  return (key, params) => {
    let s = texts[lang()][key] ?? texts.zh[key] ?? key;
    for (const [k, v] of Object.entries(params || {})) s = s.replaceAll(`{${k}}`, v);
    return s;
  };
}
