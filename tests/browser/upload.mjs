// Drive Converse.js in headless Chromium: log in, open a chat, send files
// through the chat toolbar's file input, then fetch each GET URL from the page.
//
//   node upload.mjs CONFIG.json     (tests/integration/test_browser.py runs it)
//
// CONFIG: {pageUrl, contact, files: [paths], uploadOrigin, chromium,
//          userDataDir, timeoutMs, screenshot?}
// Prints one JSON object on stdout, also when a step fails ("error", "step"):
// the uploads Converse reported, every request to the upload origin as the
// browser's network stack saw it (CORS preflights included), the page's fetch
// of each GET URL, and the browser console. Exits 0 when it could report.
import { readFileSync } from 'node:fs';
import { chromium } from 'playwright-core';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const timeout = config.timeoutMs ?? 30000;
const result = {
  step: 'launch',
  error: null,
  console: [],
  network: [],
  uploaded: [],
  fetched: [],
  images: [],
  chatErrors: [],
  timings: {},
};
// requestId -> headers as Chromium sent them (DevTools' ExtraInfo events).
const sentHeaders = new Map();
const started = Date.now();
const mark = (name) => { result.timings[name] = Date.now() - started; };

let context = null;
try {
  context = await chromium.launchPersistentContext(config.userDataDir, {
    executablePath: config.chromium,
    headless: true,
    timeout,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--no-first-run',
      '--disable-component-update',
      '--disable-sync',
      '--disable-quic',
      // Only loopback: no DNS look-ups for what the page links elsewhere
      // (Converse's login screen shows logos from its web site).
      '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1',
    ],
  });
  mark('launched');
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(timeout);
  page.on('console', (msg) => result.console.push(`[${msg.type()}] ${msg.text()}`));
  page.on('pageerror', (err) => result.console.push(`[pageerror] ${err.stack || err}`));

  // The network as Chromium's network service sees it, through the DevTools
  // protocol: unlike playwright's request events it shows CORS preflights
  // (as requests of their own, initiator "preflight") and, in the ExtraInfo
  // events, the headers as sent on the wire (Origin included).
  const cdp = await context.newCDPSession(page);
  const byId = new Map();
  const entry = (id) => {
    if (!byId.has(id)) {
      const item = {
        id, method: null, url: null, type: null, preflight: false,
        status: null, failed: null, respondedAt: null, sentAt: null,
        requestHeaders: {}, responseHeaders: {},
      };
      byId.set(id, item);
      result.network.push(item);
    }
    return byId.get(id);
  };
  const watched = (url) => url && url.startsWith(config.uploadOrigin + '/');
  cdp.on('Network.requestWillBeSent', (e) => {
    if (!watched(e.request.url)) return;
    const item = entry(e.requestId);
    Object.assign(item, {
      method: e.request.method,
      url: e.request.url,
      type: e.type ?? null,
      preflight: item.preflight || e.initiator?.type === 'preflight',
      requestHeaders: { ...e.request.headers, ...item.requestHeaders },
    });
  });
  // Headers as sent (Origin included); may arrive before requestWillBeSent.
  cdp.on('Network.requestWillBeSentExtraInfo', (e) => {
    sentHeaders.set(e.requestId, { ...sentHeaders.get(e.requestId), ...e.headers });
  });
  cdp.on('Network.responseReceived', (e) => {
    if (!watched(e.response.url)) return;
    const item = entry(e.requestId);
    const timing = e.response.timing;
    Object.assign(item, {
      status: e.response.status,
      // Seconds on one monotonic clock: when the response head came in, and
      // when the request went out on the wire.
      respondedAt: e.timestamp,
      sentAt: timing ? timing.requestTime + timing.sendStart / 1000 : null,
      preflight: item.preflight || e.type === 'Preflight',
      responseHeaders: { ...item.responseHeaders, ...e.response.headers },
    });
  });
  cdp.on('Network.loadingFailed', (e) => {
    const item = byId.get(e.requestId);
    if (item) {
      const cors = e.corsErrorStatus ? ` (CORS: ${e.corsErrorStatus.corsError})` : '';
      item.failed = e.errorText + cors;
    }
  });
  page.on('requestfailed', (request) =>
    result.console.push(`[requestfailed] ${request.method()} ${request.url()}: ${request.failure()?.errorText}`),
  );
  await cdp.send('Network.enable');

  result.step = 'load page';
  await page.goto(config.pageUrl, { waitUntil: 'load' });
  await page.waitForFunction(() => window.httpuploadTest !== undefined);
  mark('loaded');

  result.step = 'log in over WebSocket';
  await page.waitForFunction(() => window.httpuploadTest.state.connected === true);
  mark('connected');

  result.step = `open a chat with ${config.contact}`;
  const opened = await page.evaluate((jid) => window.httpuploadTest.openChat(jid), config.contact);
  if (opened !== config.contact) throw new Error(`openChat returned ${opened}`);

  // The paperclip and its file input appear once Converse has discovered an
  // XEP-0363 service on the user's domain.
  result.step = 'wait for the upload button (service discovered)';
  const input = page.locator(`converse-chat[jid="${config.contact}"] input.fileupload`);
  await input.waitFor({ state: 'attached' });
  mark('discovered');

  result.step = 'send the files through the file input';
  await input.setInputFiles(config.files);
  await page.waitForFunction(
    (count) => {
      const { state } = window.httpuploadTest;
      return state.uploaded.length >= count || state.errors.length > 0;
    },
    config.files.length,
  );
  result.uploaded = await page.evaluate(() => window.httpuploadTest.state.uploaded);
  result.chatErrors = await page.evaluate(() => window.httpuploadTest.state.errors);
  if (result.uploaded.length < config.files.length) {
    throw new Error(`Converse reported an upload failure: ${JSON.stringify(result.chatErrors)}`);
  }
  mark('uploaded');

  result.step = 'fetch the GET URLs from the page';
  for (const upload of result.uploaded) {
    const fetched = await page.evaluate((url) => window.httpuploadTest.fetchUrl(url), upload.get);
    result.fetched.push({ url: upload.get, ...fetched });
  }
  mark('fetched');

  // Converse shows an image URL it sent as an <img>: loaded cross-origin.
  result.step = 'wait for the images shown in the chat';
  result.images = [];
  for (const upload of result.uploaded.filter((u) => /\.png$/i.test(u.name ?? ''))) {
    const image = page.locator(`converse-chat img[src="${upload.get}"]`);
    await image.waitFor({ state: 'visible' });
    await page.waitForFunction(
      (el) => el.complete && el.naturalWidth > 0,
      await image.elementHandle(),
    );
    const size = await image.evaluate((el) => [el.naturalWidth, el.naturalHeight]);
    result.images.push({ url: upload.get, width: size[0], height: size[1] });
  }
  mark('shown');

  if (config.screenshot) {
    result.step = 'screenshot';
    await page.screenshot({ path: config.screenshot });
  }
  result.step = 'done';
} catch (error) {
  result.error = String(error?.stack || error);
} finally {
  try {
    if (context) {
      const pages = context.pages();
      if (result.error && pages.length && config.screenshot) {
        await pages[0].screenshot({ path: config.screenshot }).catch(() => {});
      }
      if (result.error && pages.length) {
        result.uploaded = await pages[0]
          .evaluate(() => window.httpuploadTest?.state.uploaded ?? [])
          .catch(() => result.uploaded);
        result.chatErrors = await pages[0]
          .evaluate(() => window.httpuploadTest?.state.errors ?? [])
          .catch(() => result.chatErrors);
      }
      await context.close();
    }
  } catch (error) {
    result.console.push(`[driver] closing the browser: ${error}`);
  }
  mark('closed');
  for (const item of result.network) {
    item.requestHeaders = { ...item.requestHeaders, ...sentHeaders.get(item.id) };
  }
  process.stdout.write(JSON.stringify(result) + '\n');
}
