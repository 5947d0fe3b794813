// Drives the live map in headless Chromium (Debian's, over the DevTools
// protocol with playwright-core) as a person would, and prints what it saw
// as one JSON object on stdout; tests/map_browser.rs judges it.
//
//   node tests/browser/map.mjs <map url> <screenshot dir>
//
// Every request to anything but the aggregator (127.0.0.1) is blocked and
// listed: the page must work with no internet.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const [url, outdir] = process.argv.slice(2);
if (!url || !outdir) {
  console.error("usage: node map.mjs <map url> <screenshot dir>");
  process.exit(2);
}
mkdirSync(outdir, { recursive: true });
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const origin = new URL(url).origin;
const out = { url, page_errors: [], console_errors: [], offsite_requests: [], blocked_tiles: 0, screenshots: [] };

const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.on("pageerror", (e) => out.page_errors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") out.console_errors.push(m.text()); });
  await page.route("**/*", (route) => {
    const u = route.request().url();
    const o = new URL(u).origin;
    if (o === origin) return route.continue();
    // The configured tile server is 127.0.0.1 on a closed port: let the
    // browser fail on it by itself; anything else leaves the machine.
    if (new URL(u).hostname === "127.0.0.1") { out.blocked_tiles++; return route.continue(); }
    out.offsite_requests.push(u);
    return route.abort();
  });
  const api = async (path) => {
    const r = await page.request.get(origin + path);
    return { status: r.status(), body: await r.json().catch(() => null) };
  };
  const shot = async (name) => {
    const p = join(outdir, name);
    await page.screenshot({ path: p });
    out.screenshots.push(p);
  };

  await page.goto(url, { waitUntil: "load" });
  await page.waitForSelector("body[data-loaded='1']", { timeout: 20000 });
  // The tile fallback: the configured tiles cannot load.
  await page.waitForSelector("#mapwrap[data-background]", { timeout: 20000 });
  await page.waitForTimeout(300);
  out.background = await page.getAttribute("#mapwrap", "data-background");
  out.note = (await page.textContent("#map-note")) || "";
  out.note_visible = await page.isVisible("#map-note");
  out.grid_lines = await page.locator("#map path.grid-line").count();

  const apiEvents = (await api("/api/events")).body || [];
  out.api_events = apiEvents.map((e) => e.event_id).sort();
  // Every event drawn (the websocket may bring them a moment later).
  // Wait for every id (not a count: a revision may briefly stand beside the one it replaces).
  await page.waitForFunction(
    (ids) => {
      const have = new Set(Array.from(document.querySelectorAll("#map .event"), (e) => e.dataset.eventId));
      return ids.every((id) => have.has(id));
    },
    out.api_events,
    { timeout: 20000 },
  ).catch(() => {});
  await page.waitForTimeout(300);
  const drawn = async () => (await page.$$eval("#map .event", (els) => els.map((e) => e.dataset.eventId))).sort();
  out.drawn_events = await drawn();
  out.ellipses = (await page.$$eval("#map path.sigma1", (els) => els.map((e) => e.getAttribute("data-ellipse-of")))).sort();
  out.header = {
    nodes: await page.textContent("#n-nodes"),
    online: await page.textContent("#n-online"),
    states: await page.textContent("#n-states"),
    events: await page.textContent("#n-events"),
  };
  out.node_states = await page.$$eval("#map .node", (els) => els.map((e) => [e.dataset.nodeId, e.dataset.state, e.dataset.stateShown]));
  out.header.state_time_ms = await page.getAttribute("#n-online", "data-at");
  // Labels: the visible ones must not overlap.
  const labels = async () => page.$$eval("#map .lbl", (els) => {
    const vis = els.filter((l) => !l.classList.contains("hidden")).map((l) => l.getBoundingClientRect());
    let overlaps = 0;
    // (labels are inside their marker's 0-size box: compare page rectangles)
    for (let i = 0; i < vis.length; i++) for (let j = i + 1; j < vis.length; j++) {
      const a = vis[i], b = vis[j];
      if (a.left < b.right && a.right > b.left && a.top < b.bottom && a.bottom > b.top) overlaps++;
    }
    return { total: els.length, visible: vis.length, overlaps };
  });
  out.labels = await labels();
  await shot("map.png");
  // Zoomed out two steps the labels crowd: still none overlaps (some wait for a hover).
  const zoom = await page.evaluate(() => map.getZoom());
  await page.click(".leaflet-control-zoom-out");
  await page.waitForTimeout(500);
  await page.click(".leaflet-control-zoom-out");
  await page.waitForTimeout(700);
  out.zoomed_out = { from: zoom, to: await page.evaluate(() => map.getZoom()), labels: await labels(),
    drawn: (await drawn()).length, enlarged_ellipses: await page.locator("#map path.sigma1[data-enlarged='1']").count() };
  await shot("zoomed-out.png");
  await page.evaluate((z) => map.setZoom(z, { animate: false }), zoom);
  await page.waitForTimeout(500);

  // The drawer: click the event heard by the most nodes.
  const heardBy = (e) => new Set(e.detections.concat(e.outliers).map((d) => d.node_id)).size;
  const byNodes = [...apiEvents].sort((a, b) => heardBy(b) - heardBy(a));
  const target = byNodes[0];
  out.drawer = { event_id: target ? target.event_id : null };
  if (target) {
    const id = target.event_id;
    out.drawer.heard_by = [...new Set(target.detections.concat(target.outliers).map((d) => d.node_id))].sort();
    const marker = page.locator(`#map .event[data-event-id="${id}"] svg`);
    try {
      await marker.click({ timeout: 3000 });
      out.drawer.clicked = "marker";
    } catch {
      // Covered by another symbol at this zoom: the click goes to the marker itself.
      await marker.dispatchEvent("click");
      out.drawer.clicked = "marker (dispatched)";
    }
    await page.waitForSelector(`#drawer[data-event-id="${id}"][data-state='ready']`, { timeout: 30000 }).catch(() => {});
    out.drawer.state = await page.getAttribute("#drawer", "data-state");
    out.drawer.visible = await page.isVisible("#drawer");
    out.drawer.waveforms_attr = await page.getAttribute("#drawer", "data-waveforms");
    out.drawer.text = ((await page.textContent("#drawer-body")) || "").slice(0, 4000);
    out.drawer.pick_rows = await page.locator("#drawer table.picks tr[data-node-id]").count();
    out.drawer.rays = (await page.$$eval("#map path.ray", (els) => els.map((e) => e.getAttribute("data-node-id")))).sort();
    out.drawer.waveforms = await page.$$eval("#drawer .wf", (rows) => rows.map((r) => {
      const ink = (c) => {
        if (!c || !c.width) return 0;
        const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
        const seen = new Set();
        for (let i = 0; i < d.length; i += 4 * 7) seen.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
        return seen.size;
      };
      const spec = r.querySelector("canvas.spec");
      return {
        node_id: r.dataset.nodeId,
        stream: r.dataset.stream,
        wave_colours: ink(r.querySelector("canvas.wave")),
        spec_colours: ink(spec),
        spec_frames: spec ? Number(spec.dataset.frames || 0) : 0,
        play: !!r.querySelector("button.play"),
      };
    }));
    out.drawer.missing = (await page.$$eval("#drawer .missing", (els) => els.map((e) => e.dataset.nodeId))).sort();
    await shot("drawer.png");
    await page.locator("#waveforms").scrollIntoViewIfNeeded();
    await page.evaluate(() => { const w = document.getElementById("waveforms"); document.getElementById("drawer").scrollTop = w.offsetTop - 40; });
    await page.waitForTimeout(100);
    await shot("drawer-waveforms.png");
    // One click plays a snippet (WebAudio): the button turns to "stop".
    const play = page.locator("#drawer .wf button.play").first();
    if (await play.count()) {
      await play.click();
      await page.waitForTimeout(200);
      out.drawer.play_button_after_click = await play.textContent();
      out.drawer.play_marked = await play.getAttribute("data-played");
    }
    await page.click("#drawer-close");
    await page.waitForTimeout(200);
    out.drawer.closed = !(await page.isVisible("#drawer"));
  }

  // The confidence filter at 0.90, then back to 0.
  const setConf = (v) => page.$eval("#min-conf", (el, v) => { el.value = v; el.dispatchEvent(new Event("input", { bubbles: true })); }, v);
  await setConf("0.9");
  await page.waitForTimeout(400);
  out.conf_filter = { min: 0.9, drawn: await drawn() };
  await setConf("0");
  // The kind filter: "explosion" unticked, then ticked again.
  await page.click("#kinds input[data-kind='explosion']");
  await page.waitForTimeout(400);
  out.kind_filter = { hidden: "explosion", drawn: await drawn() };
  await page.click("#kinds input[data-kind='explosion']");
  await page.waitForTimeout(400);
  out.after_filters = await drawn();

  // The time filter: the "from" slider to its middle hides earlier events.
  await page.$eval("#time-from", (el) => { el.value = "500"; el.dispatchEvent(new Event("input", { bubbles: true })); });
  await page.waitForTimeout(400);
  const fromMs = await page.getAttribute("#filters", "data-from-ms");
  out.time_filter = {
    from_ms: fromMs === null || fromMs === "" ? null : Number(fromMs),
    drawn: await drawn(),
    listed: (await page.$$eval("#events li[data-event-id]", (els) => els.map((e) => e.dataset.eventId))).sort(),
    label: await page.textContent("#time-text"),
  };
  out.labels_filtered = await labels();
  await shot("time-filter.png");
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
