// Server-sent events read with fetch(): the kiosk's event streams need the
// bearer token header, which EventSource cannot send. Shared by the kiosk page
// and the staff console (loaded before their own script).
"use strict";

/**
 * Read the text/event-stream at `path` with `token` as bearer, calling
 * onEvent(name, data) with each event's parsed JSON data; onEvent returning
 * false stops reading. Resolves when the stream ends; rejects if it cannot be
 * opened (not 200) or breaks.
 */
async function readEvents(path, token, onEvent, signal) {
  const r = await fetch(path, { headers: { Authorization: "Bearer " + token, Accept: "text/event-stream" }, cache: "no-store", signal });
  if (!r.ok || !r.body) throw new Error(`events: ${r.status}`);
  const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value.replace(/\r\n?/g, "\n");
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      let name = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data += (data ? "\n" : "") + line.slice(5).replace(/^ /, "");
      }
      if (!data) continue; // keep-alive comments
      let parsed;
      try { parsed = JSON.parse(data); } catch { continue; }
      if (onEvent(name, parsed) === false) { reader.cancel().catch(() => {}); return; }
    }
  }
}
