// The dashboard in a real browser (Debian's Chromium, headless) against
// real drover processes: live numbers move under load, actions take effect
// and say so, a restarted hub is found again, an admin key is asked for.
// Screenshots go to target/screenshots (DROVER_SCREENSHOTS elsewhere).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { browser, drover, load, number, screenshot } from "./harness.mjs";

const DASHBOARD = /the dashboard is at (http:\/\/[^\s/]+)\//;
const LISTENING = /listening on (http:\/\/[\d.:]+)/;

let chromium;
before(async () => {
  chromium = await browser();
});
after(async () => {
  await chromium?.close();
});

async function open(url) {
  const context = await chromium.newContext({ viewport: { width: 1440, height: 900 } });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  // What the content security policy blocks is only said on the console.
  page.on("console", (m) => {
    if (m.type() === "error" && m.text().includes("Content Security Policy")) errors.push(m.text());
  });
  page.on("dialog", (d) => d.accept());
  await page.goto(url + "/");
  return { page, errors, close: () => context.close() };
}

async function backends(url) {
  const r = await fetch(url + "/admin/backends");
  return (await r.json()).backends;
}

test("the demo's dashboard is live under load, and a drain takes effect and shows", async () => {
  const demo = await drover(["demo", "--listen", "127.0.0.1:0"], DASHBOARD);
  const { page, errors, close } = await open(demo.url);
  let stopLoad = async () => {};
  let extra = null;
  try {
    await page.waitForSelector("#live.on");
    await page.waitForSelector('[data-backend="studio-2"]');
    assert.equal(await page.locator(".card .badge.good", { hasText: "healthy" }).count(), 2);
    assert.equal(await number(page, "#kpi-rps"), 0);
    assert.equal(await page.textContent("#kpi-waiting"), "0");

    // Six clients for one model with a slot on each server: two run, four wait.
    stopLoad = load(demo.url, "philosophy-101", 6);
    await page.waitForFunction(() => parseFloat(document.querySelector("#kpi-rps").textContent) > 0);
    await page.waitForFunction(() => Number(document.querySelector("#kpi-waiting").textContent) > 0);
    await page.waitForFunction(() => document.querySelector("#kpi-slots").textContent.startsWith("2 /"));
    await page.waitForSelector('[data-backend="studio-1"] .slots i.busy');
    await screenshot(page, "fleet-under-load");

    await page.click('a[data-tab="queue"]');
    await page.locator("#queue-models tbody tr", { hasText: "philosophy-101" }).waitFor();
    await page.waitForFunction(() => {
      const cells = [...document.querySelectorAll("#queue-models tbody tr")].find((r) => r.textContent.includes("philosophy-101"));
      return cells && Number(cells.children[1].textContent) > 0;
    });
    assert.match(await page.textContent("#queue-clients"), /anonymous/);
    await screenshot(page, "queue");

    await page.click('a[data-tab="models"]');
    await page.waitForSelector('#models-table tr[data-model="philosophy-101"] .slots i.busy');
    await screenshot(page, "models");

    await page.click('a[data-tab="traffic"]');
    await page.waitForSelector("#chart-requests svg path");
    // Numbers that move: the first-token chart has a point once answers came.
    await page.waitForFunction(() => document.querySelectorAll("#chart-ttft svg path[stroke]").length >= 2);
    await page.waitForSelector("#traffic-backends td.mono");
    const before = await page.locator("#traffic-models tbody tr", { hasText: "philosophy-101" }).locator("td").nth(1).textContent();
    await page.waitForFunction(
      (n) => {
        const row = [...document.querySelectorAll("#traffic-models tbody tr")].find((r) => r.textContent.includes("philosophy-101"));
        return row && Number(row.children[1].textContent) > n;
      },
      Number(before),
    );
    await screenshot(page, "traffic");

    // Drain studio-1 from the page: the toast confirms, the card says so,
    // and the hub holds it.
    await page.click('a[data-tab="fleet"]');
    await page.click('[data-backend="studio-1"] button:text("Drain")');
    await page.locator(".toast", { hasText: "studio-1: draining" }).waitFor();
    await page.waitForSelector('[data-backend="studio-1"] .badge:text("draining")');
    assert.equal((await backends(demo.url)).find((b) => b.name === "studio-1").draining, true);
    // Work goes to studio-2 only now: studio-1's slot empties.
    await page.waitForFunction(() => !document.querySelector('[data-backend="studio-1"] .slots i.busy'));
    await screenshot(page, "drained");
    await page.click('[data-backend="studio-1"] button:text("Undrain")');
    await page.locator(".toast", { hasText: "studio-1: taking work again" }).waitFor();
    await page.waitForSelector('[data-backend="studio-1"] .badge:text("draining")', { state: "detached" });
    assert.equal((await backends(demo.url)).find((b) => b.name === "studio-1").draining, false);

    // Model actions: pin and unpin, unload from one server and load back,
    // each confirmed; the load shows while it runs.
    await page.click('a[data-tab="models"]');
    const model = "qwen2.5-7b-instruct";
    const row = page.locator(`#models-table tr[data-model="${model}"]`);
    const chip = row.locator(".chip", { hasText: "studio-1" });
    await row.locator('button:text-is("Pin")').click();
    await page.locator(".toast", { hasText: `${model} pinned` }).waitFor();
    await row.locator(".badge.pin").first().waitFor();
    await row.locator('button:text-is("Unpin")').click();
    await page.locator(".toast", { hasText: `${model} unpinned` }).waitFor();
    await chip.locator('button:text-is("unload")').click();
    await page.locator(".toast", { hasText: `${model} unloaded on studio-1` }).waitFor();
    await chip.locator('.badge:text-is("unloaded")').waitFor();
    await chip.locator('button:text-is("load")').click();
    await chip.locator('.badge:text-is("loading")').waitFor();
    await screenshot(page, "loading");
    await page.locator(".toast", { hasText: `${model} loaded on studio-1 in` }).waitFor();
    await chip.locator('.badge:text-is("loaded")').waitFor();
    await page.click('a[data-tab="fleet"]');

    // The same server under a second name is refused, naming it; a server
    // of its own is added from the page, probed, then removed.
    const studio2 = demo.output().match(/backend\s+studio-2\s+(http:\/\/\S+)/)[1];
    await page.fill('#add-backend input[name="url"]', studio2);
    await page.fill('#add-backend input[name="name"]', "again");
    await page.click('#add-backend button[type="submit"]');
    await page.locator(".toast.error", { hasText: '"studio-2"' }).waitFor();
    extra = await drover(["sim", "--dialect", "lmstudio", "--listen", "127.0.0.1:0", "--models", "extra-model"], LISTENING);
    await page.fill('#add-backend input[name="url"]', extra.url);
    await page.fill('#add-backend input[name="name"]', "extra");
    await page.click('#add-backend button[type="submit"]');
    await page.locator(".toast", { hasText: "extra added" }).waitFor();
    await page.waitForSelector('[data-backend="extra"] .badge:text("healthy")');
    await page.click('[data-backend="extra"] button:text("Remove")');
    await page.locator(".toast", { hasText: "extra removed" }).waitFor();
    await page.waitForSelector('[data-backend="extra"]', { state: "detached" });
    assert.equal((await backends(demo.url)).some((b) => b.name === "extra"), false);

    // An action the hub refuses shows its reason.
    await page.fill('#add-backend input[name="url"]', "ftp://nowhere");
    await page.click('#add-backend button[type="submit"]');
    const refused = page.locator(".toast.error", { hasText: "ftp" });
    await refused.waitFor();
    assert.match(await refused.textContent(), /ftp|scheme|http/i);

    await stopLoad();
    stopLoad = async () => {};
    await page.waitForFunction(() => Number(document.querySelector("#kpi-waiting").textContent) === 0);

    // Every key shows on the Keys tab, used or not: its kind, limits, state.
    const made = await fetch(demo.url + "/admin/keys", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ name: "nightly", limits: { requests_per_minute: 60, max_concurrent: 2 } }),
    });
    assert.equal(made.status, 201);
    await page.click('a[data-tab="keys"]');
    const keyRow = page.locator('#keys-table tr[data-key="nightly"]');
    await keyRow.waitFor();
    assert.match(await keyRow.textContent(), /client\s*active\s*60 rpm · 2 at once/);
    await screenshot(page, "keys");
    assert.deepEqual(errors, []);
  } finally {
    await stopLoad();
    await close();
    await demo.stop();
    await extra?.stop();
  }
});

