// Kiosk page for applicants. A service is a list of steps (FLOWS); each step
// is a <section id="step-NAME"> in kiosk.html plus an entry in STEPS with what
// happens when it is shown. Nothing is pre-ticked, sensitive items are
// consented to one by one, every personal value shown is the daemon's masked
// one, and cancelling (or walking away: the idle timeout) clears the screen and
// deletes the session. The session token lives only in this page's memory.
"use strict";

// ------------------------------------------------------------------ texts
const TEXT = {
  zh: {
    skip: "跳到主要内容", title: "数字证书自助服务", progress: "办理进度",
    choose: "请选择服务", consent: "个人信息处理同意", "purpose-intro": "办理业务：",
    policy: "隐私政策版本：", general: "一般个人信息",
    "general-intro": "为办理上述业务，我们将处理以下信息：",
    "agree-purpose": "我同意为上述目的处理这些信息",
    sensitive: "敏感个人信息（需逐项单独同意）",
    "sensitive-intro": "以下信息属于敏感个人信息。请逐项阅读并决定是否同意；标明“必需”的项目不同意则无法办理，“可选”项目不同意不影响办理。",
    "agree-item": "同意处理我的{label}", required: "（必需）", optional: "（可选）",
    "agree-transfer": "同意将我的{label}提供给{dest}用于身份核验",
    "dest-verifier": "第三方核验机构", "dest-hq": "总部",
    "biometric-note": "您也可以选择不使用生物特征的核验方式。",
    "agree-next": "同意并继续", refuse: "不同意", cancel: "取消办理",
    "place-card": "请将身份证放在读卡区",
    "card-purpose": "读取身份证信息，用于核验您的身份并办理所选业务。读取的信息仅在本次办理中使用，屏幕上只显示部分内容。",
    retry: "重新读取", "demo-card": "演示：放置测试身份证",
    result: "读取结果", "masked-note": "为保护您的个人信息，以下内容已部分隐藏（以 * 表示）。",
    "used-for": "以上信息仅用于：{purpose}", withheld: "未读取的信息（未获同意或本业务不需要）：{list}",
    hidden: "（已隐藏）", finish: "结束并清除",
    "idle-title": "您还在吗？", "idle-text": "{n} 秒后将结束本次办理并清除屏幕上的信息。",
    "idle-continue": "继续办理", done: "（已完成）",
    "step-consent": "同意", "step-idcard": "身份证", "step-result": "结果",
    "card-waiting": "等待放置身份证……", "card-reading": "已检测到身份证，正在读取，请勿移动……",
    "card-removed": "身份证被移开，请重新放好。",
    "card-minor": "申请人未满14周岁，需要监护人陪同并同意后才能办理，请联系工作人员。",
    "card-consent": "缺少必要的单独同意，无法读取身份证。请取消后重新办理。",
    "card-error": "读卡器暂时无法使用，请重试或联系工作人员。",
    "need-purpose": "请先勾选“我同意为上述目的处理这些信息”，才能继续办理。",
    "need-items": "办理此业务需要您单独同意处理：{list}。",
    refused: "您未同意，本次办理已结束，没有收集您的任何信息。",
    cancelled: "已取消办理，本次办理的信息已全部清除。",
    finished: "办理已结束，屏幕上的信息已清除。",
    idle: "由于长时间无操作，本次办理已结束，信息已清除。",
    expired: "本次办理已超时结束，请重新开始。",
    busy: "另一位申请人正在办理，请稍候再试。", paused: "暂停受理，请联系工作人员。",
    offline: "暂时无法连接服务，请稍后再试或联系工作人员。",
  },
  en: {
    skip: "Skip to main content", title: "Certificate self-service", progress: "Progress",
    choose: "Choose a service", consent: "Consent to the processing of personal information",
    "purpose-intro": "Service: ", policy: "Privacy policy version: ", general: "Personal information",
    "general-intro": "To provide this service we process the following information:",
    "agree-purpose": "I agree to the processing of this information for the purpose above",
    sensitive: "Sensitive personal information (separate consent for each item)",
    "sensitive-intro": "The items below are sensitive personal information. Decide on each one: without the items marked \"required\" the service cannot be provided; refusing an \"optional\" item does not affect it.",
    "agree-item": "I agree to the processing of my {label}", required: " (required)", optional: " (optional)",
    "agree-transfer": "I agree that my {label} is sent to {dest} to verify my identity",
    "dest-verifier": "the third-party verification service", "dest-hq": "headquarters",
    "biometric-note": "You can also choose a way of verifying your identity that uses no biometrics.",
    "agree-next": "Agree and continue", refuse: "I do not agree", cancel: "Cancel",
    "place-card": "Place your ID card on the reader",
    "card-purpose": "Your ID card is read to verify your identity for the chosen service. What is read is used for this visit only, and the screen shows only part of it.",
    retry: "Read again", "demo-card": "Demo: place a test ID card",
    result: "What was read", "masked-note": "To protect your personal information, parts of it are hidden (shown as *).",
    "used-for": "Used only for: {purpose}", withheld: "Not read (no consent, or not needed for this service): {list}",
    hidden: "(hidden)", finish: "Finish and clear",
    "idle-title": "Are you still there?", "idle-text": "In {n} seconds this visit ends and the screen is cleared.",
    "idle-continue": "Continue", done: " (done)",
    "step-consent": "Consent", "step-idcard": "ID card", "step-result": "Result",
    "card-waiting": "Waiting for your ID card…", "card-reading": "ID card found. Reading, please keep it still…",
    "card-removed": "The ID card was moved. Please place it again.",
    "card-minor": "The applicant is under 14: a guardian must be present and consent. Please ask the staff.",
    "card-consent": "A required separate consent is missing, so the ID card cannot be read. Please cancel and start again.",
    "card-error": "The card reader is not available. Please try again or ask the staff.",
    "need-purpose": "Please tick \"I agree to the processing of this information for the purpose above\" to continue.",
    "need-items": "This service needs your separate consent to: {list}.",
    refused: "You did not agree. This visit has ended and nothing about you was collected.",
    cancelled: "Cancelled. Everything from this visit has been cleared.",
    finished: "Finished. The screen has been cleared.",
    idle: "This visit ended because nothing happened for a while. Everything has been cleared.",
    expired: "This visit timed out. Please start again.",
    busy: "Another applicant is being served. Please try again shortly.",
    paused: "The kiosk is not taking applications right now. Please ask the staff.",
    offline: "The service cannot be reached. Please try again later or ask the staff.",
  },
};

