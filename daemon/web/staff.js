// Staff console: staff log in with their UKEY (its label) and PIN; the page then
// shows the devices and UKEYs present, runs batch UKEY issuance with a progress
// bar per token (server-sent events read with fetch(), since they need the staff
// bearer token), shows the initial PINs once, the sync backlog and last HQ
// contact, rights requests with their deadlines (complete / refuse), the audit
// log with its verification status, and the audited reveal of one clear value.
// The staff token lives only in this page's memory; logout forgets it.
"use strict";

// ------------------------------------------------------------------ texts
const TEXT = {
  zh: {
    skip: "跳到主要内容", title: "工作人员控制台", logout: "退出登录", login: "工作人员登录",
    "login-intro": "请插入工作人员 UKEY，输入其标签和 PIN（两个因素：持有 UKEY 并知道 PIN）。",
    "token-label": "UKEY 标签", "pin-label": "PIN", "login-button": "登录",
    devices: "设备状态", tokens: "已插入的 UKEY", serial: "序列号", label: "标签", initialized: "已初始化",
    "pin-state": "PIN 状态", "no-tokens": "未检测到 UKEY。", refresh: "刷新",
    batch: "批量签发 UKEY",
    "batch-intro": "为当前插入的全部空白 UKEY 初始化、设置随机初始 PIN 并在 UKEY 上生成密钥对，多支同时进行。",
    "label-prefix": "标签前缀", algorithm: "算法", "batch-start": "开始批量签发",
    "pins-warning": "以下 PIN 只显示这一次：初始 PIN 请立即交给 UKEY 持有人（或封入 PIN 信封），管理员 PIN 由网点保管；关闭后无法再次查看。",
    "initial-pin": "初始 PIN", "pins-hide": "已记录，隐藏 PIN",
    "so-pin": "管理员 PIN（SO PIN，用于解锁）",
    sync: "同步到总部", rights: "个人信息权利请求", request: "请求", kind: "类型", state: "状态", due: "截止日期",
    actions: "操作", "no-rights": "没有待处理的请求。", audit: "审计日志", seq: "序号", time: "时间",
    actor: "操作者", action: "动作", object: "对象",
    reveal: "查看明文（将记入审计日志）",
    "reveal-intro": "仅在确有必要时查看某项个人信息的明文。每次查看都会连同您的身份和理由记入审计日志。",
    subject: "记录", fields: "信息（已隐藏）", "no-subjects": "本机没有保存个人信息。", item: "信息项",
    reason: "理由（必填）", "reveal-button": "查看明文",
    "logged-in": "已登录：{who}", "logged-out": "已退出登录。",
    "idcard-dev": "身份证读卡器", "fingerprint-dev": "指纹仪", "camera-dev": "摄像头", "ukey-provider": "UKEY 接口",
    simulated: "模拟设备", serialdev: "串口设备", synthetic: "合成图像（演示）", fixture: "图片文件", v4l2: "V4L2 摄像头",
    yes: "是", no: "否",
    "pin-ok": "正常", "pin-count_low": "已输错过", "pin-final_try": "仅剩一次", "pin-locked": "已锁定", "pin-not_initialized": "未设置", "pin-to_be_changed": "需修改",
    backlog: "待发送记录", "in-flight": "正在发送的批次", attempts: "尝试次数", "last-error": "最近错误",
    "last-contact": "最近一次联系总部", never: "从未", none: "无",
    "batch-running": "正在签发 {n} 支 UKEY……", "batch-done": "批量签发完成：{ok} 支成功，{failed} 支失败。",
    "batch-none": "没有可签发的空白 UKEY。",
    "tok-queued": "排队中", "tok-initialising": "初始化", "tok-setting_pin": "设置 PIN", "tok-generating_key": "生成密钥",
    "tok-done": "完成", "tok-failed": "失败",
    complete: "办结", refuse: "拒绝", "refuse-ground": "拒绝理由",
    "rights-done": "请求 {id} 已更新为：{state}。",
    "kind-access": "查阅", "kind-copy": "复制", "kind-correction": "更正", "kind-deletion": "删除",
    "kind-consent_withdrawal": "撤回同意", "kind-account_cancellation": "注销", "kind-automated_decision": "自动化决策说明",
    "kind-posthumous": "近亲属行使权利",
    "st-received": "已受理", "st-verified": "身份已核验", "st-done": "已办结", "st-refused": "已拒绝", "st-forwarded": "已转总部",
    "audit-ok": "审计日志完整：{entries} 条记录，{checkpoints} 个已签名检查点，验证通过。",
    "audit-bad": "审计日志验证失败：{problem}",
    "actor-system": "系统", "actor-applicant": "申请人会话", "actor-staff": "工作人员",
    "obj-person": "个人（以密钥摘要标识）",
    "reveal-shown": "明文（{s} 秒后隐藏，已记入审计日志）：",
    "need-reason": "请填写查看明文的理由（至少 4 个字）。",
    "ukey-pin": "UKEY 的 PIN", "ukey-pin-intro": "持有人的 PIN 被锁定时，用 UKEY 的管理员 PIN（由网点保管）解锁并设置新 PIN；或在持有人输入原 PIN 后修改 PIN。PIN 不会记入日志。",
    "ukey-pin-mode": "操作", "ukey-unblock": "用管理员 PIN 解锁", "ukey-change": "修改 PIN（需要原 PIN）",
    "so-pin-input": "管理员 PIN", "old-pin": "原 PIN", "new-pin": "新 PIN（6–16 位数字）", "ukey-pin-submit": "确定",
    "ukey-unblocked": "UKEY {serial} 已解锁，新 PIN 已生效。", "ukey-pin-changed": "UKEY {serial} 的 PIN 已修改。",
    "so-pin-wrong": "管理员 PIN 错误，还可以尝试 {n} 次。", "ukey-pin-none": "没有可操作的 UKEY。",
    offline: "暂时无法连接服务。", expired: "登录已过期，请重新登录。",
    "g-national_security": "国家安全", "g-public_safety": "公共安全", "g-criminal_investigation": "犯罪侦查",
    "g-abuse_of_rights": "滥用权利", "g-serious_harm_to_others": "严重损害他人权益", "g-trade_secret": "商业秘密",
    "g-identity_not_verified": "无法验证身份", "g-legal_retention": "法定留存义务",
  },
  en: {
    skip: "Skip to main content", title: "Staff console", logout: "Log out", login: "Staff login",
    "login-intro": "Insert your staff UKEY and enter its label and PIN (two factors: holding the UKEY and knowing the PIN).",
    "token-label": "UKEY label", "pin-label": "PIN", "login-button": "Log in",
    devices: "Devices", tokens: "UKEYs present", serial: "Serial", label: "Label", initialized: "Initialised",
    "pin-state": "PIN state", "no-tokens": "No UKEY found.", refresh: "Refresh",
    batch: "Batch UKEY issuance",
    "batch-intro": "Initialise every blank UKEY present, set a random initial PIN and generate a key pair on each, all at once.",
    "label-prefix": "Label prefix", algorithm: "Algorithm", "batch-start": "Start batch issuance",
    "pins-warning": "These PINs are shown this once only: hand each initial PIN to its holder now (or seal it in a PIN envelope) and keep the SO PINs at the branch. They cannot be shown again.",
    "initial-pin": "Initial PIN", "pins-hide": "Noted, hide the PINs",
    "so-pin": "SO PIN (to unblock)",
    sync: "Sync to headquarters", rights: "Personal-information rights requests", request: "Request", kind: "Kind",
    state: "State", due: "Due", actions: "Actions", "no-rights": "No open requests.", audit: "Audit log",
    seq: "No.", time: "Time", actor: "Actor", action: "Action", object: "Object",
    reveal: "Show a clear value (audited)",
    "reveal-intro": "Show one personal value in clear only when truly needed. Each reveal is written to the audit log with who you are and why.",
    subject: "Record", fields: "Values (masked)", "no-subjects": "This kiosk holds no personal data.", item: "Item",
    reason: "Reason (required)", "reveal-button": "Show clear value",
    "logged-in": "Logged in: {who}", "logged-out": "Logged out.",
    "idcard-dev": "ID-card reader", "fingerprint-dev": "Fingerprint sensor", "camera-dev": "Camera", "ukey-provider": "UKEY access",
    simulated: "simulated", serialdev: "serial device", synthetic: "synthetic frames (demo)", fixture: "image files", v4l2: "V4L2 camera",
    yes: "yes", no: "no",
    "pin-ok": "ok", "pin-count_low": "wrong PIN entered before", "pin-final_try": "final try", "pin-locked": "locked", "pin-not_initialized": "not set", "pin-to_be_changed": "to be changed",
    backlog: "Records waiting", "in-flight": "Batch being sent", attempts: "Attempts", "last-error": "Last error",
    "last-contact": "Last contact with headquarters", never: "never", none: "none",
    "batch-running": "Issuing {n} UKEYs…", "batch-done": "Batch issuance finished: {ok} done, {failed} failed.",
    "batch-none": "No blank UKEY to issue.",
    "tok-queued": "queued", "tok-initialising": "initialising", "tok-setting_pin": "setting PIN", "tok-generating_key": "generating key",
    "tok-done": "done", "tok-failed": "failed",
    complete: "Complete", refuse: "Refuse", "refuse-ground": "Ground for refusal",
    "rights-done": "Request {id} is now: {state}.",
    "kind-access": "access", "kind-copy": "copy", "kind-correction": "correction", "kind-deletion": "deletion",
    "kind-consent_withdrawal": "consent withdrawal", "kind-account_cancellation": "account cancellation",
    "kind-automated_decision": "automated decision", "kind-posthumous": "next of kin",
    "st-received": "received", "st-verified": "identity verified", "st-done": "completed", "st-refused": "refused", "st-forwarded": "forwarded to HQ",
    "audit-ok": "Audit log intact: {entries} entries, {checkpoints} signed checkpoints, verified.",
    "audit-bad": "Audit log verification FAILED: {problem}",
    "actor-system": "system", "actor-applicant": "applicant session", "actor-staff": "staff",
    "obj-person": "person (by keyed digest)",
    "reveal-shown": "Clear value (hidden in {s} s, audited):",
    "need-reason": "Say why you need the clear value (at least 4 characters).",
    "ukey-pin": "UKEY PIN", "ukey-pin-intro": "When a holder's PIN is locked, unblock it with the UKEY's SO PIN (kept at the branch) and set a new PIN; or change the PIN after the holder enters the current one. PINs are never logged.",
    "ukey-pin-mode": "Action", "ukey-unblock": "Unblock with the SO PIN", "ukey-change": "Change the PIN (current PIN needed)",
    "so-pin-input": "SO PIN", "old-pin": "Current PIN", "new-pin": "New PIN (6–16 digits)", "ukey-pin-submit": "OK",
    "ukey-unblocked": "UKEY {serial} is unblocked; the new PIN is in force.", "ukey-pin-changed": "The PIN of UKEY {serial} is changed.",
    "so-pin-wrong": "Wrong SO PIN. {n} tries left.", "ukey-pin-none": "No UKEY to act on.",
    offline: "The service cannot be reached.", expired: "Your login expired. Please log in again.",
    "g-national_security": "national security", "g-public_safety": "public safety", "g-criminal_investigation": "criminal investigation",
    "g-abuse_of_rights": "abuse of rights", "g-serious_harm_to_others": "serious harm to others", "g-trade_secret": "trade secret",
    "g-identity_not_verified": "identity not verified", "g-legal_retention": "legal retention duty",
  },
};
// The default catalog's refusal grounds (config/catalog/default.toml [rights]);
// the daemon checks the ground, so a catalog with others answers unknown_ground.
const GROUNDS = ["identity_not_verified", "legal_retention", "abuse_of_rights", "serious_harm_to_others",
  "trade_secret", "national_security", "public_safety", "criminal_investigation"];