// A backend may list a model whose id has dot segments; a browser folds
// them in a URL (`/admin/models/../models/l1/pin` is `/admin/models/l1/pin`
// to it), so an action on it must not travel in the path, or it would act
// on another backend's `l1`.
test("an action on a model id with dot segments acts on that model", async () => {
  const hostile = await drover(["sim", "--dialect", "lmstudio", "--listen", "127.0.0.1:0", "--models", "../models/l1"], LISTENING);
  const plain = await drover(["sim", "--dialect", "lmstudio", "--listen", "127.0.0.1:0", "--models", "l1"], LISTENING);
  const hub = await drover(
    ["serve", "--listen", "127.0.0.1:0", "--backend", `${hostile.url},name=hostile`, "--backend", `${plain.url},name=plain`],
    LISTENING,
  );
  const { page, errors, close } = await open(hub.url);
  const pinned = async () => {
    const listed = await backends(hub.url);
    return Object.fromEntries(listed.flatMap((b) => b.models.map((m) => [m.id, m.pinned])));
  };
  try {
    await page.waitForSelector("#live.on");
    await page.click('a[data-tab="models"]');
    const row = page.locator('#models-table tr[data-model="../models/l1"]');
    await row.waitFor();
    await page.locator('#models-table tr[data-model="l1"]').waitFor();
    await row.locator('button:text-is("Pin")').click();
    await page.locator(".toast", { hasText: "../models/l1 pinned" }).waitFor();
    assert.deepEqual(await pinned(), { "../models/l1": true, l1: false });
    assert.deepEqual(errors, []);
  } finally {
    await close();
    await hub.stop();
    await plain.stop();
    await hostile.stop();
  }
});

