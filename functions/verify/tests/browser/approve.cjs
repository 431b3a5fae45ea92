// Opens the SMS link in headless Chromium at a phone's viewport (SMS links
// open on phones), checks the page, clicks Approve and prints what it saw.
// Usage: node approve.cjs URL SCREENSHOT_DIR
// Writes SCREENSHOT_DIR/verify-question.png and verify-approved.png.
const path = require('path');
const { chromium } = require('playwright-core');

(async () => {
  const [url, dir] = process.argv.slice(2);
  const browser = await chromium.launch({
    executablePath: process.env.PAYSTREAM_CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
           '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    // An iPhone 12-15 sized screen.
    const context = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
    const page = await context.newPage();
    const response = await page.goto(url, { timeout: 15000 });
    if (response.status() !== 200) throw new Error(`page answered ${response.status()}`);
    const text = async (selector) => (await page.textContent(selector)).trim();
    const seen = {
      merchant: await text('#merchant'),
      amount: await text('#amount'),
      amount_code: await text('#amount-code'),
      card: await text('#card'),
      country: await text('#country'),
      time: await text('#time'),
      // Nothing sticks out sideways on a phone: no horizontal scrolling.
      page_width: await page.evaluate(() => document.documentElement.scrollWidth),
      approve_width: (await page.locator('#approve').boundingBox()).width,
    };
    if (dir) await page.screenshot({ path: path.join(dir, 'verify-question.png'), fullPage: true });
    await Promise.all([page.waitForNavigation({ timeout: 15000 }), page.click('#approve')]);
    seen.result = await text('#result');
    if (dir) await page.screenshot({ path: path.join(dir, 'verify-approved.png'), fullPage: true });
    console.log(JSON.stringify(seen));
  } finally {
    await browser.close();
  }
})().catch((err) => { console.error(err); process.exit(1); });
