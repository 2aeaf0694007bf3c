#!/usr/bin/env node
// Drive one notebook in a running JupyterLab with headless Chromium and report what a user would see.
//
//   node tests/browser/run_notebook.mjs --url 'http://127.0.0.1:PORT/lab/tree/PATH.ipynb?token=T' \
//        --interaction sigma --screenshot artifacts/browser/01_noising-sigma.png [--timeout 180]
//        [--cells-timeout 120]   (seconds for "run all cells"; notebook 04 may train first: longer)
//
// Steps: open the notebook, wait for its kernel, run all cells (JupyterLab's own command
// `notebook:run-all-cells`), wait until every code cell has run and the kernel is idle, find the
// last cell with an ipywidgets output, snapshot that output (labels, slider readouts, images with a
// SHA-256 of their bytes, dropdown/toggle/text values), run the named interaction, wait until the
// output settles again, snapshot it again, take screenshots, and print ONE JSON object on stdout:
//   { ok, error, interaction, before, after, action, cellOutputs: {errors, stderr}, widgetErrors,
//     console: [{type, text, url}], pageErrors, screenshots, timings }
// The caller (tests/test_browser.py) makes the assertions; this script only observes, so a failing
// notebook still yields a full report. Exit status: 0 when the JSON says ok, 1 otherwise.
//
// Needs: npm's playwright-core (package.json; no browser download) and a Chromium binary
// (--chromium, default $DIFFNB_CHROMIUM or /usr/bin/chromium). JupyterLab must be started with
// --LabApp.expose_app_in_browser=True (window.jupyterapp), which the pytest fixture does.
//
// Interactions are small named functions in INTERACTIONS below (`sigma`: notebook 01's slider;
// `picker`: notebook 04's class dropdown and seed box): (ctx) => details. ctx gives
// { page, root (Locator of the widget cell's output area), settle(), log() }. They act like a user
// (keyboard, mouse) on `root`; the harness snapshots before and after.
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';

// ----------------------------------------------------------------------------------------------
// Interactions
// ----------------------------------------------------------------------------------------------

/** Notebook 01's NoiseExplorer: move the FloatLogSlider "sigma" to the right with the keyboard.
 * The noUiSlider handle is focusable (role="slider"); each ArrowRight moves it one step (0.01 in
 * log10 sigma) and, with continuous_update, sends the new value to the kernel, which redraws the
 * image and the label. If the keyboard does not move the handle (focus stolen, say), it falls back
 * to dragging the handle with the mouse; `action.method` says which one moved it. */
async function sigma({ page, root, log }) {
  const presses = 40;                                  // +0.40 in log10: sigma 0.5 -> about 1.26
  const slider = root.locator('.widget-slider')
    .filter({ has: page.locator('label.widget-label', { hasText: /^\s*sigma\s*$/ }) }).first();
  const handle = slider.locator('.noUi-handle').first();
  await handle.waitFor({ state: 'visible', timeout: 30_000 });
  await handle.scrollIntoViewIfNeeded();
  const valueText = () => handle.getAttribute('aria-valuetext');
  const start = await valueText();
  await handle.focus();
  for (let i = 0; i < presses; i++) await handle.press('ArrowRight', { delay: 15 });
  let method = 'keyboard';
  if (await valueText() === start) {
    log('sigma: keyboard did not move the handle, dragging it with the mouse');
    method = 'mouse';
    const box = await handle.boundingBox();
    const x = box.x + box.width / 2, y = box.y + box.height / 2;
    await page.mouse.move(x, y);
    await page.mouse.down();
    for (let dx = 10; dx <= 80; dx += 10) await page.mouse.move(x + dx, y);
    await page.mouse.up();
  }
  return { method, presses, handleBefore: start, handleAfter: await valueText(),
           readout: await slider.locator('.widget-readout').first().innerText() };
}

/** Wait until the widget's Label texts differ from `before` (the kernel has redrawn), or throw.
 * ClassSampler sets the image first and the label last in one callback, so a new label means the
 * whole redraw has arrived; settle() then waits for the image to load and the kernel to go idle. */