test("a restarted hub is found again by itself", async () => {
  const sim = await drover(["sim", "--dialect", "openai", "--listen", "127.0.0.1:0", "--models", "m"], LISTENING);
  let hub = await drover(["serve", "--listen", "127.0.0.1:0", "--backend", `${sim.url},name=s`], LISTENING);
  const url = hub.url;
  const { page, errors, close } = await open(url);
  try {
    await page.waitForSelector("#live.on");
    await page.waitForSelector('[data-backend="s"]');
    await hub.stop();
    await page.waitForSelector("#live.off");
    assert.equal(await page.textContent("#live"), "reconnecting");
    hub = await drover(["serve", "--listen", url.replace("http://", ""), "--backend", `${sim.url},name=s2`], LISTENING);
    await page.waitForSelector('[data-backend="s2"]', { timeout: 20000 });
    await page.waitForSelector("#live.on");
    assert.deepEqual(errors, []);
  } finally {
    await close();
    await hub.stop();
    await sim.stop();
  }
});

test("with an admin key the dashboard asks for it, and a wrong one is refused", async () => {
  const sim = await drover(["sim", "--dialect", "openai", "--listen", "127.0.0.1:0", "--models", "m"], LISTENING);
  const key = "dashboard-test-admin-key";
  const hub = await drover(["serve", "--listen", "127.0.0.1:0", "--backend", `${sim.url},name=s`], LISTENING, {
    DROVER_ADMIN_KEY: key,
  });
  const { page, close } = await open(hub.url);
  try {
    await page.waitForSelector("#signin:not([hidden])");
    assert.match(await page.textContent("#signin-why"), /admin key/);
    await screenshot(page, "sign-in");
    await page.fill('#signin input[name="key"]', "not-the-key");
    await page.click('#signin button[type="submit"]');
    await page.waitForSelector("#signin:not([hidden])");
    await page.fill('#signin input[name="key"]', key);
    await page.click('#signin button[type="submit"]');
    await page.waitForSelector('[data-backend="s"]');
    await page.waitForSelector("#live.on");
    // Actions go with the key too.
    await page.click('[data-backend="s"] button:text("Drain")');
    await page.locator(".toast", { hasText: "s: draining" }).waitFor();
  } finally {
    await close();
    await hub.stop();
    await sim.stop();
  }
});