// Services offered on the first screen and the steps each goes through.
const SERVICES = [
  ["cert_application", "证书申请 / Apply for a certificate"],
  ["lifecycle", "证书更新、吊销、挂起 / Renew, revoke or suspend a certificate"],
  ["rights_request", "个人信息权利请求 / Your personal-information rights"],
];
const FLOWS = {
  cert_application: ["consent", "idcard", "result"],
  lifecycle: ["consent", "idcard", "result"],
  rights_request: ["consent", "idcard", "result"],
};
// What each step does when shown (`enter`) and when the language changes (`render`).
const STEPS = {
  consent: { enter: renderConsent, render: renderConsent },
  idcard: { enter: startCardReading, render: renderCardStatus },
  result: { enter: renderResult, render: renderResult },
};
// Order of ID-card fields on the result screen; others follow.
const FIELD_ORDER = ["name", "sex", "nation", "birth_date", "id_number", "address", "id_authority", "id_validity"];
const IDLE_WITHOUT_SESSION_MS = 120000;

// ------------------------------------------------------------------ state
const st = {
  lang: "zh",
  session: null, // {session_id, token, items, purpose, idle_timeout_secs, ...}
  flow: null, // step names of the chosen service
  step: "service",
  consent: { purpose: false, items: new Set(), transfers: new Set() },
  card: null, // the masked answer of the ID-card read
  cardStatus: "waiting",
  notice: null, // {key, params} or {raw}
  epoch: 0, // bumped on every step change: stale async work checks it and stops
  inflight: null, // the request in flight, awaited before the session is deleted
  lastPing: 0,
};

const $ = (id) => document.getElementById(id);
function t(key, params) {
  let s = TEXT[st.lang][key] ?? TEXT.zh[key] ?? key;
  for (const [k, v] of Object.entries(params || {})) s = s.replaceAll(`{${k}}`, v);
  return s;
}
// Catalog labels are "中文 / English"; English ones start lower-case, which
// stays inside a sentence (`inline`) and is capitalised on its own.
function label(s, inline = false) {
  const [zh, en] = String(s).split(" / ");
  if (st.lang === "zh" || !en) return zh;
  return inline ? en : en.charAt(0).toUpperCase() + en.slice(1);
}
function itemLabel(item) {
  const it = st.session && st.session.items.find((i) => i.item === item);
  return it ? label(it.label, true) : item;
}
function el(tag, props, ...children) {
  const e = document.createElement(tag);
  Object.assign(e, props || {});
  e.append(...children);
  return e;
}
const listSep = () => (st.lang === "zh" ? "、" : ", ");