const REVEAL_SHOWN_SECS = 30;

const st = { lang: "zh", token: null, who: null, status: null, devices: null, audit: null, subjects: [], batch: null, pins: [], abort: null, algorithmChosen: false };
const t = translator(TEXT, () => st.lang);
const fmtTime = (ms) => (ms == null ? t("never") : new Date(ms).toLocaleString(st.lang === "zh" ? "zh-CN" : "en-GB"));

// ------------------------------------------------------------------ API
async function api(method, path, body) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (st.token) headers.Authorization = "Bearer " + st.token;
  try {
    const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store" });
    const text = await r.text();
    let json = null;
    try { json = text ? JSON.parse(text) : null; } catch { json = null; }
    if (r.status === 401 && st.token && path !== "/v1/staff/login") forget("expired");
    return { status: r.status, body: json };
  } catch {
    return { status: 0, body: null };
  }
}
const message = (r) => (r.status === 0 ? t("offline") : (r.body && r.body.error && r.body.error.message) || String(r.status));

// ------------------------------------------------------------------ screen
function setNotice(text) {
  const n = $("notice");
  n.textContent = text || "";
  n.hidden = !text;
}
function applyLang() {
  document.documentElement.lang = st.lang === "zh" ? "zh-CN" : "en";
  document.title = t("title");
  for (const e of document.querySelectorAll("[data-i18n]")) e.textContent = t(e.dataset.i18n);
  const b = $("lang");
  b.textContent = st.lang === "zh" ? "English" : "中文";
  b.lang = st.lang === "zh" ? "en" : "zh-CN";
  renderAll();
}
function renderAll() {
  $("who").textContent = st.who ? t("logged-in", { who: st.who }) : "";
  renderDevices();
  renderSync();
  renderRights();
  renderAudit();
  renderSubjects();
  renderBatch();
}
function fillTable(id, rows) {
  const body = $(id).querySelector("tbody");
  body.textContent = "";
  for (const cells of rows) body.append(el("tr", {}, ...cells.map((c) => (c instanceof Node ? el("td", {}, c) : el("td", {}, String(c))))));
}
function fillGrid(id, pairs) {
  const dl = $(id);
  dl.textContent = "";
  for (const [k, v] of pairs) dl.append(el("div", { className: "row" }, el("dt", {}, k), el("dd", {}, v)));
}

