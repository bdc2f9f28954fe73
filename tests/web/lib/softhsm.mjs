// Blank UKEYs for the staff batch test: a SoftHSM2 token directory of its own
// (SOFTHSM2_CONF) holding N tokens in the factory state — initialised with a
// transport SO PIN, user PIN never set — as real UKEYs ship. Needs the Debian
// packages softhsm2 and opensc (pkcs11-tool).
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

const MODULES = ["/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so", "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so"];

export function softhsmModule() {
  const found = MODULES.find((m) => existsSync(m));
  if (!found) throw new Error(`no SoftHSM2 module in ${MODULES.join(", ")} (apt-get install softhsm2)`);
  return found;
}

/** Make `count` factory-state tokens labelled blank-1..N; returns {conf, module, dir, remove()}. */
export async function blankTokens(count, soPin) {
  const module = softhsmModule();
  const dir = await mkdtemp(join(tmpdir(), "kioskd-web-hsm-"));
  await mkdir(join(dir, "tokens"));
  const conf = join(dir, "softhsm2.conf");
  await writeFile(conf, `directories.tokendir = ${join(dir, "tokens")}\nobjectstore.backend = file\nlog.level = ERROR\n`);
  const env = { ...process.env, SOFTHSM2_CONF: conf };
  const tool = (...args) => execFileSync("pkcs11-tool", ["--module", module, ...args], { env, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  for (let i = 1; i <= count; i += 1) {
    // SoftHSM2 always offers one uninitialised slot: find it by its state.
    const slots = tool("--list-slots");
    const free = slots.split(/\n(?=Slot )/).find((b) => /token state:\s+uninitialized/.test(b));
    const id = free && free.match(/^Slot \d+ \((0x[0-9a-f]+)\)/);
    if (!id) throw new Error(`no free SoftHSM2 slot:\n${slots}`);
    tool("--init-token", "--slot", id[1], "--so-pin", soPin, "--label", `blank-${i}`);
  }
  return { conf, module, dir, remove: () => rm(dir, { recursive: true, force: true }) };
}
