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
    "step-consents": "同意", "step-face": "人脸", "step-fingerprint": "指纹", "step-verification": "核验",
    "step-ukey": "UKEY", "step-sign": "签署", "step-lifecycle": "证书操作", "step-rights": "权利请求", "step-done": "结果",
    guardian: "监护人同意",
    "guardian-intro": "申请人未满14周岁。请监护人取下申请人的身份证，将监护人本人的身份证放在读卡区，然后点击“监护人已放好身份证”。监护人的信息仅用于确认其同意。",
    "guardian-read": "监护人已放好身份证", "demo-guardian": "演示：放置监护人身份证",
    "guardian-reading": "正在读取监护人身份证……", "guardian-ok": "监护人 {name} 已同意。请将申请人的身份证重新放在读卡区。",
    "guardian-not-adult": "放置的身份证不是成年人的，请由监护人放置本人身份证。",
    face: "请看摄像头", "face-purpose": "拍摄您的人脸图像，仅用于与身份证照片比对以核验身份；图像只保存在本机内存中，办理结束即删除。",
    preview: "摄像头预览（占位画面）", "preview-note": "请将面部置于框内，保持不动", "face-capture": "拍照", next: "下一步",
    "face-taking": "正在拍照，请保持不动……", "face-ok": "拍照成功。", "face-bad": "未拍到清晰的人脸，请正对摄像头后重试。",
    "face-error": "摄像头暂时无法使用。您可以点击“下一步”，选择不使用人脸的核验方式。",
    "q-score": "质量评分", "q-sharpness": "清晰度", "q-mean_luma": "亮度", "q-centre_offset": "偏离中心",
    fingerprint: "请将手指放在指纹仪上",
    "fingerprint-purpose": "在指纹仪上比对您的指纹与身份证中的指纹，以核验身份。指纹不会离开指纹仪和本机内存。",
    "retry-finger": "再试一次", "demo-finger": "演示：放置手指",
    "finger-waiting": "请将手指平放在指纹仪上……", "finger-comparing": "正在比对指纹，请勿移动……",
    "finger-matched": "指纹比对通过。", "finger-nomatch": "指纹与身份证不一致，请换一个手指再试，或选择其他核验方式。",
    "finger-unavailable": "指纹比对暂时不可用，请选择其他核验方式。", "finger-error": "指纹仪暂时无法使用，请重试或联系工作人员。",
    verification: "选择身份核验方式", "verification-intro": "请选择一种方式核验您的身份。您可以选择不使用人脸的方式。",
    "biometric-tag": "（使用人脸）", "nonbiometric-tag": "（不使用人脸）", verify: "核验", "other-method": "选择其他方式",
    "method-sends": "将提供给{recipient}的信息：{fields}", "asked-why": "为什么需要：{purpose}",
    // Who receives a method's fields (the catalog's `recipient`).
    "rcp-carrier": "运营商", "rcp-bank": "银行", "rcp-photo-comparison-service": "人像比对服务",
    "verify-sending": "正在核验……", "verify-failed": "核验未通过，请检查输入或选择其他方式。",
    "verify-unavailable": "核验服务暂时不可用，请重试或选择其他方式。", "verify-consent": "此方式需要您的单独同意，请选择其他方式。",
    ukey: "请插入 UKEY", "ukey-for-issue": "证书将写入您的 UKEY，密钥在 UKEY 内生成，不会离开 UKEY。",
    "ukey-for-sign": "请插入存有您证书的 UKEY。", "ukey-for-lifecycle": "请插入存有要操作的证书的 UKEY。",
    "ukey-waiting": "等待插入 UKEY……", "ukey-present": "已检测到 UKEY。", "demo-ukey": "演示：插入 UKEY",
    "ukey-locked": "这支 UKEY 的 PIN 已锁定，请联系工作人员解锁。",
    pin: "请输入 UKEY 的 PIN", keypad: "数字键盘", "pin-entered": "已输入 {n} 位", del: "删除", ok: "确定",
    "pin-for-issue": "输入 PIN 后，将在 UKEY 中生成密钥并写入证书。", "pin-for-sign": "输入 PIN 后签署所选文件。",
    "pin-for-lifecycle": "输入 PIN 后执行：{action}。",
    "pin-wrong": "PIN 错误，还可以尝试 {n} 次。", "pin-wrong-unknown": "PIN 错误，请重新输入。",
    "pin-final": "注意：再输错一次 PIN 将被锁定。", "pin-locked": "PIN 已锁定，无法继续。请联系工作人员解锁 UKEY。",
    "pin-short": "PIN 至少 6 位。", "ukey-removed": "UKEY 被拔出，请重新插入。",
    "progress-bar": "办理进度", "work-busy": "正在办理，请勿拔出 UKEY……",
    // Phases of the issuance as the events stream names them (daemon/src/api/ukey.rs).
    "ph-generating_key": "正在 UKEY 中生成密钥……", "ph-requesting_certificate": "正在向 CA 申请证书……",
    "ph-writing_certificate": "正在写入证书……", "ph-signing_form": "正在签署申请表……", "ph-done": "完成。",
    "ca-unavailable": "证书服务暂时不可用，请稍后重试或联系工作人员。",
    sign: "签署文件", "sign-intro": "请选择要签署的文件。签名由您 UKEY 中的私钥生成，私钥不会离开 UKEY。",
    "doc-form": "示例：业务申请表", "doc-contract": "示例：服务协议",
    lifecycle: "选择证书操作", "revoke-reason": "吊销原因",
    "a-renew": "更新证书", "a-rekey": "更新密钥", "a-revoke": "吊销证书", "a-suspend": "挂起证书", "a-resume": "解除挂起",
    "r-unspecified": "未说明", "r-keyCompromise": "密钥泄露或 UKEY 丢失", "r-affiliationChanged": "信息变更", "r-cessationOfOperation": "不再使用",
    rights: "个人信息权利请求", "rights-intro": "您的身份已核验。请选择要提出的请求，我们将在法定期限内处理并答复。",
    "k-access": "查阅我的个人信息", "k-copy": "获取个人信息副本", "k-correction": "更正或补充", "k-deletion": "删除我的个人信息",
    "k-consent_withdrawal": "撤回同意", "k-account_cancellation": "注销账户",
    "rights-filed": "您的{kind}请求已受理，编号 {id}。我们将在 {due} 前答复。",
    "issued": "证书已写入您的 UKEY。", "signed": "文件已签署，签名验证通过。", "lifecycle-done": "操作已完成：{action}。",
    "o-serial": "证书序列号", "o-subject": "证书主体", "o-not_after": "有效期至", "o-algorithm": "算法",
    "o-form": "申请表签名", "o-verified": "已验证", "o-status": "证书状态", "o-request": "请求编号", "o-due": "答复期限",
    "st-good": "有效", "st-held": "已挂起", "st-revoked": "已吊销",
    "card-summary": "身份证信息",
    // Coded values the card and the daemon give in English.
    "v-male": "男", "v-female": "女",
    "step-error": "这一步暂时无法完成：{msg}",
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
    "step-consents": "Consent", "step-face": "Face", "step-fingerprint": "Fingerprint", "step-verification": "Verification",
    "step-ukey": "UKEY", "step-sign": "Sign", "step-lifecycle": "Certificate", "step-rights": "Request", "step-done": "Result",
    guardian: "Guardian's consent",
    "guardian-intro": "The applicant is under 14. The guardian: take the applicant's card off the reader, place your own ID card on it, then press \"The guardian's card is on the reader\". Your data is used only to confirm your consent.",
    "guardian-read": "The guardian's card is on the reader", "demo-guardian": "Demo: place a guardian's card",
    "guardian-reading": "Reading the guardian's card…", "guardian-ok": "Guardian {name} has consented. Place the applicant's ID card on the reader again.",
    "guardian-not-adult": "That card is not an adult's. The guardian must place their own card.",
    face: "Look at the camera", "face-purpose": "A picture of your face is taken only to compare it with your ID-card photo. It stays in this kiosk's memory and is deleted when you finish.",
    preview: "Camera preview (placeholder)", "preview-note": "Keep your face inside the frame and hold still", "face-capture": "Take picture", next: "Next",
    "face-taking": "Taking the picture, hold still…", "face-ok": "Picture taken.", "face-bad": "No clear face found. Face the camera and try again.",
    "face-error": "The camera is not available. Press \"Next\" and choose a way of verifying that uses no face.",
    "q-score": "Quality score", "q-sharpness": "Sharpness", "q-mean_luma": "Brightness", "q-centre_offset": "Off centre",
    fingerprint: "Place your finger on the sensor",
    "fingerprint-purpose": "Your fingerprint is compared on the sensor with the one on your ID card to verify your identity. It never leaves the sensor and this kiosk's memory.",
    "retry-finger": "Try again", "demo-finger": "Demo: place a finger",
    "finger-waiting": "Place your finger flat on the sensor…", "finger-comparing": "Comparing, keep your finger still…",
    "finger-matched": "Fingerprint matched.", "finger-nomatch": "The fingerprint does not match the card. Try another finger or choose another way of verifying.",
    "finger-unavailable": "Fingerprint comparison is not available. Please choose another way of verifying.", "finger-error": "The fingerprint sensor is not available. Please try again or ask the staff.",
    verification: "Choose how to verify your identity", "verification-intro": "Choose one way of verifying your identity. You can choose one that uses no face.",
    "biometric-tag": " (uses your face)", "nonbiometric-tag": " (no face)", verify: "Verify", "other-method": "Choose another way",
    "method-sends": "Sent to {recipient}: {fields}", "asked-why": "Why we ask: {purpose}",
    "rcp-carrier": "the mobile carrier", "rcp-bank": "the bank", "rcp-photo-comparison-service": "the photo comparison service",
    "verify-sending": "Verifying…", "verify-failed": "Verification failed. Check what you entered or choose another way.",
    "verify-unavailable": "The verification service is not available. Try again or choose another way.", "verify-consent": "This way needs your separate consent. Please choose another way.",
    ukey: "Insert your UKEY", "ukey-for-issue": "Your certificate is written to your UKEY. The key is generated inside the UKEY and never leaves it.",
    "ukey-for-sign": "Insert the UKEY that holds your certificate.", "ukey-for-lifecycle": "Insert the UKEY that holds the certificate.",
    "ukey-waiting": "Waiting for your UKEY…", "ukey-present": "UKEY found.", "demo-ukey": "Demo: insert a UKEY",
    "ukey-locked": "This UKEY's PIN is locked. Please ask the staff to unblock it.",
    pin: "Enter your UKEY's PIN", keypad: "Keypad", "pin-entered": "{n} digits entered", del: "Delete", ok: "OK",
    "pin-for-issue": "After the PIN, a key is generated inside your UKEY and the certificate is written to it.", "pin-for-sign": "After the PIN, the chosen document is signed.",
    "pin-for-lifecycle": "After the PIN: {action}.",
    "pin-wrong": "Wrong PIN. {n} tries left.", "pin-wrong-unknown": "Wrong PIN. Please enter it again.",
    "pin-final": "Careful: one more wrong PIN locks it.", "pin-locked": "The PIN is locked. Please ask the staff to unblock the UKEY.",
    "pin-short": "The PIN has at least 6 digits.", "ukey-removed": "The UKEY was removed. Please insert it again.",
    "progress-bar": "Progress", "work-busy": "Working. Do not remove the UKEY…",
    "ph-generating_key": "Generating the key inside the UKEY…", "ph-requesting_certificate": "Asking the CA for the certificate…",
    "ph-writing_certificate": "Writing the certificate…", "ph-signing_form": "Signing the application form…", "ph-done": "Done.",
    "ca-unavailable": "The certificate service is not available. Please try again later or ask the staff.",
    sign: "Sign a document", "sign-intro": "Choose the document to sign. The signature is made by the private key inside your UKEY, which never leaves it.",
    "doc-form": "Sample: application form", "doc-contract": "Sample: service agreement",
    lifecycle: "Choose what to do with the certificate", "revoke-reason": "Reason for revoking",
    "a-renew": "Renew", "a-rekey": "New key", "a-revoke": "Revoke", "a-suspend": "Suspend", "a-resume": "Resume",
    "r-unspecified": "Not given", "r-keyCompromise": "Key compromised or UKEY lost", "r-affiliationChanged": "Details changed", "r-cessationOfOperation": "No longer needed",
    rights: "Your personal-information rights", "rights-intro": "Your identity is verified. Choose your request; we answer within the legal deadline.",
    "k-access": "See my personal information", "k-copy": "Get a copy", "k-correction": "Correct or complete it", "k-deletion": "Delete it",
    "k-consent_withdrawal": "Withdraw my consent", "k-account_cancellation": "Close my account",
    "rights-filed": "Your request ({kind}) is received, number {id}. We will answer by {due}.",
    "issued": "Your certificate is on your UKEY.", "signed": "The document is signed and the signature verified.", "lifecycle-done": "Done: {action}.",
    "o-serial": "Certificate serial", "o-subject": "Subject", "o-not_after": "Valid until", "o-algorithm": "Algorithm",
    "o-form": "Application form signature", "o-verified": "verified", "o-status": "Certificate status", "o-request": "Request number", "o-due": "Answer due",
    "st-good": "valid", "st-held": "suspended", "st-revoked": "revoked",
    "card-summary": "ID card",
    "v-male": "male", "v-female": "female",
    "step-error": "This step cannot be completed now: {msg}",
    offline: "The service cannot be reached. Please try again later or ask the staff.",
  },
};