// ------------------------------------------------------------------ API
async function api(method, path, body, session = st.session) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (session) headers.Authorization = "Bearer " + session.token;
  try {
    const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store" });
    const text = await r.text();
    let json = null;
    try { json = text ? JSON.parse(text) : null; } catch { json = null; }
    return { status: r.status, body: json };
  } catch {
    return { status: 0, body: null };
  }
}
const errorCode = (r) => (r.body && r.body.error && r.body.error.code) || "";
const sessionGone = (r) => r.status === 401 || r.status === 404;

// ------------------------------------------------------------------ screen
function setNotice(notice) {
  st.notice = notice;
  renderNotice();
}
function renderNotice() {
  const n = $("notice");
  n.textContent = st.notice ? (st.notice.raw ?? t(st.notice.key, st.notice.params)) : "";
  n.hidden = !st.notice;
}
function show(step) {
  st.step = step;
  st.epoch += 1;
  for (const s of document.querySelectorAll("main > section")) s.hidden = s.id !== `step-${step}`;
  renderProgress();
  if (STEPS[step]) STEPS[step].enter();
  $(`h-${step}`).focus();
}
function next() {
  const i = st.flow.indexOf(st.step);
  show(st.flow[i + 1]);
}
function renderProgress() {
  const nav = $("progress-nav"), ol = $("progress");
  ol.textContent = "";
  nav.hidden = !st.flow || st.step === "service";
  if (nav.hidden) return;
  const current = st.flow.indexOf(st.step);
  st.flow.forEach((name, i) => {
    const li = el("li", {}, t(`step-${name}`));
    if (i === current) li.setAttribute("aria-current", "step");
    if (i < current) { li.className = "done"; li.append(el("span", { className: "visually-hidden" }, t("done"))); }
    ol.append(li);
  });
}
function renderServices() {
  const box = $("services");
  box.textContent = "";
  for (const [id, text] of SERVICES) {
    const b = el("button", { type: "button", className: "service" }, label(text));
    b.dataset.service = id;
    b.addEventListener("click", () => start(id));
    box.append(b);
  }
}
function applyLang() {
  document.documentElement.lang = st.lang === "zh" ? "zh-CN" : "en";
  document.title = t("title");
  for (const e of document.querySelectorAll("[data-i18n]")) e.textContent = t(e.dataset.i18n);
  for (const e of document.querySelectorAll("[data-i18n-aria]")) e.setAttribute("aria-label", t(e.dataset.i18nAria));
  const b = $("lang");
  b.textContent = st.lang === "zh" ? "English" : "中文";
  b.lang = st.lang === "zh" ? "en" : "zh-CN";
  renderServices();
  renderProgress();
  renderNotice();
  if (STEPS[st.step]) STEPS[st.step].render();
  if ($("idle").open) renderIdleText();
}

// ------------------------------------------------------------------ service
async function start(service) {
  setNotice(null);
  const r = await api("POST", "/v1/sessions", { service }, null);
  if (r.status !== 201) {
    const code = errorCode(r);
    return setNotice(code === "session_busy" ? { key: "busy" } : code === "intake_paused" ? { key: "paused" }
      : r.status === 0 ? { key: "offline" } : { raw: (r.body && r.body.error && r.body.error.message) || String(r.status) });
  }
  st.session = r.body;
  st.flow = FLOWS[service] || FLOWS.cert_application;
  st.consent = { purpose: false, items: new Set(), transfers: new Set() };
  st.lastPing = Date.now();
  resetIdle();
  show(st.flow[0]);
}