// ------------------------------------------------------------------ login
$("login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const pinInput = $("login-pin");
  const body = { token: $("login-token").value.trim(), pin: pinInput.value };
  pinInput.value = ""; // the PIN stays nowhere on the page
  const r = await api("POST", "/v1/staff/login", body);
  if (r.status !== 200) return setNotice(message(r));
  st.token = r.body.staff_token;
  st.who = r.body.staff_id;
  setNotice(null);
  $("login").hidden = true;
  $("console").hidden = false;
  $("logout").hidden = false;
  $("who").hidden = false;
  await refresh();
  $("h-devices").focus();
});
$("logout").addEventListener("click", async () => {
  await api("POST", "/v1/staff/logout");
  forget("logged-out");
});
/** Forget the login and everything shown. */
function forget(reason) {
  if (st.abort) st.abort.abort();
  Object.assign(st, { token: null, who: null, status: null, devices: null, audit: null, subjects: [], batch: null, pins: [], abort: null, algorithmChosen: false });
  hideRevealed();
  $("console").hidden = true;
  $("logout").hidden = true;
  $("who").hidden = true;
  $("login").hidden = false;
  $("login-token").value = "";
  renderAll();
  setNotice(t(reason));
  $("h-login").focus();
}

// ------------------------------------------------------------------ refresh
async function refresh() {
  const [status, devices, audit, subjects] = await Promise.all([
    api("GET", "/v1/staff/status"), api("GET", "/v1/staff/devices"), api("GET", "/v1/staff/audit?limit=50"), api("GET", "/v1/staff/subjects"),
  ]);
  if (!st.token) return;
  st.status = status.status === 200 ? status.body : null;
  st.devices = devices.status === 200 ? devices.body : null;
  st.audit = audit.status === 200 ? audit.body : null;
  st.subjects = subjects.status === 200 ? subjects.body.subjects : [];
  const failed = [status, devices, audit, subjects].find((r) => r.status !== 200);
  setNotice(failed ? message(failed) : null);
  renderAll();
}
$("refresh").addEventListener("click", refresh);