// Services offered on the first screen.
const SERVICES = [
  ["cert_application", "证书申请 / Apply for a certificate"],
  ["certificate_use", "签署文件 / Sign a document"],
  ["lifecycle", "证书更新、吊销、挂起 / Renew, revoke or suspend a certificate"],
  ["rights_request", "个人信息权利请求 / Your personal-information rights"],
];
// The daemon says which steps a service goes through (`workflow.steps`) and
// which is next; this maps its step names to the screen's sections. Before the
// daemon has answered, this plan stands in for the progress bar.
const SECTION_OF = { consents: "consent", idcard: "idcard", face: "face", fingerprint: "fingerprint", verification: "verification",
  ukey: "ukey", sign: "ukey", lifecycle: "ukey", rights: "rights", done: "result" };
const FALLBACK_PLAN = ["consents", "idcard", "done"];
// What each section does when shown (`enter`) and when the language changes (`render`).
const STEPS = {
  consent: { enter: renderConsent, render: renderConsent },
  idcard: { enter: startCardReading, render: renderCardStatus },
  guardian: { enter: enterGuardian, render: renderGuardian },
  face: { enter: enterFace, render: renderFace },
  fingerprint: { enter: startFingerprint, render: renderFingerStatus },
  verification: { enter: enterVerification, render: renderVerification },
  ukey: { enter: startUkeyWait, render: renderUkey },
  sign: { enter: renderSign, render: renderSign },
  lifecycle: { enter: renderLifecycle, render: renderLifecycle },
  rights: { enter: renderRights, render: renderRights },
  pin: { enter: enterPin, render: renderPin },
  result: { enter: renderResult, render: renderResult },
};
// Where each section sits in the daemon's plan (for the progress bar).
function planStep(section) {
  if (section === "consent") return "consents";
  if (section === "guardian") return "idcard";
  if (section === "result") return st.outcome || !st.workflow ? "done" : "idcard";
  if (section === "ukey" || section === "sign" || section === "lifecycle" || section === "pin") return st.ukeyFor || "ukey";
  return section;
}
const DOCUMENTS = ["doc-form", "doc-contract"];
const LIFECYCLE_ACTIONS = ["renew", "rekey", "suspend", "resume", "revoke"];
const RIGHTS_KINDS = ["access", "copy", "correction", "deletion", "consent_withdrawal", "account_cancellation"];
const PIN_MIN = 6, PIN_MAX = 12;
// Order of ID-card fields on the result screen; others follow.
const FIELD_ORDER = ["name", "sex", "nation", "birth_date", "id_number", "address", "id_authority", "id_validity"];
const IDLE_WITHOUT_SESSION_MS = 120000;