// The page tells the truth when a backend is down: the header counts it
// out, its badge says "down" (no breaker jargon), what it last said is
// greyed as not known now, the queue says each model's state, the row's
// Unload says it acts everywhere and asks first, and a draining backend
// offers no load.
test("a backend that is down is shown as down, and actions say what they do", async () => {
  const up = await drover(["sim", "--dialect", "lmstudio", "--listen", "127.0.0.1:0", "--models", "m,n", "--loaded", "m,n"], LISTENING);
  const gone = await drover(["sim", "--dialect", "lmstudio", "--listen", "127.0.0.1:0", "--models", "m", "--loaded", "m"], LISTENING);
  const hub = await drover(
    ["serve", "--listen", "127.0.0.1:0", "--backend", `${up.url},name=up`, "--backend", `${gone.url},name=gone`],
    LISTENING,
    { DROVER_HEALTH__PROBE_INTERVAL: "200ms" },
  );
  const { page, errors, close } = await open(hub.url);
  const dialogs = [];
  page.removeAllListeners("dialog");
  page.on("dialog", (d) => {
    dialogs.push(d.message());
    d.accept();
  });
  try {
    await page.waitForSelector('[data-backend="gone"] .badge:text("healthy")');
    await gone.stop();
    await page.waitForSelector('[data-backend="gone"] .badge:text-is("down")');
    await page.waitForFunction(() => document.querySelector("#kpi-backends").textContent === "1 of 2 backends healthy");
    assert.equal(await page.locator("text=half open").count(), 0);
    assert.equal(await page.locator('[data-backend="gone"] tr.unknown').count(), 1);
    assert.equal(await page.locator('[data-backend="gone"] .badge.good', { hasText: "loaded" }).count(), 0);
    await screenshot(page, "backend-down");

    await page.click('a[data-tab="queue"]');
    const state = page.locator("#queue-models tbody tr", { hasText: "n" }).locator("td").nth(4);
    await page.waitForFunction(() => [...document.querySelectorAll("#queue-models tbody tr td:nth-child(5)")].every((td) => td.textContent.trim() !== ""));
    assert.equal((await state.textContent()).trim(), "ready");

    await page.click('a[data-tab="models"]');
    const row = page.locator('#models-table tr[data-model="n"]');
    await row.locator('button:text-is("Unload everywhere")').click();
    await page.locator(".toast", { hasText: "n unloaded" }).waitFor();
    assert.match(dialogs.at(-1), /Unload n from up\?/);

    // A draining backend offers no load.
    await page.click('a[data-tab="fleet"]');
    await page.click('[data-backend="up"] button:text("Drain")');
    await page.locator(".toast", { hasText: "up: draining" }).waitFor();
    await page.click('a[data-tab="models"]');
    await page.waitForFunction(() => !document.querySelector('#models-table tr[data-model="n"] .chip button'));
    assert.deepEqual(errors, []);
  } finally {
    await close();
    await hub.stop();
    await up.stop();
    await gone.stop().catch(() => {});
  }
});