// ------------------------------------------------------------------ devices
function renderDevices() {
  const d = st.devices;
  if (!d) { fillGrid("device-list", []); fillTable("token-table", []); $("tokens-empty").hidden = true; return; }
  const mode = (m) => t(m === "serial" ? "serialdev" : m);
  fillGrid("device-list", [
    [t("idcard-dev"), mode(d.idcard)], [t("fingerprint-dev"), mode(d.fingerprint)],
    [t("camera-dev"), mode(d.camera)], [t("ukey-provider"), d.tokens_error ? `${d.ukey_provider} — ${d.tokens_error}` : d.ukey_provider],
  ]);
  fillTable("token-table", d.tokens.map((k) => [k.serial, k.label, t(k.initialized ? "yes" : "no"), t(`pin-${k.pin_state}`)]));
  // The key type this kiosk is configured for, until staff choose another for a batch.
  if (d.ukey_algorithm && !st.algorithmChosen) $("batch-algorithm").value = d.ukey_algorithm;
  $("tokens-empty").hidden = d.tokens.length > 0;
  renderUkeyPin();
}

// ------------------------------------------------------------------ UKEY PIN (unblock, change)
function renderUkeyPin() {
  const d = st.devices;
  const select = $("ukey-pin-serial");
  const chosen = select.value;
  const tokens = d ? d.tokens.filter((k) => k.initialized) : [];
  select.textContent = "";
  for (const k of tokens) select.append(el("option", { value: k.serial }, `${k.serial} (${k.label}, ${t(`pin-${k.pin_state}`)})`));
  if (tokens.some((k) => k.serial === chosen)) select.value = chosen;
  const unblock = $("ukey-pin-mode").value === "unblock";
  $("ukey-pin-old-label").textContent = t(unblock ? "so-pin-input" : "old-pin");
  $("ukey-pin-submit").disabled = tokens.length === 0;
  if (tokens.length === 0) $("ukey-pin-state").textContent = t("ukey-pin-none");
}
$("ukey-pin-mode").addEventListener("change", renderUkeyPin);
$("ukey-pin-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const serial = $("ukey-pin-serial").value;
  const unblock = $("ukey-pin-mode").value === "unblock";
  const old = $("ukey-pin-old").value;
  const next = $("ukey-pin-new").value;
  // PINs stay in the form only until they are sent.
  $("ukey-pin-old").value = "";
  $("ukey-pin-new").value = "";
  const r = unblock
    ? await api("POST", "/v1/staff/ukeys/unblock", { serial, so_pin: old, new_pin: next })
    : await api("POST", "/v1/staff/ukeys/pin", { serial, pin: old, new_pin: next });
  if (r.status === 200) {
    setNotice(null);
    $("ukey-pin-state").textContent = t(unblock ? "ukey-unblocked" : "ukey-pin-changed", { serial });
    await refresh();
    return;
  }
  const code = r.body && r.body.error && r.body.error.code;
  const left = r.body && r.body.error && r.body.error.details && r.body.error.details.retries_left;
  setNotice(code === "so_pin_incorrect" && left != null ? t("so-pin-wrong", { n: left }) : message(r));
});