async function waitForNewLabels(root, before, what, timeoutMs) {
  await root.page().waitForFunction(([el, old]) => {
    const now = [...el.querySelectorAll('div.widget-label')]
      .map((n) => n.textContent.replace(/\s+/g, ' ').trim());
    return JSON.stringify(now) !== old;
  }, [await root.elementHandle(), JSON.stringify(before)], { timeout: timeoutMs, polling: 200 })
    .catch(() => {
      throw new Error(`${what}: the label did not change within ${timeoutMs / 1000}s`);
    });
}

/** Notebook 04's ClassSampler: pick the class "Sneaker" in the Dropdown "class" (a <select>;
 * selectOption fires the change event a user's pick fires), wait for the redraw, then type 5 into
 * the BoundedIntText "seed" and press Enter (ipywidgets sends a text box's value on its change
 * event, which Enter or leaving the box fires; Tab is the fallback). The
 * harness snapshots `after` once the second redraw has settled; `action.mid` is the state after
 * the class change alone, so the test can tell the two redraws apart. */
async function picker({ page, root, settle, log }) {
  const klass = 'Sneaker', seed = '5';
  const redrawMs = 180_000;            // 4 samples x 25 Euler steps: seconds, more on a busy CPU
  const labelled = (sel, name) => root.locator(sel).filter({
    has: page.locator('label.widget-label', { hasText: new RegExp(`^\\s*${name}\\s*$`) }),
  }).first();
  const select = labelled('.widget-dropdown', 'class').locator('select');
  const input = labelled('.widget-text', 'seed').locator('input');
  await select.waitFor({ state: 'visible', timeout: 30_000 });
  await select.scrollIntoViewIfNeeded();
  const labelsOf = async () => (await root.evaluate(snapshotInPage)).labels;

  const classBefore = await select.evaluate((s) => s.selectedOptions[0]?.textContent.trim());
  let labels = await labelsOf();
  await select.selectOption({ label: klass });
  log(`picker: class ${classBefore} -> ${klass}`);
  await waitForNewLabels(root, labels, 'class change', redrawMs);
  const mid = await settle(redrawMs);

  const seedBefore = await input.inputValue();
  labels = mid.labels;
  await input.click();
  await input.fill(seed);
  await input.press('Enter');
  // Enter commits the value in Chromium: the kernel goes busy with the redraw at once. If it has
  // not within 3 s, leave the box with Tab, which commits it too; `action.seedKey` says which.
  let seedKey = 'Enter';
  const busy = await page.waitForFunction(
    () => window.jupyterapp.shell.currentWidget?.sessionContext?.session?.kernel?.status !== 'idle',
    null, { timeout: 3_000, polling: 50 }).then(() => true, () => false);
  if (!busy && JSON.stringify(await labelsOf()) === JSON.stringify(labels)) {
    log('picker: Enter did not send the seed, pressing Tab');
    seedKey = 'Tab';
    await input.press('Tab');
  }
  log(`picker: seed ${seedBefore} -> ${seed} (${seedKey})`);
  await waitForNewLabels(root, labels, 'seed change', redrawMs);
  return { method: `selectOption, then keyboard (click, fill, ${seedKey})`, class: klass, seed,
           seedKey, classBefore, seedBefore, mid };
}

const INTERACTIONS = { sigma, picker, none: async () => ({ method: 'none' }) };

// ----------------------------------------------------------------------------------------------
// Harness
// ----------------------------------------------------------------------------------------------

function parseArgs(argv) {
  const args = { timeout: 180, 'cells-timeout': 120, interaction: 'none', width: 1280, height: 1000,
                 chromium: process.env.DIFFNB_CHROMIUM || '/usr/bin/chromium' };
  for (let i = 0; i < argv.length; i++) {
    const key = argv[i].replace(/^--/, '');
    if (!(key in args) && !['url', 'screenshot'].includes(key)) throw new Error(`unknown option ${argv[i]}`);
    args[key] = argv[++i];
  }
  if (!args.url) throw new Error('--url is required');
  if (!(args.interaction in INTERACTIONS)) {
    throw new Error(`unknown interaction ${args.interaction}; known: ${Object.keys(INTERACTIONS)}`);
  }
  for (const k of ['timeout', 'cells-timeout', 'width', 'height']) args[k] = Number(args[k]);
  return args;
}