// ------------------------------------------------------------------ consent
function renderConsent() {
  const s = st.session;
  if (!s) return;
  $("purpose").textContent = label(s.purpose);
  $("policy-version").textContent = s.policy_version;
  $("consent-purpose").checked = st.consent.purpose;
  const gen = $("general-items"), sen = $("sensitive-items");
  gen.textContent = "";
  sen.textContent = "";
  for (const it of s.items) {
    const tag = t(it.required ? "required" : "optional");
    if (!it.separate_consent) {
      gen.append(el("li", {}, label(it.label), el("span", { className: "tag" }, tag)));
      continue;
    }
    const box = el("div", { className: "sensitive-item" + (it.sensitivity === "biometric" ? " biometric" : "") });
    const c = el("input", { type: "checkbox", checked: st.consent.items.has(it.item) });
    c.dataset.item = it.item;
    box.append(el("label", { className: "check" }, c, el("span", {}, t("agree-item", { label: label(it.label, true) }) + tag)));
    if (it.sensitivity === "biometric") box.append(el("p", { className: "small note" }, t("biometric-note")));
    for (const dest of it.transfer_consent || []) {
      const key = `${it.item}:${dest}`;
      const tc = el("input", { type: "checkbox", checked: st.consent.transfers.has(key), disabled: !c.checked });
      tc.dataset.transfer = key;
      tc.addEventListener("change", () => (tc.checked ? st.consent.transfers.add(key) : st.consent.transfers.delete(key)));
      box.append(el("label", { className: "check sub" }, tc,
        el("span", {}, t("agree-transfer", { label: label(it.label, true), dest: t(`dest-${dest}`) }) + t("optional"))));
      c.addEventListener("change", () => {
        tc.disabled = !c.checked;
        if (!c.checked) { tc.checked = false; st.consent.transfers.delete(key); }
      });
    }
    c.addEventListener("change", () => (c.checked ? st.consent.items.add(it.item) : st.consent.items.delete(it.item)));
    sen.append(box);
  }
}
$("consent-purpose").addEventListener("change", (e) => (st.consent.purpose = e.target.checked));
$("consent-next").addEventListener("click", async () => {
  const s = st.session;
  if (!s) return;
  if (!st.consent.purpose) return setNotice({ key: "need-purpose" });
  const missing = s.items.filter((i) => i.separate_consent && i.required && !st.consent.items.has(i.item));
  if (missing.length) return setNotice({ key: "need-items", params: { list: missing.map((i) => label(i.label, true)).join(listSep()) } });
  const transfers = [...st.consent.transfers].map((k) => k.split(":")).filter(([item]) => st.consent.items.has(item))
    .map(([item, destination]) => ({ item, destination }));
  const epoch = st.epoch;
  const r = await api("POST", `/v1/sessions/${s.session_id}/consents`, { purpose: true, items: [...st.consent.items], transfers });
  if (epoch !== st.epoch) return;
  if (sessionGone(r)) return end("expired");
  if (r.status !== 200) return setNotice(r.status === 0 ? { key: "offline" } : { raw: r.body && r.body.error ? r.body.error.message : String(r.status) });
  setNotice(null);
  next();
});
$("consent-refuse").addEventListener("click", () => end("refused"));

// ------------------------------------------------------------------ ID card
function setCardStatus(status) {
  if (st.cardStatus === status) return; // announce changes only
  st.cardStatus = status;
  renderCardStatus();
}
function renderCardStatus() {
  const p = $("card-status");
  p.textContent = t(`card-${st.cardStatus}`);
  p.dataset.state = st.cardStatus;
  $("card-retry").hidden = st.cardStatus !== "error";
}
const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
// Poll the reader until a card is read or the step is left (a card placed on
// the reader is noticed without a touch on the screen).
async function startCardReading() {
  st.cardStatus = null;
  setCardStatus("waiting");
  const epoch = st.epoch, s = st.session;
  while (epoch === st.epoch && st.session === s) {
    const req = api("POST", `/v1/sessions/${s.session_id}/idcard`);
    st.inflight = req;
    const r = await req;
    st.inflight = null;
    if (epoch !== st.epoch || st.session !== s) return;
    const code = errorCode(r);
    if (r.status === 200) {
      st.card = r.body;
      resetIdle(); // a card placed counts as the applicant acting
      return next();
    }
    if (sessionGone(r)) return end("expired");
    if (code === "no_card") setCardStatus("waiting");
    else if (code === "card_removed") setCardStatus("removed");
    else if (code === "guardian_required") return setCardStatus("minor");
    else if (r.status === 422) return setCardStatus("consent");
    else return setCardStatus("error");
    await pause(700);
  }
}
$("card-retry").addEventListener("click", () => { st.epoch += 1; startCardReading(); });
// Demo and tests: the daemon's simulated reader stands in for a card placed.
$("demo-card").addEventListener("click", async () => {
  const r = await api("POST", "/v1/sim/idcard", { seed: 1 }, null);
  if (r.status === 204) setCardStatus("reading");
  else setNotice({ raw: (r.body && r.body.error && r.body.error.message) || String(r.status) });
});