// ------------------------------------------------------------------ state
const st = {
  lang: "zh",
  session: null, // {session_id, token, items, purpose, idle_timeout_secs, ...}
  flow: null, // the daemon's plan of the chosen service (workflow.steps)
  workflow: null, // the daemon's last workflow view {steps, completed, next:{step, asks}}
  ukeyFor: null, // what the UKEY is for: "ukey" (issuance), "sign" or "lifecycle"
  pin: [], // the digits typed on the keypad: script memory only, never the DOM
  pinState: null, // {state, retries_left} from the daemon
  pinMessage: null, // {key, params}
  work: null, // {phase, percent} of the step running
  outcome: null, // {key, params, rows: [[labelKey, value]]} shown on the result screen
  status: {}, // per-section status key (face, finger, ukey, guardian, verify)
  method: null, // the verification method chosen
  action: null, // lifecycle action chosen
  document: null, // document chosen to sign
  faceQuality: null,
  events: null, // AbortController of the session's event stream
  step: "service",
  consent: { purpose: false, items: new Set(), transfers: new Set() },
  card: null, // the masked answer of the ID-card read
  cardStatus: "waiting",
  notice: null, // {key, params} or {raw}
  epoch: 0, // bumped on every step change: stale async work checks it and stops
  inflight: null, // the request in flight, awaited before the session is deleted
  lastPing: 0,
};