// The page updates what it shows in place, keyed by backend and model: a
// card or row that stays is the same element after an update, so a focused
// button can still be pressed from the keyboard and a selection can still
// be copied. The memory line shows the room for models the hub counts.
test("updates keep the cards and rows, with focus and selection, in place", async () => {
  const sim = await drover(
    ["sim", "--dialect", "lmstudio", "--listen", "127.0.0.1:0", "--models", "m,n", "--loaded", "m", "--slots", "2", "--ttft-ms", "300"],
    LISTENING,
  );
  const hub = await drover(
    ["serve", "--listen", "127.0.0.1:0", "--backend", `${sim.url},name=s,memory=10GiB,slot_buffer=1GiB,system=2GiB,margin=1GiB`],
    LISTENING,
  );
  const { page, errors, close } = await open(hub.url);
  let stopLoad = load(hub.url, "m", 1);
  // Waits for `n` more overviews from the hub: each one retitles #live.
  const updates = async (n) => {
    for (let i = 0; i < n; i++) {
      const seen = await page.getAttribute("#live", "title");
      await page.waitForFunction((t) => document.querySelector("#live").title !== t, seen);
    }
  };
  // Marks elements, focuses one and selects the text of another; `held`
  // says later which of them are still the same elements, and held.
  const hold = async (marked, focused, selected) => {
    for (const l of marked) await l.evaluate((e) => (e.kept = true));
    await focused.focus();
    return selected.evaluate((e) => {
      const range = document.createRange();
      range.selectNodeContents(e);
      getSelection().removeAllRanges();
      getSelection().addRange(range);
      return getSelection().toString();
    });
  };
  const held = async (marked, focused) => ({
    kept: await Promise.all(marked.map((l) => l.evaluate((e) => e.kept === true))),
    focused: await focused.evaluate((e) => e === document.activeElement),
    selection: await page.evaluate(() => getSelection().toString()),
  });
  const all = (marked) => marked.map(() => true);
  try {
    await page.waitForSelector("#live.on");
    const card = page.locator('[data-backend="s"]');
    const row = (m) => card.locator("tr", { has: page.locator("td.mono", { hasText: new RegExp(`^${m}$`) }) });
    await row("n").waitFor();
    let marked = [card, row("n"), row("m")];
    const drain = card.locator('button:text-is("Drain")');
    assert.equal(await hold(marked, drain, row("n").locator("td.mono")), "n");
    await updates(2);
    assert.deepEqual(await held(marked, drain), { kept: all(marked), focused: true, selection: "n" });
    // The focused button still acts (with no load: a drained hub's only
    // backend would keep it waiting).
    await stopLoad();
    stopLoad = async () => {};
    await page.keyboard.press("Enter");
    await page.locator(".toast", { hasText: "s: draining" }).waitFor();
    await card.locator('.badge:text("draining")').waitFor();
    assert.equal(await card.evaluate((e) => e.kept), true);

    await page.click('a[data-tab="models"]');
    const model = page.locator('#models-table tr[data-model="m"]');
    await model.locator(".chip").waitFor();
    marked = [model, model.locator(".chip"), page.locator('#models-table tr[data-model="n"]')];
    const pin = model.locator('button:text-is("Pin")');
    assert.equal(await hold(marked, pin, model.locator("td.mono")), "m");
    await updates(2);
    assert.deepEqual(await held(marked, pin), { kept: all(marked), focused: true, selection: "m" });

    // The room for models is the hub's: memory less the system, the margin
    // and a buffer for each slot of what is in memory. Unloading `m` gives
    // back its slots' buffers, and the meter empties, in place.
    await page.click('a[data-tab="fleet"]');
    const gib = (n) => (n / 2 ** 30).toFixed(1) + " GiB";
    const memory = card.locator(".memory");
    const [before] = await backends(hub.url);
    assert.match(await memory.textContent(), new RegExp(`of ${gib(before.memory_for_models)}`));
    await memory.evaluate((e) => (e.kept = true));
    const unloaded = await fetch(hub.url + "/admin/models/unload", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "m", backend: "s" }),
    });
    assert.equal(unloaded.status, 200, await unloaded.text());
    const [after] = await backends(hub.url);
    assert.ok(after.memory_for_models > before.memory_for_models, JSON.stringify([before, after]));
    await page.waitForFunction(
      ([text]) => {
        const m = document.querySelector('[data-backend="s"] .memory');
        return m.textContent.includes(text) && m.querySelector(".meter i").style.width === "0%";
      },
      [`models 0 B of ${gib(after.memory_for_models)}`],
    );
    assert.equal(await memory.evaluate((e) => e.kept), true);
    assert.deepEqual(errors, []);
  } finally {
    await stopLoad();
    await close();
    await hub.stop();
    await sim.stop();
  }
});

