// Browser tests of the applicant kiosk page against a real kioskd on simulated
// devices: Debian's chromium driven headless by playwright-core, clicking and
// tapping as a person would, asserting what the screen shows. axe-core checks
// accessibility. Screenshots of each step go to $SCREENSHOTS. Ends with the
// line "N passed, M failed" and exits non-zero on any failure.
import assert from "node:assert/strict";
import { mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { AxeBuilder } from "@axe-core/playwright";
import { startKioskd } from "./lib/kioskd.mjs";
import { blankTokens } from "./lib/softhsm.mjs";

const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const SCREENSHOTS = process.env.SCREENSHOTS || join(process.cwd(), "artifacts", "screenshots");
const CHROMIUM_ARGS = [
  "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
];
const STEP_TIMEOUT_MS = 15000;
// For work on the page: serve daemon/web/ from disk instead of the assets
// embedded in the kioskd binary (same paths and CSP), to skip the rebuild.
const DEV_ASSETS = process.env.KIOSK_WEB_ASSETS_DIR;
// Run only the tests whose name contains this text.
const ONLY = process.env.KIOSK_WEB_ONLY || "";

// ------------------------------------------------ the synthetic card's clear values
// Built by the fixture rules of firmware-interfaces/src/sim/fixtures.rs
// (resident_text(seed)): the page must never show any of them in clear.
function gb11643(first17) {
  const weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
  const sum = [...first17].reduce((acc, d, i) => acc + Number(d) * weights[i], 0);
  return first17 + "10X98765432"[sum % 11];
}
function residentCard(seed) {
  const first17 = `99010119900102${String(seed % 1000).padStart(3, "0")}`;
  return { name: "测试甲", idNumber: gb11643(first17), first17, birthCompact: "19900102", address: "测试省示例市样本区模拟路1号" };
}
const CARD = residentCard(1); // the page's demo button presents seed 1
const CLEAR_VALUES = [CARD.name, CARD.idNumber, CARD.first17, CARD.idNumber.slice(1, 17), CARD.birthCompact, CARD.address];
// The catalog's display rules: name keeps 1 character, ID number first 1 + last 1.
const MASKED_NAME = CARD.name[0] + "*".repeat(CARD.name.length - 1);
const MASKED_ID = CARD.idNumber[0] + "*".repeat(16) + CARD.idNumber[17];
// A synthetic real-name mobile typed for carrier 3-factor verification: the screen must
// not keep it once sent (or once the person cancels).
const MOBILE = "13800138000";

// ------------------------------------------------ runner
const tests = [];
const test = (name, fn) => tests.push({ name, fn });
let shotCounter = 0;

class Run {
  constructor(name, kioskd, context, page) {
    Object.assign(this, { name, kioskd, context, page });
    this.slug = name.replace(/[^a-z0-9]+/gi, "-").replace(/^-|-$/g, "").toLowerCase();
    this.apiBodies = []; // every /v1 response body the page received
    this.apiRequests = []; // "METHOD /path" of every /v1 request the page made
    this.pending = [];
    this.sessions = []; // {session_id, token} the page opened
    this.clearValues = [...CLEAR_VALUES]; // values the page must not show (grows with what the person typed and sent)
    page.on("request", (r) => { const u = new URL(r.url()); if (u.pathname.startsWith("/v1/")) this.apiRequests.push(`${r.method()} ${u.pathname}`); });
    page.on("response", (r) => {
      const u = new URL(r.url());
      if (!u.pathname.startsWith("/v1/")) return;
      // Event streams stay open for the whole session: their events carry no personal values.
      if ((r.headers()["content-type"] || "").startsWith("text/event-stream")) return;
      this.pending.push(r.text().then((body) => {
        this.apiBodies.push(body);
        if (r.request().method() === "POST" && u.pathname === "/v1/sessions" && r.status() === 201) this.sessions.push(JSON.parse(body));
      }, () => {}));
    });
  }
  async shot(step) {
    shotCounter += 1;
    const file = join(SCREENSHOTS, `${String(shotCounter).padStart(2, "0")}-${this.slug}-${step}.png`);
    await this.page.screenshot({ path: file, fullPage: true });
  }
  /** A screenshot of one part of the page (the README's pictures). */
  async shotOf(locator, step) {
    shotCounter += 1;
    await locator.screenshot({ path: join(SCREENSHOTS, `${String(shotCounter).padStart(2, "0")}-${this.slug}-${step}.png`) });
  }
  heading(name) { return this.page.getByRole("heading", { level: 2, name, exact: true }); }
  async see(locator) { await locator.waitFor({ state: "visible", timeout: STEP_TIMEOUT_MS }); }
  async seeHeading(name) { await this.see(this.heading(name)); }
  async notice() { const n = this.page.getByRole("alert"); await this.see(n); return (await n.textContent()).trim(); }
  lastSession() { assert.ok(this.sessions.length, "the page opened a session"); return this.sessions[this.sessions.length - 1]; }
  async settle() { await Promise.all(this.pending); }
  /** The whole DOM (markup, text, form values), the page's storage and every API answer hold no clear personal value. */
  async assertNoClearValues(where) {
    await this.settle();
    const dom = await this.page.evaluate(() => [
      document.documentElement.outerHTML,
      document.body.innerText,
      ...[...document.querySelectorAll("input, textarea")].map((e) => e.value),
      JSON.stringify({ ...localStorage }), JSON.stringify({ ...sessionStorage }), document.cookie,
    ].join("\n"));
    for (const v of this.clearValues) {
      assert.ok(!dom.includes(v), `${where}: clear value ${JSON.stringify(v)} in the page`);
      for (const b of this.apiBodies) assert.ok(!b.includes(v), `${where}: clear value ${JSON.stringify(v)} in an API answer`);
    }
  }
  /** The daemon no longer knows the session the page opened, and a new one can be opened (not busy). */
  async assertSessionGone(s) {
    const r = await this.kioskd.call("GET", `/v1/sessions/${s.session_id}`, { token: s.token });
    assert.ok(r.status === 404 || r.status === 401, `session still there: ${r.status} ${JSON.stringify(r.body)}`);
    const again = await this.kioskd.call("POST", "/v1/sessions", { body: { service: "cert_application" } });
    assert.equal(again.status, 201, `a new session cannot be opened: ${JSON.stringify(again.body)}`);
    const del = await this.kioskd.call("DELETE", `/v1/sessions/${again.body.session_id}`, { token: again.body.token });
    assert.equal(del.status, 204);
  }
  /** Wait until the page's DELETE of the session has been answered. */
  waitForDelete() {
    return this.page.waitForResponse((r) => r.request().method() === "DELETE" && /\/v1\/sessions\//.test(r.url()), { timeout: STEP_TIMEOUT_MS });
  }
  // -------------------------------------------- steps as a person does them
  async open() {
    await this.page.goto(this.kioskd.base + "/");
    await this.seeHeading("请选择服务");
  }
  async chooseCertApplication() {
    await this.page.getByRole("button", { name: "证书申请", exact: true }).click();
    await this.seeHeading("个人信息处理同意");
  }
  async giveRequiredConsent() {
    await this.page.getByRole("checkbox", { name: "我同意为上述目的处理这些信息" }).check();
    await this.page.getByRole("checkbox", { name: /身份证号码（必需）/ }).check();
    await this.page.getByRole("button", { name: "同意并继续" }).click();
    await this.seeHeading("请将身份证放在读卡区");
  }
  async placeDemoCardAndRead() {
    await this.page.getByRole("button", { name: "演示：放置测试身份证" }).click();
    await this.seeHeading("读取结果");
  }
  async cancelAndCheck(buttonName, where) {
    const deleted = this.waitForDelete();
    await this.page.getByRole("button", { name: buttonName }).click();
    await this.seeHeading("请选择服务");
    assert.equal((await deleted).status(), 204, `${where}: DELETE answered`);
    assert.match(await this.notice(), /清除/);
    await this.assertNoClearValues(where);
    assert.equal(await this.page.getByText(MASKED_NAME, { exact: true }).count(), 0, `${where}: masked values cleared too`);
    await this.assertSessionGone(this.lastSession());
  }
}

async function serveDevAssets(context) {
  const files = { "/": ["kiosk.html", "text/html"], "/assets/kiosk.js": ["kiosk.js", "text/javascript"], "/assets/kiosk.css": ["kiosk.css", "text/css"],
    "/staff": ["staff.html", "text/html"], "/assets/staff.js": ["staff.js", "text/javascript"], "/assets/staff.css": ["staff.css", "text/css"],
    "/assets/sse.js": ["sse.js", "text/javascript"], "/assets/ui.js": ["ui.js", "text/javascript"] };
  await context.route((url) => url.pathname in files, async (route) => {
    const [file, type] = files[new URL(route.request().url()).pathname];
    const upstream = await route.fetch();
    await route.fulfill({ response: upstream, body: await readFile(join(DEV_ASSETS, file), "utf8"), headers: { ...upstream.headers(), "content-type": `${type}; charset=utf-8` } });
  });
}

async function runAll() {
  await mkdir(SCREENSHOTS, { recursive: true });
  // The one kioskd most tests share runs the local HQ and its CA (certificates are issued).
  const kioskd = await startKioskd({ hq: true });
  const results = [];
  try {
    for (const t of tests.filter((x) => x.name.includes(ONLY))) {
      const started = Date.now();
      const logsBefore = kioskd.logs.length;
      const profile = await mkdtemp(join(tmpdir(), "kiosk-chromium-"));
      let context, run;
      try {
        await kioskd.call("DELETE", "/v1/sim/idcard"); // no card left on the reader by a previous test
        context = await chromium.launchPersistentContext(profile, {
          executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS,
          viewport: { width: 1024, height: 1200 }, hasTouch: true, locale: "zh-CN", reducedMotion: "reduce",
        });
        const page = context.pages()[0] || (await context.newPage());
        if (DEV_ASSETS) await serveDevAssets(context);
        run = new Run(t.name, kioskd, context, page);
        await t.fn(run, kioskd);
        results.push(true);
        console.log(`ok   - ${t.name} (${Date.now() - started} ms)`);
      } catch (e) {
        results.push(false);
        console.log(`FAIL - ${t.name} (${Date.now() - started} ms)\n${String(e && e.stack ? e.stack : e).replace(/^/gm, "       ")}`);
        if (run) await run.page.screenshot({ path: join(SCREENSHOTS, `FAILED-${run.slug}.png`), fullPage: true }).catch(() => {});
        // What kioskd warned about meanwhile (its logs carry no personal data).
        const warned = kioskd.logs.slice(logsBefore).filter((l) => /"level":"(WARN|ERROR)"/.test(l));
        if (warned.length) console.log(`       kioskd warnings during the test:\n${warned.slice(-15).join("\n").replace(/^/gm, "         ")}`);
      } finally {
        // A failed test must not leave its session open for the next one.
        for (const s of run ? run.sessions : []) await kioskd.call("DELETE", `/v1/sessions/${s.session_id}`, { token: s.token }).catch(() => {});
        if (context) await context.close().catch(() => {});
        await rm(profile, { recursive: true, force: true });
      }
    }
  } finally {
    await kioskd.stop();
  }
  return results;
}

// ------------------------------------------------ tests

test("applicant flow shows only masked values", async (r) => {
  await r.open();
  assert.equal(await r.page.getAttribute("html", "lang"), "zh-CN");
  await r.shot("service");
  await r.chooseCertApplication();
  // Nothing pre-ticked; sensitive items set apart, each with its own checkbox.
  assert.equal(await r.page.locator("input[type=checkbox]:checked").count(), 0, "nothing is pre-ticked");
  const sensitive = r.page.getByRole("group", { name: /敏感个人信息/ });
  await r.see(sensitive.getByRole("checkbox", { name: "同意处理我的身份证号码（必需）" }));
  await r.see(sensitive.getByRole("checkbox", { name: "同意处理我的指纹（可选）" }));
  await r.see(sensitive.getByRole("checkbox", { name: "同意处理我的人脸图像（可选）" }));
  const general = r.page.getByRole("group", { name: "一般个人信息" });
  await r.see(general.getByRole("listitem").getByText("姓名（必需）", { exact: true }));
  assert.equal(await general.getByRole("checkbox", { name: /身份证号码/ }).count(), 0, "the ID number is not among the general items");
  await r.see(r.page.getByText("证书申请（新办、更新、变更、密钥更新）"));
  await r.shot("consent");

  await r.giveRequiredConsent();
  const status = r.page.getByRole("status");
  await r.see(status.getByText("等待放置身份证……"));
  await r.shot("card-waiting");
  await r.placeDemoCardAndRead();
  await r.shot("result");

  const value = (label) => r.page.locator("#fields .field").filter({ has: r.page.getByRole("term").getByText(label, { exact: true }) }).getByRole("definition");
  assert.equal(await value("姓名").textContent(), MASKED_NAME);
  assert.equal(await value("身份证号码").textContent(), MASKED_ID);
  assert.match(await value("住址").textContent(), /^测试省示例市\*+$/);
  assert.match(await value("出生日期").textContent(), /^1990\*+$/);
  assert.equal(await value("性别").textContent(), "男", "coded values in the screen's language");
  await r.see(r.page.getByText(/以上信息仅用于：证书申请/));
  await r.see(r.page.getByText(/未读取的信息.*民族/)); // optional sensitive item not consented: not read
  await r.assertNoClearValues("result");
  const consents = r.apiRequests.filter((q) => q.endsWith("/consents"));
  assert.equal(consents.length, 1, "one consent request");
  // The daemon recorded consent to the purpose and to the ID number only: nothing unticked.
  const s = r.lastSession();
  const view = await r.kioskd.call("GET", `/v1/sessions/${s.session_id}`, { token: s.token });
  assert.equal(view.status, 200);
  const granted = view.body.consents.filter((c) => c.withdrawn_at_ms === null).map((c) => `${c.scope}:${c.item ?? "(purpose)"}`).sort();
  assert.deepEqual(granted, ["collect:(purpose)", "collect:id_number"]);

  await r.cancelAndCheck("结束并清除", "after finishing");
});

test("consent refused: cannot proceed", async (r) => {
  await r.open();
  await r.chooseCertApplication();
  await r.page.getByRole("button", { name: "同意并继续" }).click();
  assert.match(await r.notice(), /请先勾选/);
  await r.seeHeading("个人信息处理同意");
  await r.page.getByRole("checkbox", { name: "我同意为上述目的处理这些信息" }).check();
  await r.page.getByRole("button", { name: "同意并继续" }).click();
  await r.see(r.page.getByRole("alert").getByText(/办理此业务需要您单独同意处理：身份证号码/));
  await r.shot("consent-missing");
  await r.seeHeading("个人信息处理同意");
  assert.equal(await r.heading("请将身份证放在读卡区").isVisible(), false);
  assert.deepEqual(r.apiRequests.filter((q) => q.includes("/consents") || q.includes("/idcard")), [], "nothing was sent before consent");

  const deleted = r.waitForDelete();
  await r.page.getByRole("button", { name: "不同意" }).click();
  await r.seeHeading("请选择服务");
  assert.equal((await deleted).status(), 204);
  assert.match(await r.notice(), /您未同意.*没有收集您的任何信息/);
  await r.shot("refused");
  await r.assertSessionGone(r.lastSession());
});

test("cancel at each step leaves nothing behind", async (r) => {
  await r.open();
  await r.chooseCertApplication();
  await r.cancelAndCheck("取消办理", "cancel at consent");

  await r.chooseCertApplication();
  await r.giveRequiredConsent();
  await r.cancelAndCheck("取消办理", "cancel while waiting for the card");

  await r.chooseCertApplication();
  await r.giveRequiredConsent();
  await r.placeDemoCardAndRead();
  await r.see(r.page.getByText(MASKED_NAME, { exact: true }));
  await r.cancelAndCheck("结束并清除", "cancel at the result");
  assert.equal(await r.page.locator("input[type=checkbox]:checked").count(), 0, "no consent left ticked");

  // A number typed but not sent is cleared with the rest.
  await r.chooseCertApplication();
  await r.giveRequiredConsent();
  await r.placeDemoCardAndRead();
  await r.page.getByRole("button", { name: "下一步" }).click();
  await r.seeHeading("选择身份核验方式");
  await r.page.locator("#methods button").filter({ hasText: /运营商/ }).click();
  await r.page.getByRole("textbox", { name: /手机号码/ }).fill(MOBILE);
  r.clearValues.push(MOBILE);
  await r.cancelAndCheck("取消办理", "cancel with a number typed");
});

test("language switch", async (r) => {
  await r.open();
  await r.page.getByRole("button", { name: "English" }).click();
  await r.seeHeading("Choose a service");
  assert.equal(await r.page.getAttribute("html", "lang"), "en");
  await r.shot("service-en");
  await r.page.getByRole("button", { name: "Apply for a certificate" }).click();
  await r.seeHeading("Consent to the processing of personal information");
  await r.page.getByRole("checkbox", { name: "I agree to the processing of this information for the purpose above" }).check();
  const id = r.page.getByRole("checkbox", { name: "I agree to the processing of my ID-card number (required)" });
  await id.check();
  await r.shot("consent-en");
  // Switching mid-step keeps what was ticked and relabels it.
  await r.page.getByRole("button", { name: "中文" }).click();
  await r.seeHeading("个人信息处理同意");
  assert.equal(await r.page.getAttribute("html", "lang"), "zh-CN");
  assert.equal(await r.page.getByRole("checkbox", { name: "同意处理我的身份证号码（必需）" }).isChecked(), true);
  assert.equal(await r.page.getByRole("checkbox", { name: "我同意为上述目的处理这些信息" }).isChecked(), true);
  await r.page.getByRole("button", { name: "English" }).click();
  await r.page.getByRole("button", { name: "Agree and continue" }).click();
  await r.seeHeading("Place your ID card on the reader");
  await r.see(r.page.getByRole("status").getByText("Waiting for your ID card…"));
  await r.page.getByRole("button", { name: "Demo: place a test ID card" }).click();
  await r.seeHeading("What was read");
  await r.see(r.page.getByRole("term").getByText("ID-card number", { exact: true }));
  await r.see(r.page.getByRole("definition").getByText(MASKED_ID, { exact: true }));
  await r.shot("result-en");
  await r.assertNoClearValues("English result");
  const deleted = r.waitForDelete();
  await r.page.getByRole("button", { name: "Finish and clear" }).click();
  await r.seeHeading("Choose a service");
  assert.equal((await deleted).status(), 204);
});

test("ID card of a child under 14 needs a guardian", async (r, kioskd) => {
  await r.open();
  await r.chooseCertApplication();
  await r.giveRequiredConsent();
  const today = new Date();
  const birth = `${today.getUTCFullYear() - 10}-01-15`;
  // The person places the card (the simulated reader stands in for it).
  assert.equal((await kioskd.call("POST", "/v1/sim/idcard", { body: { seed: 1, birth_date: birth } })).status, 204);
  await r.seeHeading("监护人同意");
  await r.see(r.page.getByText(/申请人未满14周岁/));
  await r.shot("minor");
  assert.equal(await r.page.locator("#fields .field").count(), 0, "nothing shown");
  await r.assertNoClearValues("minor");
  await r.cancelAndCheck("取消办理", "cancel after the minor's card");
});

test("idle timeout warns, can be continued, then clears the screen", async (r) => {
  const short = await startKioskd({ config: "[api]\nsession_idle_secs = 4\n" });
  try {
    r.kioskd = short;
    await r.open();
    await r.chooseCertApplication();
    const purpose = r.page.getByRole("checkbox", { name: "我同意为上述目的处理这些信息" });
    await purpose.check();
    const dialog = r.page.getByRole("dialog", { name: "您还在吗？" });
    await r.see(dialog);
    await r.see(dialog.getByText(/秒后将结束本次办理/));
    await r.shot("idle-warning");
    await dialog.getByRole("button", { name: "继续办理" }).click();
    await dialog.waitFor({ state: "hidden", timeout: STEP_TIMEOUT_MS });
    assert.equal(await purpose.isChecked(), true, "continuing keeps the screen");
    await r.seeHeading("个人信息处理同意");
    // Walk away: the warning comes back, then the screen is cleared.
    const deleted = r.waitForDelete();
    await r.see(dialog);
    await r.seeHeading("请选择服务");
    await deleted;
    assert.match(await r.notice(), /长时间无操作/);
    await r.shot("idle-cleared");
    await r.assertNoClearValues("after idle");
    assert.equal(await r.page.locator("#general-items li").count(), 0, "consent text cleared");
    await r.assertSessionGone(r.lastSession());
  } finally {
    await short.stop();
  }
});

test("touch targets, focus order and keyboard use", async (r) => {
  await r.open();
  // Tap (touch) the service.
  await r.page.getByRole("button", { name: "证书申请", exact: true }).tap();
  await r.seeHeading("个人信息处理同意");
  assert.equal(await r.page.evaluate(() => document.activeElement.id), "h-consent", "focus moves to the new step's heading");
  for (const target of await r.page.locator("button:visible, label.check:visible").all()) {
    const box = await target.boundingBox();
    assert.ok(box.height >= 48 && box.width >= 48, `touch target too small: ${await target.textContent()} ${JSON.stringify(box)}`);
  }
  // Keyboard only: Tab walks the consent in reading order.
  const focusedName = () => r.page.evaluate(() => {
    const e = document.activeElement;
    return (e.labels && e.labels[0] ? e.labels[0].textContent : e.textContent).trim();
  });
  await r.page.keyboard.press("Tab");
  assert.equal(await focusedName(), "我同意为上述目的处理这些信息");
  await r.page.keyboard.press("Space");
  await r.page.keyboard.press("Tab");
  assert.match(await focusedName(), /身份证号码/);
  await r.page.keyboard.press("Space");
  const order = [];
  for (let i = 0; i < 12; i += 1) {
    await r.page.keyboard.press("Tab");
    order.push(await focusedName());
    if (order[order.length - 1] === "同意并继续") break;
  }
  assert.equal(order[order.length - 1], "同意并继续", `Tab reaches the next button after the consents: ${order.join(" | ")}`);
  assert.ok(order.every((n) => n !== "不同意" && n !== "取消办理"), "the buttons come after every consent");
  await r.page.keyboard.press("Enter");
  await r.seeHeading("请将身份证放在读卡区");
  assert.equal(await r.page.evaluate(() => document.activeElement.id), "h-idcard");
  await r.cancelAndCheck("取消办理", "keyboard run");
});

async function assertAccessible(r, where) {
  const result = await new AxeBuilder({ page: r.page }).withTags(["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"]).analyze();
  const bad = result.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  assert.deepEqual(bad.map((v) => `${v.id} (${v.impact}): ${v.help} — ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`), [], `axe on ${where}`);
  assert.ok(result.passes.length > 10, `axe ran its checks on ${where}`);
}

test("axe-core: no serious or critical violations on any step", async (r) => {
  await r.open();
  await assertAccessible(r, "service");
  await r.chooseCertApplication();
  await assertAccessible(r, "consent");
  await r.page.getByRole("button", { name: "同意并继续" }).click();
  await r.notice();
  await assertAccessible(r, "consent with a notice");
  await r.page.getByRole("checkbox", { name: "我同意为上述目的处理这些信息" }).check();
  await r.page.getByRole("checkbox", { name: /身份证号码（必需）/ }).check();
  await r.page.getByRole("button", { name: "同意并继续" }).click();
  await r.seeHeading("请将身份证放在读卡区");
  await assertAccessible(r, "ID card");
  await r.placeDemoCardAndRead();
  await assertAccessible(r, "result");
  await r.page.getByRole("button", { name: "English" }).click();
  await r.seeHeading("What was read");
  await assertAccessible(r, "result in English");
  const deleted = r.waitForDelete();
  await r.page.getByRole("button", { name: "Finish and clear" }).click();
  await deleted;
});

const pressPin = async (r, digits) => {
  const pad = r.page.getByRole("group", { name: "数字键盘" });
  for (const d of digits) await pad.getByRole("button", { name: d, exact: true }).click();
  // The PIN is never text in the page: only dots.
  const html = await r.page.evaluate(() => document.documentElement.outerHTML);
  assert.ok(!html.includes(digits), "the PIN is not in the DOM");
  assert.equal((await r.page.locator("#pin-dots").textContent()).trim(), "•".repeat(digits.length));
  await pad.getByRole("button", { name: "确定" }).click();
};

// The initial PIN of a UKEY the simulator inserts (daemon/src/api/ukey.rs SIM_UKEY_PIN).
const SIM_UKEY_PIN = "123456";
// The phases of an issuance as the screen names them, in order.
const ISSUANCE_PHASES = ["正在 UKEY 中生成密钥……", "正在向 CA 申请证书……", "正在写入证书……", "正在签署申请表……", "完成。"];
// The certificate the application test puts on the simulated UKEY (the sign test uses it).
let issuedSerial = null;
// The rights request the applicant files (the staff console test completes it).
let filedRequest = null;

/** Verify with carrier 3-factor: the purpose of the number is on screen where it is asked. */
async function verifyByCarrier(r) {
  await r.seeHeading("选择身份核验方式");
  const methods = r.page.locator("#methods button");
  const names = await methods.allTextContents();
  assert.ok(names.some((n) => n.includes("（使用人脸）")) && names.some((n) => n.includes("（不使用人脸）")), `methods: ${names.join(" | ")}`);
  await methods.filter({ hasText: /运营商/ }).click();
  const mobile = r.page.getByRole("textbox", { name: /手机号码/ });
  await r.see(mobile);
  // The daemon states it as "中文 / English"; the screen shows the half of its language.
  const why = (await r.page.locator("#method-fields .purpose").first().textContent()).trim();
  assert.match(why, /^为什么需要：用于运营商三要素核验，核验您的身份以办理/);
  assert.ok(!why.includes(" / ") && !/used by|carrier/.test(why), `only the Chinese half: ${why}`);
  assert.equal((await r.page.locator("#method-purpose").textContent()).trim(), "将提供给运营商的信息：姓名、实名手机号码、身份证号码");
  await r.shot("verification");
  await mobile.fill(MOBILE);
  await r.page.getByRole("button", { name: "核验", exact: true }).click();
  // Once sent, the typed number must be gone from the screen.
  r.clearValues.push(MOBILE, MOBILE.slice(3));
}

test("certificate application: fingerprint, verification, UKEY, PIN, certificate", async (r, kioskd) => {
  await r.open();
  await r.chooseCertApplication();
  await r.page.getByRole("checkbox", { name: "我同意为上述目的处理这些信息" }).check();
  await r.page.getByRole("checkbox", { name: /身份证号码（必需）/ }).check();
  await r.page.getByRole("checkbox", { name: "同意处理我的指纹（可选）" }).check();
  await r.page.getByRole("button", { name: "同意并继续" }).click();
  await r.seeHeading("请将身份证放在读卡区");
  await r.assertNoClearValues("card step");
  await r.placeDemoCardAndRead();
  await r.assertNoClearValues("card read");
  await r.page.getByRole("button", { name: "下一步" }).click();
  // Fingerprint: the person places the finger (the simulated sensor stands in for it).
  await r.seeHeading("请将手指放在指纹仪上");
  await r.see(r.page.getByRole("status").getByText(/请将手指平放在指纹仪上/));
  await r.shot("fingerprint");
  await r.assertNoClearValues("fingerprint");
  assert.equal((await kioskd.call("POST", "/v1/sim/fingerprint", { body: {} })).status < 300, true);
  await verifyByCarrier(r);
  // The UKEY: inserted by the person (the simulated UKEY stands in).
  await r.seeHeading("请插入 UKEY");
  await r.see(r.page.getByText("等待插入 UKEY……"));
  await r.assertNoClearValues("UKEY step");
  await r.shot("ukey-insert");
  // Issuing needs the local HQ's CA: wait until kioskd says it is up (it started with the run).
  await kioskd.waitForLog(/local HQ ready/, 120000);
  const inserted = await kioskd.call("POST", "/v1/sim/ukey", { body: {} });
  assert.equal(inserted.status, 201);
  assert.equal(inserted.body.initial_pin, SIM_UKEY_PIN);
  await r.seeHeading("请输入 UKEY 的 PIN");
  await r.see(r.page.getByText("输入 PIN 后，将在 UKEY 中生成密钥并写入证书。"));
  await r.assertNoClearValues("PIN step");
  await r.shot("pin");
  await assertAccessible(r, "PIN keypad");
  // A wrong PIN shows the retries left, and the keypad stays for the next try.
  await pressPin(r, "000000");
  await r.see(r.page.getByRole("status").getByText(/PIN 错误/));
  const wrong = (await r.page.locator("#pin-status").textContent()).trim();
  const left = wrong.match(/^PIN 错误，还可以尝试 (\d+) 次。$/);
  assert.ok(left && Number(left[1]) >= 1 && Number(left[1]) < 5, `retries left shown: ${wrong}`);
  assert.equal((await r.page.locator("#pin-dots").textContent()).trim(), "", "the wrong PIN's dots are cleared");
  await r.see(r.page.getByRole("group", { name: "数字键盘" }).getByRole("button", { name: "确定" }));
  await r.shot("pin-wrong");
  await r.assertNoClearValues("wrong PIN");

  // The right PIN: the progress comes from the events stream. The issuance's answer is held
  // back until the screen shows the last phase, so the progress is seen (and photographed)
  // before the result replaces it.
  await r.page.evaluate(() => {
    window.phasesShown = [];
    new MutationObserver((records) => {
      for (const m of records) for (const n of m.addedNodes) window.phasesShown.push(n.textContent);
    }).observe(document.getElementById("work-phase"), { childList: true });
  });
  let progressAt100 = false;
  await r.page.route("**/v1/sessions/*/ukey", async (route) => {
    if (route.request().method() !== "POST") return route.continue();
    const response = await route.fetch({ timeout: 90000 });
    progressAt100 = await r.page.waitForFunction(() => document.getElementById("work-progress").value === 100, null, { timeout: STEP_TIMEOUT_MS })
      .then(() => true, () => false);
    if (progressAt100) await r.shot("issuing");
    await route.fulfill({ response });
  });
  await pressPin(r, SIM_UKEY_PIN);
  await r.seeHeading("结果");
  await r.page.unroute("**/v1/sessions/*/ukey");
  assert.ok(progressAt100, "the progress bar reached 100 % from the events stream before the answer");
  const phases = (await r.page.evaluate(() => window.phasesShown)).filter((p) => ISSUANCE_PHASES.includes(p));
  assert.ok(phases.length >= 2 && phases[phases.length - 1] === "完成。", `phases shown: ${phases.join(" → ")}`);
  const order = phases.map((p) => ISSUANCE_PHASES.indexOf(p));
  assert.deepEqual(order, [...order].sort((a, b) => a - b), `phases in order: ${phases.join(" → ")}`);

  await r.see(r.page.getByText("证书已写入您的 UKEY。"));
  const outcome = (name) => r.page.locator("#outcome-fields .field").filter({ has: r.page.getByRole("term").getByText(name, { exact: true }) }).getByRole("definition");
  const subject = await outcome("证书主体").textContent();
  assert.ok(subject.includes(`CN=${MASKED_NAME}`) && !subject.includes(CARD.name), `subject masked: ${subject}`);
  issuedSerial = (await outcome("证书序列号").textContent()).trim();
  assert.match(issuedSerial, /^[0-9a-f]{8,}$/);
  assert.equal(await outcome("申请表签名").textContent(), "已验证");
  assert.equal(await outcome("算法").textContent(), "ECDSA P-256");
  assert.match(await outcome("有效期至").textContent(), /^\d{4}-\d{2}-\d{2}$/);
  await r.see(r.page.getByRole("definition").getByText(MASKED_ID, { exact: true }));
  await r.shot("certificate");
  await r.assertNoClearValues("certificate result");
  await assertAccessible(r, "certificate result");
  await r.cancelAndCheck("结束并清除", "after the certificate");
});

test("sign a document with the certificate issued above", async (r) => {
  assert.ok(issuedSerial, "the application test issued a certificate onto the simulated UKEY");
  await r.open();
  await r.page.getByRole("button", { name: "签署文件", exact: true }).click();
  await r.seeHeading("个人信息处理同意");
  await r.page.getByRole("checkbox", { name: "我同意为上述目的处理这些信息" }).check();
  for (const box of await r.page.getByRole("checkbox", { name: /（必需）/ }).all()) await box.check();
  await r.shot("sign-consent");
  await r.page.getByRole("button", { name: "同意并继续" }).click();
  // The UKEY that got the certificate is still inserted: the page finds it and offers the documents.
  await r.seeHeading("签署文件");
  await r.page.getByRole("button", { name: "示例：业务申请表" }).click();
  await r.seeHeading("请输入 UKEY 的 PIN");
  await r.see(r.page.getByText("输入 PIN 后签署所选文件。"));
  await pressPin(r, SIM_UKEY_PIN);
  await r.seeHeading("结果");
  await r.see(r.page.getByText("文件已签署，签名验证通过。"));
  const outcome = (name) => r.page.locator("#outcome-fields .field").filter({ has: r.page.getByRole("term").getByText(name, { exact: true }) }).getByRole("definition");
  assert.equal((await outcome("证书序列号").textContent()).trim(), issuedSerial, "signed with the certificate issued above");
  assert.equal((await outcome("已验证").textContent()).trim(), "✓", "the kiosk verified the signature");
  await r.shot("signed");
  await r.assertNoClearValues("signed");
  await r.cancelAndCheck("结束并清除", "after signing");
});

test("wrong PINs count down to a locked keypad", async (r, kioskd) => {
  // A fresh UKEY: the one holding the certificate above is pulled first.
  assert.equal((await kioskd.call("DELETE", "/v1/sim/ukey")).status, 204);
  await r.open();
  await r.chooseCertApplication();
  await r.giveRequiredConsent();
  await r.placeDemoCardAndRead();
  await r.page.getByRole("button", { name: "下一步" }).click();
  await verifyByCarrier(r);
  await r.seeHeading("请插入 UKEY");
  await kioskd.waitForLog(/local HQ ready/, 120000);
  assert.equal((await kioskd.call("POST", "/v1/sim/ukey", { body: {} })).status, 201);
  await r.seeHeading("请输入 UKEY 的 PIN");
  const shown = [];
  for (let i = 0; i < 6 && !shown.some((m) => m.startsWith("PIN 已锁定")); i += 1) {
    const answered = r.page.waitForResponse((res) => res.request().method() === "POST" && /\/ukey$/.test(res.url()), { timeout: STEP_TIMEOUT_MS });
    await pressPin(r, "000000");
    assert.equal((await answered).status() >= 400, true);
    await r.page.locator("#pin-status").filter({ hasText: /\S/ }).waitFor({ timeout: STEP_TIMEOUT_MS });
    shown.push((await r.page.locator("#pin-status").textContent()).trim());
    if (shown.length === 4) await r.shot("pin-last-try");
  }
  // Each wrong PIN shows one try fewer, then the keypad is gone.
  const left = shown.slice(0, -1).map((m) => Number((m.match(/^PIN 错误，还可以尝试 (\d+) 次。$/) || [])[1]));
  assert.ok(left.length >= 1 && left.every((n, i) => n >= 1 && (i === 0 || n === left[i - 1] - 1)) && left[left.length - 1] === 1, `shown: ${shown.join(" | ")}`);
  assert.equal(shown[shown.length - 1], "PIN 已锁定，无法继续。请联系工作人员解锁 UKEY。");
  assert.equal(await r.page.getByRole("group", { name: "数字键盘" }).isVisible(), false, "no keypad once locked");
  await r.shot("pin-locked");
  await assertAccessible(r, "PIN locked");
  await r.cancelAndCheck("取消办理", "cancel when locked");
  assert.equal((await kioskd.call("DELETE", "/v1/sim/ukey")).status, 204);
});

test("rights request: identity verified, request filed with its deadline", async (r) => {
  await r.open();
  await r.page.getByRole("button", { name: "个人信息权利请求", exact: true }).click();
  await r.seeHeading("个人信息处理同意");
  await r.page.getByRole("checkbox", { name: "我同意为上述目的处理这些信息" }).check();
  for (const box of await r.page.getByRole("checkbox", { name: /（必需）/ }).all()) await box.check();
  await r.page.getByRole("button", { name: "同意并继续" }).click();
  await r.seeHeading("请将身份证放在读卡区");
  await r.placeDemoCardAndRead();
  await r.page.getByRole("button", { name: "下一步" }).click();
  // In English the purpose is the English half, naming the recipient and the service.
  await r.seeHeading("选择身份核验方式");
  await r.page.getByRole("button", { name: "English" }).click();
  await r.page.locator("#methods button").filter({ hasText: /carrier/i }).click();
  const why = (await r.page.locator("#method-fields .purpose").first().textContent()).trim();
  assert.equal(why, "Why we ask: used by carrier to verify your identity for rights request");
  await r.page.getByRole("button", { name: "中文" }).click();
  await verifyByCarrier(r);
  await r.seeHeading("个人信息权利请求");
  await r.assertNoClearValues("rights kinds");
  await r.shot("rights-kinds");
  await r.page.getByRole("button", { name: "更正或补充", exact: true }).click();
  await r.seeHeading("结果");
  const filed = (await r.page.locator("#outcome").textContent()).trim();
  const m = filed.match(/^您的更正或补充请求已受理，编号 (\S+)。我们将在 (\d{4}-\d{2}-\d{2}) 前答复。$/);
  assert.ok(m, `filed: ${filed}`);
  // 15 working days: later than today, within five weeks.
  const due = Date.parse(`${m[2]}T00:00:00Z`), now = Date.now();
  assert.ok(due > now && due < now + 35 * 86400000, `deadline ${m[2]}`);
  filedRequest = { id: m[1], due: m[2] };
  await r.shot("rights-filed");
  await r.assertNoClearValues("rights filed");
  await r.cancelAndCheck("结束并清除", "after the rights request");
});

test("guardian consents for a child under 14", async (r, kioskd) => {
  await r.open();
  await r.chooseCertApplication();
  await r.giveRequiredConsent();
  const birth = `${new Date().getUTCFullYear() - 10}-01-15`;
  assert.equal((await kioskd.call("POST", "/v1/sim/idcard", { body: { seed: 1, birth_date: birth } })).status, 204);
  await r.seeHeading("监护人同意");
  await assertAccessible(r, "guardian");
  assert.equal((await kioskd.call("POST", "/v1/sim/idcard", { body: { seed: 2 } })).status, 204);
  await r.page.getByRole("button", { name: "监护人已放好身份证" }).click();
  await r.seeHeading("请将身份证放在读卡区");
  assert.match(await r.notice(), /监护人 .*已同意/);
  await r.shot("guardian-consented");
  assert.equal((await kioskd.call("POST", "/v1/sim/idcard", { body: { seed: 1, birth_date: birth } })).status, 204);
  await r.seeHeading("读取结果");
  await r.assertNoClearValues("minor with guardian");
  await r.cancelAndCheck("结束并清除", "after the guardian");
});

// ------------------------------------------------ staff console
const STAFF_TOKEN = "staff-demo", STAFF_PIN = "staff-demo-pin"; // the embedded defaults' demo staff UKEY
async function staffLogin(r, kioskd, pin = STAFF_PIN) {
  await r.page.goto(kioskd.base + "/staff");
  await r.seeHeading("工作人员登录");
  await r.page.getByLabel("UKEY 标签").fill(STAFF_TOKEN);
  await r.page.getByLabel("PIN", { exact: true }).fill(pin);
  await r.page.getByRole("button", { name: "登录", exact: true }).click();
}

test("staff console: login, devices, sync, audit, reveal, logout", async (r, kioskd) => {
  await staffLogin(r, kioskd, "wrong-pin");
  assert.match(await r.notice(), /PIN/);
  await r.shot("staff-login-failed");
  assert.equal(await r.page.getByLabel("PIN", { exact: true }).inputValue(), "", "the PIN field is cleared");
  await staffLogin(r, kioskd);
  await r.seeHeading("设备状态");
  await r.see(r.page.getByText("身份证读卡器"));
  await r.see(r.page.getByText("模拟设备").first());
  await r.see(r.page.getByText("合成图像（演示）"));
  await r.see(r.page.getByText("待发送记录"));
  await r.see(r.page.getByText("最近一次联系总部"));
  await r.see(r.page.getByText(/审计日志完整：\d+ 条记录/));
  const actions = await r.page.locator("#audit-table tbody tr td:nth-child(4)").allTextContents();
  assert.ok(actions.includes("staff.login"), `the login is in the audit log: ${actions.slice(0, 5).join(", ")}`);
  const auditText = await r.page.locator("#audit-table").textContent();
  assert.ok(!auditText.includes("CN="), "no staff identity in the audit view");
  await assertAccessible(r, "staff console");
  await r.shot("staff-console");
  // The applicant's rights request (filed above) is listed with its deadline; staff complete it.
  if (filedRequest) {
    const row = r.page.locator("#rights-table tbody tr").filter({ hasText: filedRequest.id });
    await r.see(row);
    assert.match(await row.textContent(), new RegExp(`更正.*${filedRequest.due}`));
    await row.getByRole("button", { name: `办结 ${filedRequest.id}` }).click();
    await r.see(r.page.getByRole("alert").getByText(`请求 ${filedRequest.id} 已更新为：已办结。`));
    await r.see(r.page.locator("#audit-table").getByText("rights.done", { exact: true }));
  }
  // Reveal needs a reason and is audited.
  if (await r.page.locator("#reveal-form").isVisible()) {
    await r.page.getByLabel("理由（必填）").fill("核对申请人更正请求");
    await r.page.getByRole("button", { name: "查看明文" }).click();
    await r.see(r.page.locator("#revealed"));
    await r.see(r.page.locator("#audit-table").getByText("staff.reveal").first());
  }
  await r.page.getByRole("button", { name: "English" }).click();
  await r.seeHeading("Devices");
  await assertAccessible(r, "staff console in English");
  await r.page.getByRole("button", { name: "Log out" }).click();
  await r.seeHeading("Staff login");
  assert.equal(await r.page.locator("#console").isVisible(), false);
  assert.equal(await r.page.locator("#audit-table tbody tr").count(), 0, "nothing left on screen");
});

test("staff unblock a holder's UKEY with its SO PIN on the console", async (r, kioskd) => {
  assert.equal((await kioskd.call("DELETE", "/v1/sim/ukey")).status, 204);
  const inserted = await kioskd.call("POST", "/v1/sim/ukey", { body: {} });
  assert.equal(inserted.status, 201);
  const serial = inserted.body.serial;
  // The holder enters wrong PINs (a certificate_use session signs only after the PIN).
  const opened = await kioskd.call("POST", "/v1/sessions", { body: { service: "certificate_use" } });
  assert.equal(opened.status, 201);
  const { session_id: id, token } = opened.body;
  assert.equal((await kioskd.call("POST", `/v1/sessions/${id}/consents`, { token, body: { purpose: true, items: ["pin"] } })).status, 200);
  const sign = (pin) => kioskd.call("POST", `/v1/sessions/${id}/sign`, { token, body: { pin, document_b64: "ZG9j" } });
  for (let i = 0; i < 2; i += 1) assert.equal((await sign("000000")).status, 403);

  await staffLogin(r, kioskd);
  await r.seeHeading("UKEY 的 PIN");
  const form = r.page.locator("#ukey-pin-form");
  await form.getByLabel("序列号").selectOption(serial);
  assert.equal(await form.getByLabel("操作").inputValue(), "unblock");
  // A wrong SO PIN: refused, the tries left shown.
  await form.getByLabel("管理员 PIN").fill("87654321");
  await form.getByLabel("新 PIN（6–16 位数字）").fill("246813");
  await form.getByRole("button", { name: "确定" }).click();
  await r.see(r.page.getByRole("alert").getByText("管理员 PIN 错误，还可以尝试 2 次。"));
  assert.equal(await form.getByLabel("管理员 PIN").inputValue(), "", "PINs leave the form once sent");
  // The SO PIN the UKEY came with, and the holder's new PIN.
  await form.getByLabel("管理员 PIN").fill("12345678");
  await form.getByLabel("新 PIN（6–16 位数字）").fill("246813");
  await form.getByRole("button", { name: "确定" }).click();
  await r.see(r.page.getByText(`UKEY ${serial} 已解锁，新 PIN 已生效。`));
  await r.see(r.page.locator("#audit-table").getByText("staff.ukey.unblock", { exact: true }));
  await assertAccessible(r, "staff UKEY PIN");
  await r.shot("staff-ukey-unblocked");
  // The new PIN opens the UKEY (it holds no certificate: refused only after the login).
  const opens = await sign("246813");
  assert.equal(opens.status, 409, JSON.stringify(opens.body));
  assert.equal(opens.body.error.code, "no_certificate");
  assert.equal((await kioskd.call("DELETE", `/v1/sessions/${id}`, { token })).status, 204);
  assert.equal((await kioskd.call("DELETE", "/v1/sim/ukey")).status, 204);
  await r.page.getByRole("button", { name: "退出登录" }).click();
});

test("staff batch issuance of 8 blank UKEYs with a progress bar each", async (r) => {
  const so = "12345678";
  const hsm = await blankTokens(8, so);
  const k = await startKioskd({
    config: `[ukey]\nprovider = "pkcs11"\nmodule = "${hsm.module}"\nfactory_so_pin = "${so}"\n`,
    env: { SOFTHSM2_CONF: hsm.conf },
  });
  try {
    await staffLogin(r, k);
    await r.seeHeading("设备状态");
    await r.see(r.page.locator("#token-table").getByText("blank-8"));
    // The key type defaults to the kiosk's [ukey] algorithm (P-256 in the embedded defaults;
    // SoftHSM2 has no SM2).
    assert.equal(await r.page.getByLabel("算法").inputValue(), "p256");
    await r.page.getByRole("button", { name: "开始批量签发" }).click();
    const bars = r.page.locator("#batch-tokens progress");
    await r.see(bars.first());
    assert.equal(await bars.count(), 8, "one progress bar per token");
    await r.shot("staff-batch-running");
    // Every bar reaches 100 % and the PINs are shown once, with the warning.
    await r.page.waitForFunction(() => {
      const all = [...document.querySelectorAll("#batch-tokens progress")];
      return all.length === 8 && all.every((b) => b.value === 100);
    }, null, { timeout: 120000 });
    await r.see(r.page.getByText(/批量签发完成：8 支成功，0 支失败/));
    const pins = r.page.locator("#pin-table tbody tr");
    await r.see(pins.first());
    assert.equal(await pins.count(), 8);
    const userPins = await r.page.locator("#pin-table .pin:not(.so-pin)").allTextContents();
    const soPins = await r.page.locator("#pin-table .so-pin").allTextContents();
    assert.equal(userPins.length, 8, "an initial PIN per token");
    assert.equal(soPins.length, 8, "the new SO PIN per token, to unblock it later");
    for (const pin of [...userPins, ...soPins]) assert.match(pin, /^\d{6,}$/);
    await r.see(r.page.getByText(/以下 PIN 只显示这一次：初始 PIN 请立即交给 UKEY 持有人/));
    assert.equal(await r.page.locator("#batch-tokens li.done").count(), 8, "every token done");
    await assertAccessible(r, "batch done");
    await r.shot("staff-batch-done");
    await r.shotOf(r.page.locator("section", { has: r.heading("批量签发 UKEY") }), "staff-batch-section");
    // Handing out the PINs is audited (the daemon gives them out once).
    await r.see(r.page.locator("#audit-table").getByText("staff.batch.pins_shown", { exact: true }));
    await r.page.getByRole("button", { name: "已记录，隐藏 PIN" }).click();
    assert.equal(await r.page.locator("#pin-table .pin").count(), 0, "PINs gone from the page");
  } finally {
    await k.stop();
    await hsm.remove();
  }
});

test("kioskd logs hold no clear personal value", async (r, kioskd) => {
  assert.ok(kioskd.logs.length > 10, `logs were captured: ${kioskd.logs.length}`);
  assert.ok(kioskd.logs.some((l) => l.includes("ID card read")), "the card was read during this run");
  for (const line of kioskd.logs) for (const v of [...CLEAR_VALUES, MOBILE]) assert.ok(!line.includes(v), `clear value in a log line: ${line}`);
});

const results = await runAll();
const passed = results.filter(Boolean).length;
console.log(`${passed} passed, ${results.length - passed} failed`);
process.exit(results.length - passed === 0 && results.length > 0 ? 0 : 1);