const t = translator(TEXT, () => st.lang);
// Catalog labels are "中文 / English"; English ones start lower-case, which
// stays inside a sentence (`inline`) and is capitalised on its own.
function label(s, inline = false) {
  const [zh, en] = String(s).split(" / ");
  if (st.lang === "zh" || !en) return zh;
  return inline ? en : en.charAt(0).toUpperCase() + en.slice(1);
}
// A stated purpose is "中文 / English" where each half may quote bilingual
// catalog labels itself; the English half starts at " / used by" (the
// daemon's wording, daemon/src/workflow/plan.rs). Each half drops the other
// language's side of the labels it quotes.
function purposeText(s) {
  const cut = String(s).indexOf(" / used by ");
  if (cut < 0) return label(s, true);
  if (st.lang === "zh") return s.slice(0, cut).split(" / ").map((p, i) => (i === 0 ? p : p.replace(/^[^\u3000-\u9fff\uff00-\uffef]+/, ""))).join("");
  return s.slice(cut + 3).replace(/[\u3000-\u9fff\uff00-\uffef]+ \/ /g, "");
}
function itemLabel(item) {
  const it = st.session && st.session.items.find((i) => i.item === item);
  return it ? label(it.label, true) : item;
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
// Ask the daemon where the applicant is and show the next step's section
// (`summary`: show the masked card first, with a button to go on).
async function advance(summary = false) {
  const s = st.session, epoch = st.epoch;
  const r = await api("GET", `/v1/sessions/${s.session_id}`, undefined, s);
  if (st.session !== s || epoch !== st.epoch) return;
  if (sessionGone(r)) return end("expired");
  const wf = r.status === 200 && r.body ? r.body.workflow : null;
  if (!wf) { // a daemon without workflows: card then result
    st.flow = FALLBACK_PLAN;
    return show(st.step === "consent" ? "idcard" : "result");
  }
  st.workflow = wf;
  st.flow = wf.steps;
  if (summary) return show("result");
  const step = wf.next.step;
  if (step === "ukey" || step === "sign" || step === "lifecycle") st.ukeyFor = step;
  show(SECTION_OF[step] || "result");
}
function stepError(r) {
  setNotice(r.status === 0 ? { key: "offline" } : { key: "step-error", params: { msg: (r.body && r.body.error && r.body.error.message) || String(r.status) } });
}
function renderProgress() {
  const nav = $("progress-nav"), ol = $("progress");
  ol.textContent = "";
  nav.hidden = !st.flow || st.step === "service";
  if (nav.hidden) return;
  const current = st.flow.indexOf(planStep(st.step));
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
  st.flow = FALLBACK_PLAN;
  st.consent = { purpose: false, items: new Set(), transfers: new Set() };
  st.lastPing = Date.now();
  resetIdle();
  followEvents(st.session);
  show("consent");
  // The daemon's plan for the progress bar.
  const s = st.session;
  api("GET", `/v1/sessions/${s.session_id}`, undefined, s).then((v) => {
    if (st.session !== s || !v.body || !v.body.workflow) return;
    st.workflow = v.body.workflow;
    st.flow = v.body.workflow.steps;
    renderProgress();
  });
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
  advance();
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
// A reader error shown only when it happens this many times in a row.
const CARD_READ_ATTEMPTS = 3;
// Poll the reader until a card is read or the step is left (a card placed on
// the reader is noticed without a touch on the screen).
async function startCardReading() {
  st.cardStatus = null;
  setCardStatus("waiting");
  const epoch = st.epoch, s = st.session;
  let failures = 0; // reader errors in a row: one may be a glitch, three are shown
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
      return advance(true);
    }
    if (sessionGone(r)) return end("expired");
    if (code === "no_card" || code === "card_removed") {
      failures = 0;
      setCardStatus(code === "no_card" ? "waiting" : "removed");
    } else if (code === "guardian_required") return show("guardian");
    else if (r.status === 422) return setCardStatus("consent");
    else if ((failures += 1) >= CARD_READ_ATTEMPTS) return setCardStatus("error");
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

// ------------------------------------------------------------------ guardian
// A child under 14: the guardian consents and places their own card, then the
// child's card is read again.
function enterGuardian() { st.status.guardian = null; renderGuardian(); }
function renderGuardian() {
  const p = $("guardian-status"), g = st.status.guardian;
  p.textContent = g ? t(g.key, g.params) : "";
}
$("guardian-read").addEventListener("click", async () => {
  const s = st.session, epoch = st.epoch;
  if (!s) return;
  st.status.guardian = { key: "guardian-reading" };
  renderGuardian();
  // Pressing the button is the guardian's consent to the guardian items.
  let r = await api("POST", `/v1/sessions/${s.session_id}/consents`, { items: ["guardian_id_number"] });
  if (r.status === 200) r = await api("POST", `/v1/sessions/${s.session_id}/guardian`);
  if (epoch !== st.epoch || st.session !== s) return;
  if (sessionGone(r)) return end("expired");
  if (r.status !== 200) {
    st.status.guardian = errorCode(r) === "guardian_not_adult" ? { key: "guardian-not-adult" } : null;
    renderGuardian();
    if (!st.status.guardian) stepError(r);
    return;
  }
  setNotice(null);
  st.status.guardian = null;
  show("idcard");
  setNotice({ key: "guardian-ok", params: { name: r.body.guardian ? r.body.guardian.name : "" } });
});
$("demo-guardian").addEventListener("click", () => api("POST", "/v1/sim/idcard", { seed: 2 }, null));

// ------------------------------------------------------------------ face
function enterFace() { st.status.face = null; st.faceQuality = null; renderFace(); }
function renderFace() {
  const f = st.status.face;
  $("face-status").textContent = f ? t(f) : "";
  const dl = $("face-quality");
  dl.textContent = "";
  dl.hidden = !st.faceQuality;
  for (const [k, v] of Object.entries(st.faceQuality || {})) {
    dl.append(el("div", { className: "field" }, el("dt", {}, t(`q-${k}`)), el("dd", {}, typeof v === "number" ? v.toFixed(2) : String(v))));
  }
  $("face-capture").hidden = f === "face-ok";
  $("face-next").hidden = !(f === "face-ok" || f === "face-error");
}
$("face-capture").addEventListener("click", async () => {
  const s = st.session, epoch = st.epoch;
  st.status.face = "face-taking";
  renderFace();
  const r = await api("POST", `/v1/sessions/${s.session_id}/face`);
  if (epoch !== st.epoch || st.session !== s) return;
  if (sessionGone(r)) return end("expired");
  if (r.status === 200) { st.faceQuality = r.body.quality; st.status.face = "face-ok"; }
  else st.status.face = errorCode(r) === "no_acceptable_face" ? "face-bad" : "face-error";
  renderFace();
});
$("face-next").addEventListener("click", () => advance());
$("result-next").addEventListener("click", () => advance());

// ------------------------------------------------------------------ fingerprint
function renderFingerStatus() {
  const p = $("finger-status"), state = st.status.finger || "waiting";
  p.textContent = t(`finger-${state}`);
  p.dataset.state = state;
  $("finger-retry").hidden = !(state === "nomatch" || state === "error");
}
function setFinger(state) { if (st.status.finger !== state) { st.status.finger = state; renderFingerStatus(); } }
// Ask the sensor until a finger is compared or the step is left.
async function startFingerprint() {
  st.status.finger = null;
  setFinger("waiting");
  const epoch = st.epoch, s = st.session;
  while (epoch === st.epoch && st.session === s) {
    const req = api("POST", `/v1/sessions/${s.session_id}/fingerprint`);
    st.inflight = req;
    const r = await req;
    st.inflight = null;
    if (epoch !== st.epoch || st.session !== s) return;
    const code = errorCode(r);
    if (r.status === 200) { setFinger("matched"); resetIdle(); return advance(); }
    if (sessionGone(r)) return end("expired");
    if (code === "no_finger") setFinger("waiting");
    else if (code === "fingerprint_no_match") return setFinger("nomatch");
    else if (code === "matcher_unavailable" || code === "card_has_no_fingerprint") {
      // Offer the other methods: verification does not need the fingerprint.
      setNotice({ key: "finger-unavailable" });
      return show("verification");
    } else return setFinger("error");
    await pause(700);
  }
}
$("finger-retry").addEventListener("click", () => { st.epoch += 1; startFingerprint(); });
$("demo-finger").addEventListener("click", () => { setFinger("comparing"); api("POST", "/v1/sim/fingerprint", {}, null); });

// ------------------------------------------------------------------ verification
function enterVerification() { st.method = null; st.status.verify = null; renderVerification(); }
function methodsOffered() { return (st.session && st.session.methods) || []; }
function renderVerification() {
  const box = $("methods");
  box.textContent = "";
  // Biometric methods always come with the non-face ones beside them.
  for (const m of methodsOffered()) {
    const b = el("button", { type: "button", className: "method" }, label(m.label) + t(m.biometric ? "biometric-tag" : "nonbiometric-tag"));
    b.dataset.method = m.method;
    b.setAttribute("aria-pressed", String(st.method === m.method));
    b.addEventListener("click", () => { st.method = m.method; st.status.verify = null; renderVerification(); $("method-purpose").focus(); });
    box.append(b);
  }
  const form = $("method-form"), fields = $("method-fields"), m = methodsOffered().find((x) => x.method === st.method);
  form.hidden = !m;
  const typedBefore = {};
  for (const i of fields.querySelectorAll("input")) typedBefore[i.name] = i.value;
  fields.textContent = "";
  $("method-purpose").textContent = "";
  if (m) {
    const asks = ((st.workflow && st.workflow.next && st.workflow.next.asks) || []).filter((a) => !a.method || a.method === m.method);
    $("method-purpose").tabIndex = -1;
    $("method-purpose").textContent = t("method-sends", { recipient: TEXT.zh[`rcp-${m.recipient}`] ? t(`rcp-${m.recipient}`) : m.recipient, fields: m.fields.map(itemLabel).join(listSep()) });
    for (const a of asks) {
      const id = `ask-${a.item}`;
      const input = el("input", { id, name: a.item, type: "tel", inputMode: "numeric", autocomplete: "off", required: true, value: typedBefore[a.item] || "" });
      input.setAttribute("aria-describedby", `${id}-why`);
      fields.append(el("div", { className: "ask" }, el("label", { htmlFor: id }, label(a.label)), input,
        el("p", { id: `${id}-why`, className: "small purpose" }, t("asked-why", { purpose: purposeText(a.purpose) }))));
    }
  }
  const v = st.status.verify;
  $("verify-status").textContent = v ? t(v) : "";
}
$("method-back").addEventListener("click", () => { st.method = null; renderVerification(); });
$("method-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const s = st.session, epoch = st.epoch;
  const body = { method: st.method };
  for (const i of $("method-fields").querySelectorAll("input")) body[i.name] = i.value.replace(/\s+/g, "");
  // Typed numbers leave the screen as soon as they are sent.
  for (const i of $("method-fields").querySelectorAll("input")) i.value = "";
  st.status.verify = "verify-sending";
  renderVerification();
  const r = await api("POST", `/v1/sessions/${s.session_id}/verification`, body);
  if (epoch !== st.epoch || st.session !== s) return;
  if (sessionGone(r)) return end("expired");
  if (r.status === 200) { st.status.verify = null; setNotice(null); return advance(); }
  const code = errorCode(r);
  st.status.verify = code === "verification_failed" ? "verify-failed" : code === "verifier_unavailable" ? "verify-unavailable"
    : code === "consent_required" || code === "transfer_consent_required" ? "verify-consent" : null;
  renderVerification();
  if (!st.status.verify) stepError(r);
});

// ------------------------------------------------------------------ UKEY
function renderUkey() {
  $("h-ukey").textContent = t("ukey");
  $("ukey-purpose").textContent = t(`ukey-for-${st.ukeyFor === "ukey" || !st.ukeyFor ? "issue" : st.ukeyFor}`);
  const p = $("ukey-status"), state = st.status.ukey || "ukey-waiting";
  p.textContent = t(state);
  p.dataset.state = state === "ukey-locked" ? "error" : "waiting";
}
// Wait for a UKEY: the events stream says when one arrives; the status is
// also asked now and then in case an event was missed.
async function startUkeyWait() {
  st.status.ukey = null;
  renderUkey();
  const epoch = st.epoch, s = st.session;
  while (epoch === st.epoch && st.session === s) {
    const r = await api("GET", `/v1/sessions/${s.session_id}/ukey`);
    if (epoch !== st.epoch || st.session !== s) return;
    if (sessionGone(r)) return end("expired");
    if (r.status === 200 && r.body.present) {
      st.pinState = r.body.pin;
      if (r.body.pin && r.body.pin.state === "locked") { st.status.ukey = "ukey-locked"; return renderUkey(); }
      st.status.ukey = "ukey-present";
      renderUkey();
      resetIdle();
      return show(st.ukeyFor === "sign" ? "sign" : st.ukeyFor === "lifecycle" ? "lifecycle" : "pin");
    }
    await waitFor(() => st.ukeyArrived, 1500);
    st.ukeyArrived = false;
  }
}
$("demo-ukey").addEventListener("click", () => api("POST", "/v1/sim/ukey", {}, null));
/** Resolve when cond() holds (checked every 100 ms) or after ms. */
function waitFor(cond, ms) {
  const deadline = Date.now() + ms;
  return new Promise((resolve) => {
    const tick = () => (cond() || Date.now() >= deadline ? resolve() : setTimeout(tick, 100));
    tick();
  });
}

// ------------------------------------------------------------------ sign, lifecycle, rights
function choiceButtons(boxId, keys, prefix, onPick) {
  const box = $(boxId);
  box.textContent = "";
  for (const k of keys) {
    const b = el("button", { type: "button" }, t(`${prefix}${k}`));
    b.dataset.choice = k;
    b.addEventListener("click", () => onPick(k));
    box.append(b);
  }
}
function renderSign() { choiceButtons("documents", DOCUMENTS, "", (d) => { st.document = d; show("pin"); }); }
function renderLifecycle() {
  choiceButtons("lifecycle-actions", LIFECYCLE_ACTIONS, "a-", (a) => { st.action = a; show("pin"); });
  $("revoke-reason-row").hidden = false;
  for (const o of $("revoke-reason").options) o.textContent = t(o.dataset.i18n);
}
function renderRights() {
  choiceButtons("rights-kinds", RIGHTS_KINDS, "k-", async (kind) => {
    const s = st.session, epoch = st.epoch;
    const r = await api("POST", `/v1/sessions/${s.session_id}/rights-requests`, { kind });
    if (epoch !== st.epoch || st.session !== s) return;
    if (sessionGone(r)) return end("expired");
    if (r.status !== 201) return stepError(r);
    setNotice(null);
    st.outcome = { key: "rights-filed", params: { kind: t(`k-${kind}`), id: r.body.request_id, due: r.body.due },
      rows: [["o-request", r.body.request_id], ["o-due", r.body.due]] };
    show("result");
  });
}

// ------------------------------------------------------------------ PIN keypad
function enterPin() {
  st.pin = [];
  st.pinMessage = null;
  st.work = null;
  renderPin();
}
function renderPin() {
  const what = st.ukeyFor === "sign" ? "sign" : st.ukeyFor === "lifecycle" ? "lifecycle" : "issue";
  $("pin-purpose").textContent = t(`pin-for-${what}`, { action: st.action ? t(`a-${st.action}`) : "" });
  const dots = $("pin-dots");
  dots.textContent = "•".repeat(st.pin.length) || "\u00a0";
  dots.setAttribute("aria-label", t("pin-entered", { n: st.pin.length }));
  const locked = st.pinState && st.pinState.state === "locked";
  const m = st.pinMessage || (st.pinState && st.pinState.state === "final_try" ? { key: "pin-final" } : null);
  $("pin-status").textContent = locked ? t("pin-locked") : m ? t(m.key, m.params) : "";
  $("pin-status").dataset.state = locked ? "locked" : m ? "warn" : "";
  const pad = $("keypad");
  pad.textContent = "";
  const busy = !!st.work;
  pad.hidden = busy || locked;
  for (const k of ["1", "2", "3", "4", "5", "6", "7", "8", "9", "del", "0", "ok"]) {
    const b = el("button", { type: "button", className: `key key-${k}` }, k === "del" ? t("del") : k === "ok" ? t("ok") : k);
    if (k === "ok") b.classList.add("primary");
    b.addEventListener("click", () => pressKey(k));
    pad.append(b);
  }
  $("work").hidden = !busy;
  dots.hidden = busy || locked;
  if (busy) {
    $("work-phase").textContent = st.work.phase && TEXT.zh[`ph-${st.work.phase}`] ? t(`ph-${st.work.phase}`) : t("work-busy");
    $("work-progress").value = st.work.percent || 0;
  }
}
function pressKey(k) {
  if (st.work) return;
  if (k === "del") st.pin.pop();
  else if (k === "ok") return submitPin();
  else if (st.pin.length < PIN_MAX) st.pin.push(k);
  st.pinMessage = null;
  renderPin();
}
async function submitPin() {
  if (st.pin.length < PIN_MIN) { st.pinMessage = { key: "pin-short" }; return renderPin(); }
  const s = st.session, epoch = st.epoch;
  const pin = st.pin.join("");
  st.pin = [];
  st.work = { phase: null, percent: 0 };
  renderPin();
  let path, body;
  if (st.ukeyFor === "sign") {
    path = `/v1/sessions/${s.session_id}/sign`;
    body = { pin, document_b64: btoa(String.fromCharCode(...new TextEncoder().encode(`${TEXT.zh[st.document]} / ${TEXT.en[st.document]}`))) };
  } else if (st.ukeyFor === "lifecycle") {
    path = `/v1/sessions/${s.session_id}/certificate/${st.action}`;
    body = st.action === "revoke" ? { pin, reason: $("revoke-reason").value } : { pin };
  } else {
    path = `/v1/sessions/${s.session_id}/ukey`;
    body = { pin };
  }
  const req = api("POST", path, body);
  st.inflight = req;
  const r = await req;
  st.inflight = null;
  if (epoch !== st.epoch || st.session !== s) return;
  st.work = null;
  if (sessionGone(r)) return end("expired");
  const code = errorCode(r), details = (r.body && r.body.error && r.body.error.details) || {};
  if (r.status === 200) {
    setNotice(null);
    st.outcome = outcomeOf(r.body);
    return show("result");
  }
  if (code === "pin_incorrect") {
    st.pinState = { state: details.state || (details.retries_left === 1 ? "final_try" : "count_low"), retries_left: details.retries_left ?? null };
    st.pinMessage = details.retries_left != null ? { key: "pin-wrong", params: { n: details.retries_left } } : { key: "pin-wrong-unknown" };
  } else if (code === "pin_locked" || code === "pin_attempts_exceeded") {
    st.pinState = { state: "locked", retries_left: 0 };
  } else if (code === "ukey_removed" || code === "ukey_absent") {
    setNotice({ key: "ukey-removed" });
    return show("ukey");
  } else if (code === "ca_unavailable") {
    setNotice({ key: "ca-unavailable" });
  } else {
    stepError(r);
  }
  renderPin();
}
function outcomeOf(b) {
  if (st.ukeyFor === "sign") {
    return { key: "signed", rows: [["o-serial", b.certificate_serial], ["o-algorithm", algorithmName(b.algorithm)], ["o-verified", b.verified ? "✓" : "✗"]] };
  }
  if (st.ukeyFor === "lifecycle") {
    return { key: "lifecycle-done", params: { action: t(`a-${st.action}`) }, rows: [["o-serial", b.serial], ["o-status", t(`st-${b.status}`)]] };
  }
  const c = b.certificate || {};
  return { key: "issued", rows: [["o-serial", c.serial], ["o-subject", c.subject],
    ["o-not_after", c.not_after ? new Date(c.not_after * 1000).toISOString().slice(0, 10) : ""], ["o-algorithm", algorithmName(c.algorithm)],
    ["o-form", b.form_signature && b.form_signature.verified ? t("o-verified") : "✗"]] };
}

// ------------------------------------------------------------------ events
// The session's live events: UKEY arrived, step progress, PIN state.
async function followEvents(s) {
  const ctl = new AbortController();
  st.events = ctl;
  try {
    await readEvents(`/v1/sessions/${s.session_id}/events`, s.token, (name, data) => {
      if (st.session !== s) return false;
      if (name === "device" && data.device === "ukey" && data.present) st.ukeyArrived = true;
      if (name === "device" && data.device === "fingerprint" && data.present && st.step === "fingerprint") setFinger("comparing");
      if (name === "step" && st.work) { st.work = { phase: data.phase, percent: data.percent }; renderPin(); }
      if (name === "pin") { st.pinState = data; if (st.step === "pin") renderPin(); }
      return true;
    }, ctl.signal);
  } catch { /* no stream: the steps also ask the daemon directly */ }
}

// ------------------------------------------------------------------ result
/** A coded value (sex) in the screen's language; anything else as given. */
function codedValue(v) { return TEXT.zh[`v-${v}`] ? t(`v-${v}`) : v; }
// Key types as people know them.
const ALGORITHM_NAMES = { p256: "ECDSA P-256", sm2: "SM2" };
const algorithmName = (a) => ALGORITHM_NAMES[a] || a;
function renderResult() {
  const dl = $("fields"), card = st.card, o = st.outcome;
  const out = $("outcome"), rows = $("outcome-fields");
  out.hidden = !o;
  out.textContent = o ? t(o.key, o.params) : "";
  rows.hidden = !o;
  rows.textContent = "";
  for (const [k, v] of o ? o.rows : []) rows.append(el("div", { className: "field" }, el("dt", {}, t(k)), el("dd", {}, String(v ?? ""))));
  $("h-result").textContent = t(o ? "step-done" : "result");
  $("result-next").hidden = !!o || !st.workflow || st.workflow.next.step === "done";
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
    const row = el("div", { className: "field" }, el("dt", {}, label(f.label)), el("dd", {}, f.value ? codedValue(f.value) : t("hidden")));
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
  if (st.events) st.events.abort();
  Object.assign(st, { events: null, workflow: null, ukeyFor: null, pin: [], pinState: null, pinMessage: null, work: null,
    outcome: null, status: {}, method: null, action: null, document: null, faceQuality: null, ukeyArrived: false });
  st.consent = { purpose: false, items: new Set(), transfers: new Set() };
  for (const i of $("method-fields").querySelectorAll("input")) i.value = "";
  for (const id of ["fields", "used-for", "withheld", "general-items", "sensitive-items", "purpose", "policy-version",
    "outcome", "outcome-fields", "face-quality", "method-fields", "methods", "pin-dots", "guardian-status", "verify-status"]) {
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
  const c = (r.status === 200 && r.body) || {};
  $("demo-card").hidden = c.simulated_idcard !== true;
  $("demo-guardian").hidden = c.simulated_idcard !== true;
  $("demo-finger").hidden = c.simulated_fingerprint !== true;
  $("demo-ukey").hidden = c.simulated_ukey !== true;
});