// Polls `check` (in this process, not the page) until it holds.
async function until(what, check, ms = 20000) {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function post(url, path, body) {
  const r = await fetch(url + path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  const text = await r.text();
  assert.equal(r.status, 200, `${path}: ${text}`);
  return JSON.parse(text);
}

// A batch of `n` chat lines for `model`, uploaded and started as the
// anonymous client; the batch as the hub answered.
async function startBatch(url, model, n) {
  const lines = Array.from({ length: n }, (_, i) =>
    JSON.stringify({ custom_id: `l${i}`, method: "POST", url: "/v1/chat/completions", body: { model, messages: [{ role: "user", content: `q${i}` }] } }));
  const form = new FormData();
  form.append("purpose", "batch");
  form.append("file", new Blob([lines.join("\n") + "\n"]), "in.jsonl");
  const uploaded = await fetch(url + "/v1/files", { method: "POST", body: form });
  const text = await uploaded.text();
  assert.equal(uploaded.status, 200, text);
  const file = JSON.parse(text);
  return post(url, "/v1/batches", { input_file_id: file.id, endpoint: "/v1/chat/completions", completion_window: "1h" });
}

// The Jobs tab: the store's jobs by state, each batch's progress as its
// lines end, dead jobs with their last error; Retry queues a dead job
// again (the next update no longer shows it dead) and Cancel stops a
// batch, each through the management API with the page's key.
test("the Jobs tab shows a batch's progress and a dead job, and Retry retries it", async () => {
  const bad = await drover(["sim", "--dialect", "openai", "--listen", "127.0.0.1:0", "--models", "m", "--error-rate", "1"], LISTENING);
  const slow = await drover(["sim", "--dialect", "openai", "--listen", "127.0.0.1:0", "--models", "s", "--ttft-ms", "300"], LISTENING);
  // Two jobs in the hub's hands at a time: a batch's other lines wait in
  // the store, where a cancel reaches them at once.
  const hub = await drover(
    ["serve", "--listen", "127.0.0.1:0", "--backend", `${bad.url},name=bad`, "--backend", `${slow.url},name=slow`],
    LISTENING,
    { DROVER_JOBS__WINDOW: "2" },
  );
  let good = null;
  const { page, errors, close } = await open(hub.url);
  const shown = (state) => page.textContent(`#jobs-states [data-state="${state}"] b`).then(Number);
  try {
    await page.waitForSelector("#live.on");
    await page.click('a[data-tab="jobs"]');
    await page.waitForSelector('#jobs-states [data-state="queued"]');
    assert.equal(await shown("dead"), 0);
    assert.equal(await page.isHidden("#jobs-none"), true);

    // A job whose only backend fails it dies after its one attempt.
    const doomed = await post(hub.url, "/v1/jobs", {
      endpoint: "/v1/chat/completions",
      body: { model: "m", messages: [{ role: "user", content: "hi" }] },
      max_attempts: 1,
    });
    const dead = page.locator(`#jobs-dead tr[data-job="${doomed.id}"]`);
    await dead.waitFor();
    assert.match(await dead.textContent(), /500/);
    await page.waitForFunction(() => document.querySelector('#jobs-states [data-state="dead"] b').textContent === "1");

    // Eight lines, one at a time, 300 ms each: the bar fills as they end.
    const batch = await startBatch(hub.url, "s", 8);
    const row = page.locator(`#jobs-batches tr[data-batch="${batch.id}"]`);
    await row.waitFor();
    const done = (text) => Number((text.match(/(\d+) of 8 done/) || [])[1]);
    await page.waitForFunction((id) => {
      const r = document.querySelector(`#jobs-batches tr[data-batch="${id}"]`);
      const m = r && r.textContent.match(/(\d+) of 8 done/);
      return m && Number(m[1]) > 0 && Number(m[1]) < 8;
    }, batch.id);
    const width = await row.locator(".batchbar i.done").evaluate((i) => parseFloat(i.style.width));
    assert.ok(width > 0 && width < 100, `the bar is partly full: ${width}%`);
    await screenshot(page, "jobs");
    await row.locator('.badge:text-is("completed")').waitFor();
    assert.equal(done(await row.textContent()), 8);
    assert.equal(await row.locator(".batchbar i.done").evaluate((i) => i.style.width), "100%");

    // A backend that serves `m` well; then Retry on the dead job: the page
    // says so, the job leaves the dead list, and it completes there.
    good = await drover(["sim", "--dialect", "openai", "--listen", "127.0.0.1:0", "--models", "m"], LISTENING);
    const added = await fetch(hub.url + "/admin/backends", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ url: good.url, name: "good", kind: "openai" }),
    });
    assert.equal(added.status, 201);
    await until("the hub knows good's models", async () =>
      (await backends(hub.url)).find((b) => b.name === "good")?.models.length > 0);
    // Focused, the button outlives the updates, and Enter presses it.
    const retry = dead.locator('button:text-is("Retry")');
    await retry.focus();
    for (let i = 0; i < 2; i++) {
      const seen = await page.getAttribute("#live", "title");
      await page.waitForFunction((t) => document.querySelector("#live").title !== t, seen);
    }
    assert.equal(await retry.evaluate((e) => e === document.activeElement), true);
    await page.keyboard.press("Enter");
    await page.locator(".toast", { hasText: `${doomed.id} queued again` }).waitFor();
    await dead.waitFor({ state: "detached" });
    await page.waitForFunction(() => document.querySelector('#jobs-states [data-state="dead"] b').textContent === "0");
    await until("the retried job completes", async () =>
      (await (await fetch(`${hub.url}/admin/jobs/${doomed.id}`)).json()).state === "completed");

    // Cancel on a batch under way stops it: its waiting lines at once.
    const long = await startBatch(hub.url, "s", 20);
    const longRow = page.locator(`#jobs-batches tr[data-batch="${long.id}"]`);
    await longRow.locator('button:text-is("Cancel")').click();
    await page.locator(".toast", { hasText: `${long.id}: cancelling` }).waitFor();
    await longRow.locator('.badge:text-is("cancelled")').waitFor();
    assert.equal(await longRow.locator("button").count(), 0);
    assert.deepEqual(errors, []);
  } finally {
    await close();
    await hub.stop();
    await good?.stop();
    await slow.stop();
    await bad.stop();
  }
});

