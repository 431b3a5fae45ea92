// The API explorer in a real browser: GET /docs lists every route of the
// live document and "Try it out" on GET /card-products gets a 200 with the
// products. Usage: node docs.cjs BASE_URL SCREENSHOT_DIR
const path = require('path');
const { launch, watch, check, main } = require('./common.cjs');

main(async () => {
  const [base, dir] = process.argv.slice(2);
  const doc = await (await fetch(`${base}/openapi.json`)).json();
  const expected = [];
  for (const [route, item] of Object.entries(doc.paths)) {
    for (const method of Object.keys(item)) expected.push(`${method.toUpperCase()} ${route}`);
  }
  const products = await (await fetch(`${base}/card-products`)).json();

  const browser = await launch();
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    const problems = watch(page, base);
    const response = await page.goto(`${base}/docs`, { timeout: 15000 });
    check(response.status() === 200, `GET /docs answered ${response.status()}`);
    check((response.headers()['content-security-policy'] || '').includes("script-src 'self'"), 'the page carries its CSP');
    await page.waitForSelector('.opblock', { timeout: 20000 });
    const shown = await page.$$eval('.opblock', (blocks) => blocks.map((b) => {
      const method = b.querySelector('.opblock-summary-method').textContent.trim();
      const route = b.querySelector('.opblock-summary-path').getAttribute('data-path');
      return `${method} ${route}`;
    }));
    const missing = expected.filter((r) => !shown.includes(r));
    check(missing.length === 0, `routes missing from the explorer: ${missing.join(', ')}`);
    check(shown.length === expected.length, `the explorer shows ${shown.length} routes, the document has ${expected.length}`);

    const op = page.locator('#operations-default-listCardProducts, [id$="-listCardProducts"]').first();
    await op.locator('.opblock-summary').click();
    await op.locator('button.try-out__btn').click();
    await op.locator('button.execute').click();
    const status = op.locator('.live-responses-table .response .response-col_status').first();
    await status.waitFor({ timeout: 15000 });
    const code = (await status.textContent()).trim();
    check(code.startsWith('200'), `try it out answered ${code}`);
    const body = JSON.parse(await op.locator('.live-responses-table .response-col_description pre.microlight').first().textContent());
    check(JSON.stringify(body) === JSON.stringify(products), 'try it out shows what the API answers');
    if (dir) await page.screenshot({ path: path.join(dir, 'docs.png') });
    check(problems.length === 0, `the page had problems:\n${problems.join('\n')}`);
    console.log(JSON.stringify({ routes: shown.length, try_it_out: code, card_products: Array.isArray(body) ? body.length : null }));
  } finally {
    await browser.close();
  }
});