// ------------------------------------------------------------------ batch
$("batch-algorithm").addEventListener("change", () => { st.algorithmChosen = true; });
$("batch-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const r = await api("POST", "/v1/staff/batches", {
    serials: null, algorithm: $("batch-algorithm").value, label_prefix: $("batch-prefix").value.trim() || "UKEY", pin_mode: "random",
  });
  if (r.status !== 202) return setNotice(message(r));
  setNotice(null);
  st.batch = { batch_id: r.body.batch_id, state: "running", tokens: r.body.tokens.map((x) => ({ ...x })) };
  st.pins = [];
  renderBatch();
  followBatch(st.batch.batch_id);
});
function updateToken(tok) {
  if (!st.batch) return;
  const i = st.batch.tokens.findIndex((x) => x.serial === tok.serial);
  const { initial_pin: _pin, initial_so_pin: _soPin, ...shown } = tok; // PINs are kept apart, shown once
  if (i < 0) st.batch.tokens.push(shown); else st.batch.tokens[i] = { ...st.batch.tokens[i], ...shown };
}
async function followBatch(id) {
  const ctl = new AbortController();
  st.abort = ctl;
  try {
    await readEvents(`/v1/staff/batches/${encodeURIComponent(id)}/events`, st.token, (name, data) => {
      if (!st.batch || st.batch.batch_id !== id) return false;
      if (name === "token") { updateToken(data); renderBatch(); }
      if (name === "done") return false;
      return true;
    }, ctl.signal);
  } catch {
    if (ctl.signal.aborted) return;
    // No stream (or it broke): poll the batch until it is done.
    for (;;) {
      const r = await api("GET", `/v1/staff/batches/${encodeURIComponent(id)}`);
      if (!st.batch || st.batch.batch_id !== id || r.status !== 200) break;
      for (const tok of r.body.tokens) updateToken(tok);
      renderBatch();
      if (r.body.state !== "running") break;
      await new Promise((res) => setTimeout(res, 500));
    }
  }
  if (!st.batch || st.batch.batch_id !== id) return;
  // The final answer carries each token's initial PIN, this once.
  const r = await api("GET", `/v1/staff/batches/${encodeURIComponent(id)}`);
  if (r.status === 200) {
    st.batch.state = r.body.state;
    for (const tok of r.body.tokens) updateToken(tok);
    // The holder's initial PIN and the token's new SO PIN (kept by the branch to unblock it;
    // also given for a token that failed after its SO PIN was changed, so it can be recovered).
    st.pins = r.body.tokens.filter((x) => x.initial_pin || x.initial_so_pin).map((x) => [x.serial, x.initial_pin, x.initial_so_pin]);
  } else {
    st.batch.state = "done";
  }
  renderBatch();
  refresh();
}
function renderBatch() {
  const ul = $("batch-tokens"), b = st.batch;
  ul.textContent = "";
  $("batch-state").textContent = "";
  $("batch-start").disabled = !!(b && b.state === "running");
  if (b) {
    const ok = b.tokens.filter((x) => x.state === "done").length, failed = b.tokens.filter((x) => x.state === "failed").length;
    $("batch-state").textContent = b.tokens.length === 0 ? t("batch-none")
      : b.state === "running" ? t("batch-running", { n: b.tokens.length }) : t("batch-done", { ok, failed });
    for (const tok of b.tokens) {
      const name = `${tok.label || tok.serial}`;
      const bar = el("progress", { max: 100, value: tok.percent ?? 0 });
      bar.setAttribute("aria-label", name);
      bar.dataset.serial = tok.serial;
      const stateText = t(`tok-${tok.state}`) + (tok.error ? ` — ${tok.error.message || tok.error.code}` : "");
      const li = el("li", { className: `tok ${tok.state}` }, el("span", { className: "tok-name" }, name), bar,
        el("span", { className: "tok-state" }, `${tok.percent ?? 0}% · ${stateText}`));
      li.dataset.serial = tok.serial;
      ul.append(li);
    }
  }
  $("pins").hidden = st.pins.length === 0;
  fillTable("pin-table", st.pins.map(([serial, pin, soPin]) => [serial, pin ? el("span", { className: "pin" }, pin) : "—",
    soPin ? el("span", { className: "pin so-pin" }, soPin) : "—"]));
}
$("pins-hide").addEventListener("click", () => { st.pins = []; renderBatch(); });