// ------------------------------------------------------------------ result
function renderResult() {
  const dl = $("fields"), card = st.card;
  dl.textContent = "";
  $("used-for").textContent = "";
  $("withheld").hidden = true;
  if (!card) return;
  const keys = Object.keys(card.fields).sort((a, b) => {
    const ia = FIELD_ORDER.indexOf(a), ib = FIELD_ORDER.indexOf(b);
    return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib) || a.localeCompare(b);
  });
  for (const k of keys) {
    const f = card.fields[k];
    const row = el("div", { className: "field" }, el("dt", {}, label(f.label)), el("dd", {}, f.value || t("hidden")));
    row.dataset.item = k;
    dl.append(row);
  }
  $("used-for").textContent = t("used-for", { purpose: label(st.session ? st.session.purpose : "") });
  if (card.withheld && card.withheld.length) {
    $("withheld").textContent = t("withheld", { list: card.withheld.map(itemLabel).join(listSep()) });
    $("withheld").hidden = false;
  }
}

// ------------------------------------------------------------------ end
// Clear the screen at once, then delete the session (after any request still
// in flight, so nothing it stores outlives the delete).
async function end(reason) {
  const s = st.session, inflight = st.inflight;
  st.session = null;
  st.flow = null;
  st.card = null;
  st.inflight = null;
  st.consent = { purpose: false, items: new Set(), transfers: new Set() };
  for (const id of ["fields", "used-for", "withheld", "general-items", "sensitive-items", "purpose", "policy-version"]) {
    $(id).textContent = "";
  }
  $("consent-purpose").checked = false;
  if ($("idle").open) $("idle").close();
  show("service");
  setNotice(reason ? { key: reason } : null);
  resetIdle();
  if (s) {
    if (inflight) await inflight;
    await api("DELETE", `/v1/sessions/${s.session_id}`, undefined, s);
  }
}
for (const b of document.querySelectorAll("button.cancel")) {
  b.addEventListener("click", () => end(b.closest("#step-result") ? "finished" : "cancelled"));
}

// ------------------------------------------------------------------ idle
// Any touch or key restarts the timer; before the end a dialog counts down
// and offers to continue. The limit is the daemon's session idle time.
const idle = { warn: null, end: null, tick: null, deadline: 0 };
function idleLimitMs() {
  return st.session ? st.session.idle_timeout_secs * 1000 : IDLE_WITHOUT_SESSION_MS;
}
function resetIdle() {
  clearTimeout(idle.warn);
  clearTimeout(idle.end);
  clearInterval(idle.tick);
  const limit = idleLimitMs();
  idle.deadline = Date.now() + limit;
  idle.end = setTimeout(idleExpired, limit);
  if (st.session) idle.warn = setTimeout(idleWarn, limit - Math.min(30000, limit / 2));
}
function idleWarn() {
  renderIdleText();
  if (!$("idle").open) $("idle").showModal();
  idle.tick = setInterval(renderIdleText, 1000);
}
function renderIdleText() {
  $("idle-text").textContent = t("idle-text", { n: Math.max(0, Math.ceil((idle.deadline - Date.now()) / 1000)) });
}
function idleExpired() {
  if (st.session) return end("idle");
  // Nobody is here: back to the first screen in Chinese.
  setNotice(null);
  if (st.lang !== "zh") { st.lang = "zh"; applyLang(); }
  resetIdle();
}
function activity() {
  if ($("idle").open) return; // only "continue" (or Esc) closes the warning
  resetIdle();
  // Keep the daemon's session alive while the applicant is busy on the screen.
  const s = st.session;
  if (s && Date.now() - st.lastPing > idleLimitMs() / 3) {
    st.lastPing = Date.now();
    api("GET", `/v1/sessions/${s.session_id}`, undefined, s).then((r) => { if (st.session === s && sessionGone(r)) end("expired"); });
  }
}
function continueAfterIdle() {
  if ($("idle").open) $("idle").close();
  st.lastPing = 0;
  activity();
}
$("idle-continue").addEventListener("click", continueAfterIdle);
$("idle").addEventListener("cancel", (e) => { e.preventDefault(); continueAfterIdle(); });
for (const ev of ["pointerdown", "keydown"]) document.addEventListener(ev, activity, true);

// ------------------------------------------------------------------ start
$("lang").addEventListener("click", () => { st.lang = st.lang === "zh" ? "en" : "zh"; applyLang(); });
applyLang();
resetIdle();
// The demo card button exists only where the daemon simulates the reader.
api("GET", "/assets/kiosk-config.json", undefined, null).then((r) => {
  $("demo-card").hidden = !(r.status === 200 && r.body && r.body.simulated_idcard === true);
});