test("a hub that keeps no jobs says so on the Jobs tab", async () => {
  const sim = await drover(["sim", "--dialect", "openai", "--listen", "127.0.0.1:0", "--models", "m"], LISTENING);
  // No data directory anywhere: no store.
  const hub = await drover(["serve", "--listen", "127.0.0.1:0", "--backend", `${sim.url},name=s`], LISTENING, {
    DROVER_DATA_DIR: undefined,
    HOME: undefined,
    XDG_DATA_HOME: undefined,
  });
  const { page, errors, close } = await open(hub.url);
  try {
    await page.waitForSelector("#live.on");
    await page.click('a[data-tab="jobs"]');
    await page.waitForSelector("#jobs-none:not([hidden])");
    assert.match(await page.textContent("#jobs-none"), /keeps no jobs/);
    assert.equal(await page.isHidden("#jobs-store"), true);
    assert.deepEqual(errors, []);
  } finally {
    await close();
    await hub.stop();
    await sim.stop();
  }
});

// The Workers tab: each worker with its capabilities, tasks in flight and
// last heartbeat; tasks by state; the last plans, a refused one with the
// model's answer. Drain reaches the worker, which finishes and leaves.
test("the Workers tab shows a worker, its tasks and a refused plan, and Drain drains it", async () => {
  // A server without structured output: a plan it answers is refused.
  const sim = await drover(["sim", "--dialect", "openai", "--listen", "127.0.0.1:0", "--models", "m", "--ignores-response-format"], LISTENING);
  const hub = await drover(["serve", "--listen", "127.0.0.1:0", "--backend", `${sim.url},name=s`], LISTENING, {
    DROVER_WORKERS__HEARTBEAT: "1s",
  });
  const worker = await drover(
    ["worker", "--hub", hub.url, "--name", "shouter", "--capability", "upper,max=2",
      "--description", "Shouts its input.", "--", "sh", "-c", "sleep 1; tr a-z A-Z"],
    /worker (wrk_\w+) /,
  );
  const { page, errors, close } = await open(hub.url);
  try {
    await page.waitForSelector("#live.on");
    await page.click('a[data-tab="workers"]');
    const row = page.locator(`#workers-table tr[data-worker="${worker.url}"]`);
    await row.waitFor();
    assert.match(await row.textContent(), /shouter/);
    assert.match(await row.textContent(), /upper ×2/);

    const task = await post(hub.url, "/v1/tasks", { capability: "upper", input: "hello" });
    await page.waitForFunction((id) =>
      document.querySelector(`#workers-table tr[data-worker="${id}"] td.num`).textContent === "1", worker.url);
    await page.waitForFunction(() => document.querySelector('#tasks-states [data-state="completed"] b').textContent === "1");
    assert.equal((await (await fetch(`${hub.url}/v1/tasks/${task.id}`)).json()).response.body, "HELLO");

    // The server ignores the plan's JSON schema and answers in words: the
    // plan is refused, and shown with what the model said.
    const refused = await fetch(`${hub.url}/v1/tasks/plan`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ request: "shout hello", model: "m" }),
    }).then((r) => r.json());
    const plan = page.locator(`#plans-table tr[data-plan="${refused.plan.id}"]`);
    await plan.waitFor();
    assert.match(await plan.textContent(), /refused/);
    assert.match(await plan.textContent(), /the model answered: /);
    await screenshot(page, "workers");

    await row.locator("button", { hasText: "Drain" }).click();
    await page.waitForSelector("#workers-table .empty");
    assert.match(await page.textContent("#workers-table"), /No workers/);
    assert.deepEqual(errors, []);
  } finally {
    await close();
    await worker.stop();
    await hub.stop();
    await sim.stop();
  }
});

