// Runs the real kioskd binary for the browser tests: a fresh data directory,
// an optional config file, port 0 (the URL is read from its JSON start-up
// log line) and every log line kept so the tests can scan it for personal data.
// With `hq: true` kioskd starts its local HQ (hq-ingest + PostgreSQL + CA, found
// through $KIOSKD_HQ_INGEST), needed to issue certificates; otherwise it runs
// without one (records stay in its outbox) and starts faster.
import { spawn } from "node:child_process";
import { rmSync } from "node:fs";
import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";

const SERVING = "kioskd serving the kiosk page and API";

export async function startKioskd({ config = "", env = {}, hq = false, bin = process.env.KIOSKD_BIN } = {}) {
  if (!bin) throw new Error("KIOSKD_BIN is not set (run tests/web/run.sh)");
  const dir = await mkdtemp(join(tmpdir(), "kioskd-web-"));
  // The local HQ's PostgreSQL runs as the postgres user when the tests run as root: it must
  // be able to reach its cluster inside the data dir.
  if (hq) await chmod(dir, 0o755);
  const cfg = join(dir, "kioskd-web-test.toml");
  await writeFile(cfg, config);
  const child = spawn(bin, ["--config", cfg, "--data-dir", join(dir, "data"), "--log-format", "json"], {
    env: {
      ...process.env, KIOSKD_API_ADDR: "127.0.0.1:0", RUST_LOG: "debug",
      // No HQ: point kioskd at an hq-ingest that does not exist.
      ...(hq ? {} : { KIOSKD_HQ_INGEST: join(dir, "no-hq-ingest") }), ...env,
    },
    stdio: ["ignore", "ignore", "pipe"],
  });
  // Never leave a kioskd behind, even when the test run is interrupted.
  const killChild = () => { child.kill("SIGKILL"); rmSync(dir, { recursive: true, force: true }); };
  process.once("exit", killChild);
  for (const sig of ["SIGINT", "SIGTERM"]) process.once(sig, () => { killChild(); process.exit(1); });
  const logs = [];
  const logWaiters = new Set(); // {re, resolve}: resolved by the first log line matching re
  const exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  const base = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`kioskd did not start in 60 s:\n${logs.join("\n")}`)), 60000);
    exited.then(({ code, signal }) => { clearTimeout(timer); reject(new Error(`kioskd exited (${code ?? signal}):\n${logs.join("\n")}`)); });
    createInterface({ input: child.stderr }).on("line", (line) => {
      logs.push(line);
      for (const w of logWaiters) if (w.re.test(line)) { logWaiters.delete(w); w.resolve(line); }
      try {
        const v = JSON.parse(line);
        const msg = v.message ?? v.fields?.message;
        const url = v.url ?? v.fields?.url;
        if (msg === SERVING && url) { clearTimeout(timer); resolve(String(url).replace(/\/$/, "")); }
      } catch { /* not JSON: keep it in the logs */ }
    });
  });

  /** One API call from the test itself (not through the page). */
  async function call(method, path, { body, token } = {}) {
    const headers = {};
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (token) headers.Authorization = `Bearer ${token}`;
    const r = await fetch(base + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await r.text();
    return { status: r.status, body: text ? JSON.parse(text) : null };
  }

  /** The first log line (past or future) matching `re`; rejects after `ms`. */
  function waitForLog(re, ms) {
    const seen = logs.find((l) => re.test(l));
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const w = { re, resolve: (l) => { clearTimeout(timer); resolve(l); } };
      const timer = setTimeout(() => { logWaiters.delete(w); reject(new Error(`no log line matching ${re} in ${ms} ms`)); }, ms);
      logWaiters.add(w);
    });
  }

  async function stop() {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      const killer = setTimeout(() => child.kill("SIGKILL"), 10000);
      await exited;
      clearTimeout(killer);
    }
    await rm(dir, { recursive: true, force: true });
  }

  return { base, logs, call, stop, dir, waitForLog };
}