// (headless: true adds --headless itself)
const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--no-first-run', '--disable-quic', '--disable-sync',
  '--disable-dev-shm-usage'];

/** The state of the widget output under `el`, as plain data (runs in the page). */
async function snapshotInPage(el) {
  const text = (n) => (n ? n.textContent.replace(/\s+/g, ' ').trim() : null);
  const describe = (w) => text(w.querySelector(':scope > label.widget-label'));
  async function sha256(url) {
    const buf = await (await fetch(url)).arrayBuffer();
    const digest = await crypto.subtle.digest('SHA-256', buf);
    return { bytes: buf.byteLength,
             sha256: [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('') };
  }
  const images = [];
  for (const img of el.querySelectorAll('img.widget-image')) {
    const info = { src: img.src.slice(0, 80), complete: img.complete,
                   naturalWidth: img.naturalWidth, naturalHeight: img.naturalHeight };
    try { Object.assign(info, await sha256(img.src)); } catch (e) { info.fetchError = String(e); }
    images.push(info);
  }
  return {
    // Label widgets (a Label is a div.widget-label; a control's description is a label.widget-label)
    labels: [...el.querySelectorAll('div.widget-label')].map(text),
    sliders: [...el.querySelectorAll('.widget-slider')].map((w) => ({
      description: describe(w), readout: text(w.querySelector('.widget-readout')),
      valuetext: w.querySelector('.noUi-handle')?.getAttribute('aria-valuetext') ?? null })),
    dropdowns: [...el.querySelectorAll('.widget-dropdown')].map((w) => {
      const s = w.querySelector('select');
      return { description: describe(w), value: s ? text(s.selectedOptions[0]) : null };
    }),
    toggles: [...el.querySelectorAll('.widget-toggle-buttons')].map((w) => ({
      description: describe(w),
      selected: [...w.querySelectorAll('button.mod-active')].map(text) })),
    texts: [...el.querySelectorAll('.widget-text, .widget-textarea')].map((w) => ({
      description: describe(w), value: w.querySelector('input, textarea')?.value ?? null })),
    images,
  };
}

/** Kernel status and whether every code cell has run (runs in the page). */
function notebookStateInPage() {
  const panel = window.jupyterapp?.shell?.currentWidget;
  const kernel = panel?.sessionContext?.session?.kernel;
  const prompts = [...(panel?.node.querySelectorAll('.jp-CodeCell .jp-InputPrompt') ?? [])]
    .map((p) => p.textContent.trim());
  let errors = 0;
  const cells = panel?.content?.model?.cells;
  for (let i = 0; cells && i < cells.length; i++) {
    const outputs = cells.get(i).outputs;
    for (let j = 0; outputs && j < outputs.length; j++) errors += outputs.get(j).type === 'error' ? 1 : 0;
  }
  return { kernel: kernel ? kernel.status : null, connection: kernel ? kernel.connectionStatus : null,
           errors,
           codeCells: prompts.length, ran: prompts.filter((p) => /\[\d+\]/.test(p)).length,
           running: prompts.filter((p) => p.includes('*')).length,
           dialog: document.querySelector('.jp-Dialog')?.textContent.slice(0, 300) ?? null };
}

/** Error and stderr outputs from the notebook model, plus widget rendering failures. */
function cellOutputsInPage() {
  const panel = window.jupyterapp.shell.currentWidget;
  const cells = panel.content.model.cells;
  const errors = [], stderr = [];
  for (let i = 0; i < cells.length; i++) {
    const cell = cells.get(i);
    if (cell.type !== 'code') continue;
    for (let j = 0; j < cell.outputs.length; j++) {
      const out = cell.outputs.get(j).toJSON();
      if (out.output_type === 'error') {
        errors.push({ cell: i, ename: out.ename, evalue: out.evalue,
                      traceback: (out.traceback || []).join('\n').replace(/\x1b\[[0-9;]*m/g, '') });
      } else if (out.output_type === 'stream' && out.name === 'stderr') {
        stderr.push({ cell: i, text: [].concat(out.text).join('') });
      }
    }
  }
  // What ipywidgets shows instead of a widget when it cannot render one.
  const WIDGET_FAILURE =
    /Error displaying widget|Failed to load model class|Error creating widget|Loading widget\.\.\./;
  const widgetErrors = [...panel.node.querySelectorAll('.jp-OutputArea-output')]
    .map((o) => o.textContent)
    .filter((t) => WIDGET_FAILURE.test(t))
    .map((t) => t.replace(/\s+/g, ' ').trim().slice(0, 500));
  return { errors, stderr, widgetErrors };
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const t0 = Date.now();
  const since = () => Math.round((Date.now() - t0) / 100) / 10;
  const report = { ok: false, error: null, url: args.url.replace(/token=[^&]+/, 'token=***'),
                   interaction: args.interaction, timings: {}, log: [], console: [], pageErrors: [],
                   cellOutputs: null, widgetErrors: null, kernelProblems: null, screenshots: [] };
  const log = (msg) => report.log.push(`${since()}s ${msg}`);
  const mark = (name) => { report.timings[name] = since(); log(name); };

  // One watchdog for the whole run: print what we have, close the browser (5 s at most), leave.
  let browser, printed = false;
  const watchdog = setTimeout(() => {
    report.error = `timed out after ${args.timeout}s (last step: ${report.log.at(-1) ?? 'start'})`;
    report.timings.total = since();
    process.stdout.write(JSON.stringify(report) + '\n');
    printed = true;
    Promise.race([browser?.close(), new Promise((r) => setTimeout(r, 5000))])
      .finally(() => process.exit(1));
  }, args.timeout * 1000);

  try {
    if (!fs.existsSync(args.chromium)) throw new Error(`no Chromium at ${args.chromium}`);
    browser = await chromium.launch({ executablePath: args.chromium, headless: true,
                                      args: CHROMIUM_ARGS });
    const page = await browser.newPage({ viewport: { width: args.width, height: args.height } });
    page.on('console', (m) => report.console.push({ type: m.type(), text: m.text().slice(0, 2000),
                                                     url: m.location()?.url ?? null }));
    page.on('pageerror', (e) => report.pageErrors.push(String(e.stack || e).slice(0, 2000)));
    mark('browser');

    await page.goto(args.url, { waitUntil: 'domcontentloaded', timeout: 90_000 });
    await page.waitForFunction(() => window.jupyterapp, null, { timeout: 90_000 }).catch(() => {
      throw new Error('window.jupyterapp is missing: start JupyterLab with '
                      + '--LabApp.expose_app_in_browser=True');
    });
    await page.waitForFunction(
      () => window.jupyterapp.shell.currentWidget?.content?.model?.cells?.length > 0,
      null, { timeout: 90_000 });
    mark('notebook opened');

    const poll = async (what, pred, timeoutMs) => {
      const end = Date.now() + timeoutMs;
      let state;
      for (;;) {
        state = await page.evaluate(notebookStateInPage);
        if (state.dialog) throw new Error(`a JupyterLab dialog is open: ${state.dialog}`);
        if (pred(state)) return state;
        if (Date.now() > end) {
          throw new Error(`waiting for ${what}: gave up, state ${JSON.stringify(state)}`);
        }
        await page.waitForTimeout(250);
      }
    };
    await poll('the kernel', (s) => s.kernel === 'idle' && s.connection === 'connected', 120_000);
    mark('kernel idle');

    // Every kernel message on iopub that reports an error or writes to stderr, whichever cell or
    // widget callback it belongs to (a widget callback's output does not land in any cell).
    await page.evaluate(() => {
      window.__kernelProblems = [];
      window.jupyterapp.shell.currentWidget.sessionContext.iopubMessage.connect((_, msg) => {
        const type = msg.header.msg_type, c = msg.content;
        if (type === 'error' || (type === 'stream' && c.name === 'stderr')) {
          window.__kernelProblems.push({ type, parent: msg.parent_header?.msg_type ?? null,
            text: type === 'error' ? `${c.ename}: ${c.evalue}` : String(c.text).slice(0, 2000) });
        }
      });
    });

    // JupyterLab's own "Run > Run All Cells". Its promise settles when the last cell has run, or
    // at the first cell that raised (the cells after it stay unrun).
    await page.evaluate(() => window.jupyterapp.commands.execute('notebook:run-all-cells'));
    await poll('all cells to run', (s) => (s.ran === s.codeCells || s.errors > 0) && s.running === 0
                                          && s.kernel === 'idle', args['cells-timeout'] * 1000);
    mark('cells ran');
    const collectOutputs = async () => {
      const outs = await page.evaluate(cellOutputsInPage);
      report.cellOutputs = { errors: outs.errors, stderr: outs.stderr };
      report.widgetErrors = outs.widgetErrors;
      report.kernelProblems = await page.evaluate(() => window.__kernelProblems);
      return outs;
    };
    const early = await collectOutputs();
    if (early.errors.length) {
      throw new Error('cells raised: '
                      + early.errors.map((e) => `cell ${e.cell}: ${e.ename}: ${e.evalue}`).join('; '));
    }

    // The widget: the last code cell whose output holds a rendered ipywidget.
    const cell = page.locator('.jp-Notebook .jp-CodeCell')
      .filter({ has: page.locator('.jp-OutputArea-output .jupyter-widgets') }).last();
    await cell.waitFor({ state: 'attached', timeout: 60_000 });
    const root = cell.locator('.jp-OutputArea').first();
    await root.scrollIntoViewIfNeeded();

    // Settled = kernel idle, at least one image shown and loaded (these explorers all draw one),
    // and the same snapshot for a full second.
    const settle = async (timeoutMs = 60_000) => {
      const end = Date.now() + timeoutMs;
      let last = null, stableSince = 0, snap;
      for (;;) {
        const state = await page.evaluate(notebookStateInPage);
        snap = await root.evaluate(snapshotInPage);
        const key = JSON.stringify(snap);
        const loaded = snap.images.length > 0 && snap.images.every((i) => i.complete && i.sha256);
        if (key !== last) { last = key; stableSince = Date.now(); }
        if (state.kernel === 'idle' && loaded && Date.now() - stableSince >= 1000) return snap;
        if (Date.now() > end) throw new Error(`widget did not settle: ${key.slice(0, 500)}`);
        await page.waitForTimeout(200);
      }
    };
    report.before = await settle();
    mark('widget rendered');

    report.action = await INTERACTIONS[args.interaction]({ page, root, settle, log });
    report.after = await settle();
    mark('interaction done');

    await collectOutputs();

    if (args.screenshot) {
      fs.mkdirSync(path.dirname(path.resolve(args.screenshot)), { recursive: true });
      // Close the file browser so the notebook gets the width, then show the widget's cell.
      await page.evaluate(() => {
        const app = window.jupyterapp;
        if (!app.shell.leftCollapsed) return app.commands.execute('application:toggle-left-area');
      });
      await page.waitForTimeout(300);
      await root.scrollIntoViewIfNeeded();
      await page.screenshot({ path: args.screenshot });
      const crop = args.screenshot.replace(/(\.png)?$/, '-widget.png');
      await cell.screenshot({ path: crop });
      report.screenshots.push(args.screenshot, crop);
      mark('screenshots');
    }
    report.ok = true;
  } catch (e) {
    report.error = String(e && e.stack ? e.stack : e).slice(0, 4000);
  } finally {
    clearTimeout(watchdog);
    if (browser) await browser.close().catch(() => {});
    report.timings.total = since();
  }
  if (printed) return;                  // the watchdog has reported and is closing down
  process.stdout.write(JSON.stringify(report) + '\n');
  process.exitCode = report.ok ? 0 : 1;
}

main().catch((e) => {
  process.stdout.write(JSON.stringify({ ok: false, error: String(e && e.stack ? e.stack : e) }) + '\n');
  process.exitCode = 2;
});
