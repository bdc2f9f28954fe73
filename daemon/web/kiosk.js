// Kiosk page for applicants: choose a service, consent (sensitive items
// separately, nothing pre-ticked), read the ID card, see the masked result.
// The session token lives only in this page's memory.
"use strict";
const T = {
  en: { choose: "Choose a service", consent: "Consent to the processing of personal information",
        general: "Personal information", sensitive: "Sensitive personal information (separate consent)",
        "agree-purpose": "I agree to the processing of this information for the purpose above",
        next: "Next", cancel: "Cancel", "place-card": "Place your ID card on the reader",
        "card-purpose": "Your ID card is read to verify your identity and issue the certificate.",
        read: "Read ID card", "demo-card": "Demo: place a test ID card", result: "Result (masked)", finish: "Done" },
};
let lang = "zh", session = null, services = null;
const $ = (id) => document.getElementById(id);
const zhText = {};
document.querySelectorAll("[data-i18n]").forEach((e) => (zhText[e.dataset.i18n] = e.textContent));

function applyLang() {
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  document.querySelectorAll("[data-i18n]").forEach((e) => {
    const k = e.dataset.i18n;
    e.textContent = lang === "zh" ? zhText[k] : (T.en[k] || zhText[k]);
  });
  $("lang").textContent = lang === "zh" ? "English" : "中文";
  $("title").textContent = lang === "zh" ? "数字证书自助服务" : "Certificate self-service";
}
function label(s) { const [zh, en] = s.split(" / "); return lang === "zh" || !en ? zh : en; }
function show(step) {
  for (const s of document.querySelectorAll("main > section")) s.hidden = s.id !== step;
  $("error").hidden = true;
}
function fail(body) { $("error").textContent = (body && body.error && body.error.message) || "error"; $("error").hidden = false; }
async function api(method, path, body) {
  const headers = { "Content-Type": "application/json" };
  if (session) headers.Authorization = "Bearer " + session.token;
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  return { status: r.status, body: text ? JSON.parse(text) : null };
}
const SERVICES = [
  ["cert_application", "证书申请 / Certificate application"],
  ["lifecycle", "证书更新、吊销、挂起 / Renew, revoke, suspend"],
  ["rights_request", "个人信息权利请求 / Your privacy rights"],
];
function renderServices() {
  const box = $("services"); box.textContent = "";
  for (const [id, text] of SERVICES) {
    const b = document.createElement("button"); b.type = "button"; b.textContent = label(text);
    b.dataset.service = id; b.onclick = () => start(id); box.appendChild(b);
  }
}
async function start(service) {
  const r = await api("POST", "/v1/sessions", { service });
  if (r.status !== 201) return fail(r.body);
  session = r.body;
  $("purpose").textContent = label(session.purpose);
  const gen = $("general-items"), sen = $("sensitive-items");
  gen.textContent = ""; sen.textContent = "";
  for (const it of session.items) {
    if (it.separate_consent) {
      const l = document.createElement("label"); l.className = "check sensitive";
      const c = document.createElement("input"); c.type = "checkbox"; c.dataset.item = it.item;
      l.append(c, " " + label(it.label) + (it.required ? "" : lang === "zh" ? "（可选）" : " (optional)"));
      sen.appendChild(l);
    } else {
      const li = document.createElement("li"); li.textContent = label(it.label); gen.appendChild(li);
    }
  }
  show("step-consent");
}
$("consent-next").onclick = async () => {
  if (!$("consent-purpose").checked) return fail({ error: { message: lang === "zh" ? "需要您的同意才能继续" : "Consent is needed to continue" } });
  const items = [...document.querySelectorAll("#sensitive-items input:checked")].map((c) => c.dataset.item);
  const r = await api("POST", `/v1/sessions/${session.session_id}/consents`, { purpose: true, items });
  if (r.status !== 200) return fail(r.body);
  show("step-card");
};
$("demo-card").onclick = async () => { const r = await api("POST", "/v1/sim/idcard", { seed: 1 }); if (r.status !== 204) fail(r.body); };
$("read-card").onclick = async () => {
  const r = await api("POST", `/v1/sessions/${session.session_id}/idcard`);
  if (r.status !== 200) return fail(r.body);
  const dl = $("fields"); dl.textContent = "";
  for (const [, f] of Object.entries(r.body.fields)) {
    const dt = document.createElement("dt"); dt.textContent = label(f.label);
    const dd = document.createElement("dd"); dd.textContent = f.value;
    dl.append(dt, dd);
  }
  show("step-result");
};
async function cancel() {
  if (session) await api("DELETE", `/v1/sessions/${session.session_id}`);
  session = null; show("step-service");
}
document.querySelectorAll("button.cancel").forEach((b) => (b.onclick = cancel));
$("lang").onclick = () => { lang = lang === "zh" ? "en" : "zh"; applyLang(); renderServices(); };
// Idle timeout: clear the screen and end the session.
let idle;
function touch() { clearTimeout(idle); idle = setTimeout(cancel, 90000); }
["click", "keydown", "touchstart"].forEach((e) => document.addEventListener(e, touch));
renderServices(); applyLang(); touch();