// ------------------------------------------------------------------ sync
function renderSync() {
  const s = st.status && st.status.sync;
  if (!s) return fillGrid("sync-list", []);
  fillGrid("sync-list", [
    [t("backlog"), String(s.backlog)], [t("last-contact"), fmtTime(s.last_contact_ms)],
    [t("in-flight"), s.in_flight_batch == null ? t("none") : `#${s.in_flight_batch}`], [t("attempts"), String(s.attempts)],
    [t("last-error"), s.last_error || t("none")],
  ]);
}

// ------------------------------------------------------------------ rights
function renderRights() {
  const list = (st.status && st.status.rights_requests) || [];
  fillTable("rights-table", list.map((q) => {
    const cell = el("div", { className: "row-actions" });
    if (q.state !== "done" && q.state !== "refused") {
      const done = el("button", { type: "button" }, t("complete"));
      done.addEventListener("click", () => decide(q.id, "complete"));
      const sel = el("select", {}, ...GROUNDS.map((g) => el("option", { value: g }, t(`g-${g}`))));
      sel.setAttribute("aria-label", `${t("refuse-ground")} ${q.id}`);
      const no = el("button", { type: "button", className: "danger" }, t("refuse"));
      done.setAttribute("aria-label", `${t("complete")} ${q.id}`);
      no.setAttribute("aria-label", `${t("refuse")} ${q.id}`);
      no.addEventListener("click", () => decide(q.id, "refuse", { ground: sel.value }));
      cell.append(done, sel, no);
    }
    return [q.id, t(`kind-${q.kind}`), t(`st-${q.state}`), q.due, cell];
  }));
  $("rights-empty").hidden = list.length > 0;
}
async function decide(id, action, body) {
  const r = await api("POST", `/v1/staff/rights-requests/${encodeURIComponent(id)}/${action}`, body);
  if (r.status !== 200) return setNotice(message(r));
  await refresh();
  setNotice(t("rights-done", { id, state: t(`st-${r.body.state}`) }));
}

