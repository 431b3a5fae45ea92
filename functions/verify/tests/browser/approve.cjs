// Opens the SMS link in headless Chromium, checks the page, clicks Approve
// and prints the result text. Usage: node approve.cjs URL SCREENSHOT_PATH
const { chromium } = require('playwright-core');

(async () => {
  const [url, screenshot] = process.argv.slice(2);
  const browser = await chromium.launch({
    executablePath: process.env.PAYSTREAM_CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
           '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    const page = await browser.newPage();
    const response = await page.goto(url, { timeout: 15000 });
    if (response.status() !== 200) throw new Error(`page answered ${response.status()}`);
    const merchant = await page.textContent('#merchant');
    const amount = await page.textContent('#amount');
    await Promise.all([page.waitForNavigation({ timeout: 15000 }), page.click('#approve')]);
    const result = await page.textContent('#result');
    if (screenshot) await page.screenshot({ path: screenshot });
    console.log(JSON.stringify({ merchant, amount, result }));
  } finally {
    await browser.close();
  }
})().catch((err) => { console.error(err); process.exit(1); });
