// Shared by the browser checks: headless Debian Chromium through
// playwright-core (never a browser download of Playwright's own), and a
// record of what the page complained about (console errors, CSP refusals).
const { chromium } = require('playwright-core');

async function launch() {
  return chromium.launch({
    executablePath: process.env.PAYSTREAM_CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
           '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

// Collects console errors and failed requests; fails on requests that left
// the origin (no CDN, nothing fetched from elsewhere).
function watch(page, origin) {
  const problems = [];
  page.on('console', (msg) => { if (msg.type() === 'error') problems.push(`console: ${msg.text()}`); });
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  page.on('response', (res) => { if (res.status() >= 400) problems.push(`${res.status()} for ${res.url()}`); });
  page.on('request', (req) => {
    const url = req.url();
    if (!url.startsWith(origin) && !url.startsWith('data:') && !url.startsWith('blob:')) problems.push(`request off origin: ${url}`);
  });
  return problems;
}

function check(condition, message) {
  if (!condition) throw new Error(message);
}

function main(run) {
  run().catch((err) => { console.error(err && err.stack ? err.stack : err); process.exit(1); });
}

module.exports = { launch, watch, check, main };