// The Nodes tab: each machine that joined, up or down, its version (drift
// from the hub's flagged), CPUs, memory and GPUs.
test("the Nodes tab shows a joined machine, its GPUs and its version drift", async () => {
  const hub = await drover(["serve", "--listen", "127.0.0.1:0"], LISTENING);
  const { page, errors, close } = await open(hub.url);
  try {
    const made = await post(hub.url, "/admin/nodes/tokens", {});
    const joined = await post(hub.url, "/v1/nodes/join", {
      token: made.token, name: "gpu-box", version: "0.0.9",
      facts: { hostname: "gpu-box", os: "linux", arch: "x86_64", cpus: 16,
        memory_total_bytes: 64 * 2 ** 30, memory_available_bytes: 48 * 2 ** 30,
        gpus: [{ name: "RTX 4090", memory_total_bytes: 24 * 2 ** 30, memory_used_bytes: 0 }] },
    });
    await page.waitForSelector("#live.on");
    await page.click('a[data-tab="nodes"]');
    const row = page.locator(`#nodes-table tr[data-node="${joined.node_id}"]`);
    await row.waitFor();
    const text = await row.textContent();
    assert.match(text, /gpu-box/);
    assert.match(text, /0\.0\.9 \(drift\)/);
    assert.match(text, /48\.0 GiB of 64\.0 GiB/);
    assert.match(text, /RTX 4090 24\.0 GiB/);
    assert.match(await page.textContent("#nodes-summary"), /1 node, 1 not on /);

    // Its agent's services, with their buttons; drain and Stop All.
    const beat = await fetch(`${hub.url}/v1/nodes/${joined.node_id}/heartbeat`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${joined.credential}` },
      body: JSON.stringify({ version: "0.0.9", facts: { hostname: "gpu-box", os: "linux", arch: "x86_64", cpus: 16,
        memory_total_bytes: 64 * 2 ** 30, memory_available_bytes: 48 * 2 ** 30 },
        services: [{ name: "llama", state: "running", pid: 42, restarts: 1, last_exit: "exited with status 1" },
                   { name: "ollama", state: "stopped" }] }),
    });
    assert.equal(beat.status, 200);
    const llama = row.locator('[data-service="llama"]');
    await llama.waitFor();
    assert.match(await llama.textContent(), /llama: running.*pid 42, 1 restarts, last exited with status 1/);
    await llama.locator("button", { hasText: "Restart" }).click();
    await page.waitForSelector("text=gpu-box: restart llama asked");
    await row.locator('[data-service="ollama"] button', { hasText: /^Start$/ }).click();
    await page.waitForSelector("text=gpu-box: start ollama asked");
    await row.locator("button", { hasText: "Drain" }).click();
    await row.locator("button", { hasText: "Undrain" }).waitFor();
    const listed = await fetch(`${hub.url}/admin/nodes`).then((r) => r.json());
    assert.equal(listed.nodes[0].draining, true);
    await page.click("#stop-all");
    await page.waitForSelector("text=every node: stop all services asked");
    // What the agent would take: the three commands, in order.
    const taken = await fetch(`${hub.url}/v1/nodes/${joined.node_id}/commands`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${joined.credential}` },
      body: JSON.stringify({ wait_s: 0 }),
    }).then((r) => r.json());
    assert.deepEqual(taken.commands.map((c) => [c.action, c.service]),
      [["restart", "llama"], ["start", "ollama"], ["stop", ""]]);
    await screenshot(page, "nodes");

    // A service's logs: the agent (here, the test with the node's
    // credential) answers the command, and the dashboard shows the tail.
    await llama.locator("button", { hasText: "Logs" }).click();
    const node = { "content-type": "application/json", authorization: `Bearer ${joined.credential}` };
    let asked;
    for (let i = 0; i < 50 && !asked; i++) {
      const r = await fetch(`${hub.url}/v1/nodes/${joined.node_id}/commands`, { method: "POST", headers: node, body: JSON.stringify({ wait_s: 1 }) });
      if (r.status === 200) asked = (await r.json()).commands[0];
    }
    assert.deepEqual([asked.action, asked.service], ["logs", "llama"]);
    const answered = await fetch(`${hub.url}/v1/nodes/${joined.node_id}/commands/${asked.id}`, {
      method: "POST", headers: node, body: JSON.stringify({ ok: true, result: "main: server is listening on 127.0.0.1:8080\n" }),
    });
    assert.equal(answered.status, 204);
    await page.waitForSelector("#logs-text:has-text('server is listening on 127.0.0.1:8080')");
    assert.equal(await page.textContent("#logs-title"), "gpu-box: llama");
    await screenshot(page, "node-logs");
    await page.click("#logs-close");
    assert.deepEqual(errors, []);
  } finally {
    await close();
    await hub.stop();
  }
});