// ------------------------------------------------------------------ audit
function renderAudit() {
  const a = st.audit, p = $("audit-status");
  p.textContent = "";
  p.className = "audit-status";
  if (!a) return fillTable("audit-table", []);
  const v = a.verification;
  p.textContent = v.intact ? t("audit-ok", v) : t("audit-bad", { problem: v.problem });
  p.classList.add(v.intact ? "ok" : "bad");
  fillTable("audit-table", a.entries.map((x) => [x.seq, fmtTime(x.at_ms), t(`actor-${x.actor_kind}`), x.action,
    x.object_kind === "person" ? t("obj-person") : x.object_kind]));
}

// ------------------------------------------------------------------ reveal
function renderSubjects() {
  const subs = st.subjects || [];
  fillTable("subject-table", subs.map((s) => [s.subject_id, Object.entries(s.fields).map(([k, v]) => `${k}: ${v}`).join("; ")]));
  $("subjects-empty").hidden = subs.length > 0 || !st.token;
  $("reveal-form").hidden = subs.length === 0;
  const subjSel = $("reveal-subject"), keep = subjSel.value;
  subjSel.textContent = "";
  for (const s of subs) subjSel.append(el("option", { value: s.subject_id }, s.subject_id));
  if (subs.some((s) => s.subject_id === keep)) subjSel.value = keep;
  renderRevealItems();
}
function renderRevealItems() {
  const s = (st.subjects || []).find((x) => x.subject_id === $("reveal-subject").value);
  const sel = $("reveal-item"), keep = sel.value;
  sel.textContent = "";
  for (const k of s ? Object.keys(s.fields) : []) sel.append(el("option", { value: k }, k));
  if (s && keep in s.fields) sel.value = keep;
}
$("reveal-subject").addEventListener("change", renderRevealItems);
let revealTimer = null;
function hideRevealed() {
  clearTimeout(revealTimer);
  $("revealed").textContent = "";
  $("revealed").hidden = true;
}
$("reveal-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  hideRevealed();
  const reason = $("reveal-reason").value.trim();
  if (reason.length < 4) return setNotice(t("need-reason"));
  const r = await api("POST", "/v1/staff/reveal", { subject_id: $("reveal-subject").value, item: $("reveal-item").value, reason });
  if (r.status !== 200) return setNotice(message(r));
  setNotice(null);
  $("reveal-reason").value = "";
  const out = $("revealed");
  out.append(t("reveal-shown", { s: REVEAL_SHOWN_SECS }), " ", el("strong", {}, r.body.value));
  out.hidden = false;
  revealTimer = setTimeout(hideRevealed, REVEAL_SHOWN_SECS * 1000);
  const a = await api("GET", "/v1/staff/audit?limit=50");
  if (a.status === 200) { st.audit = a.body; renderAudit(); }
});

// ------------------------------------------------------------------ start
$("lang").addEventListener("click", () => { st.lang = st.lang === "zh" ? "en" : "zh"; applyLang(); });
applyLang();
