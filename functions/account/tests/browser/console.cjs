// The merchant console in a real browser, after the demo ran: the demo
// merchant signs in, and every number on the page is the API's; a refresh
// keeps the session (sessionStorage, never localStorage or the URL); a
// customer who owns no merchant sees none, and cannot read the demo
// merchant's dashboard through the API either.
// Usage: node console.cjs BASE_URL USERNAME PASSWORD SCREENSHOT_DIR
const path = require('path');
const { launch, watch, check, main } = require('./common.cjs');

const MASKED = /^[^*]{0,2}\*\*\*$/;

async function call(base, method, route, token, body) {
  const headers = { Accept: 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body) headers['Content-Type'] = 'application/json';
  const response = await fetch(`${base}${route}`, { method, headers, body: body ? JSON.stringify(body) : undefined });
  return { status: response.status, json: await response.json().catch(() => null) };
}

// What the page should show, straight from the API with the caller's token.
async function expected(base, token) {
  // The console lists up to 200 merchants (the API's page limit).
  const list = await call(base, 'GET', '/merchants?limit=200', token);
  check(list.status === 200, `GET /merchants answered ${list.status}: ${JSON.stringify(list.json)}`);
  const merchants = list.json.items;
  const boards = {};
  for (const m of merchants) {
    const board = await call(base, 'GET', `/merchants/${m.merchant_id}/dashboard`, token);
    check(board.status === 200, `the dashboard of ${m.name} answered ${board.status}: ${JSON.stringify(board.json)}`);
    boards[m.merchant_id] = board.json;
  }
  return { merchants, boards };
}

// Loads the page between two reads of the API until both reads agree
// (consumers may still be counting the demo's last events); bounded.
async function settledRead(page, base, token, attempts) {
  for (let i = 1; ; i++) {
    const before = await expected(base, token);
    await page.reload();
    await page.waitForSelector('body[data-loaded="true"]', { timeout: 20000 });
    const got = await shown(page);
    const totalsShown = await totals(page);
    const after = await expected(base, token);
    if (JSON.stringify(before) === JSON.stringify(after) || i >= attempts) return { want: after, got, totalsShown, attempts: i };
  }
}

// What the page shows, read from the DOM.
async function shown(page) {
  return page.$$eval('section.merchant', (sections) => sections.map((s) => ({
    merchant_id: s.dataset.merchantId,
    name: s.querySelector('.name').textContent,
    kpis: Object.fromEntries([...s.querySelectorAll('[data-kpi]')].map((k) => [k.dataset.kpi, Number(k.dataset.value)])),
    kpi_text: Object.fromEntries([...s.querySelectorAll('[data-kpi]')].map((k) => [k.dataset.kpi, k.textContent])),
    top: [...s.querySelectorAll('.top-list li')].map((li) => ({ customer: li.dataset.customer, visits: Number(li.dataset.visits) })),
    vips: [...s.querySelectorAll('.vip-list li.vip')].map((li) => ({
      customer: li.querySelector('.customer').firstChild.textContent,
      became_at: li.querySelector('time').getAttribute('datetime'),
    })),
    charts: s.querySelectorAll('canvas').length,
  })));
}

async function totals(page) {
  return page.$$eval('[data-total]', (cells) => Object.fromEntries(cells.map((c) => [c.dataset.total, Number(c.dataset.value)])));
}

function compareTotals(got, want) {
  const boards = Object.values(want.boards);
  const sum = (f) => boards.reduce((s, b) => s + f(b), 0);
  const expect = {
    visits_30d: sum((b) => b.visits_by_day.reduce((s, d) => s + d.visits, 0)),
    customers: sum((b) => b.customers), vips: sum((b) => b.vips), tips_sent: sum((b) => b.tips_sent),
  };
  for (const [k, v] of Object.entries(expect)) check(got[k] === v, `overview ${k} shows ${got[k]}, the API's sum is ${v}`);
}

function compare(page, want) {
  check(page.length === want.merchants.length, `the page shows ${page.length} merchants, the API ${want.merchants.length}`);
  for (const m of want.merchants) {
    const got = page.find((p) => p.merchant_id === m.merchant_id);
    check(got, `merchant ${m.name} is missing from the page`);
    const b = want.boards[m.merchant_id];
    check(got.name === m.name, `name ${got.name} != ${m.name}`);
    const visits = b.visits_by_day.reduce((sum, d) => sum + d.visits, 0);
    const kpis = { customers: b.customers, vips: b.vips, tips_sent: b.tips_sent, visits_30d: visits };
    for (const [k, v] of Object.entries(kpis)) {
      check(got.kpis[k] === v, `${m.name}: ${k} shows ${got.kpis[k]}, the API says ${v}`);
      check(got.kpi_text[k].replace(/\D/g, '') === String(v), `${m.name}: ${k} reads "${got.kpi_text[k]}"`);
    }
    check(JSON.stringify(got.top) === JSON.stringify(b.top_customers.map((t) => ({ customer: t.customer, visits: t.visits }))), `${m.name}: top customers differ`);
    check(JSON.stringify(got.vips) === JSON.stringify(b.recent_vips.map((v) => ({ customer: v.customer, became_at: v.became_at }))), `${m.name}: VIPs differ`);
    for (const c of [...got.top, ...got.vips]) check(MASKED.test(c.customer), `${m.name}: customer ${c.customer} is not masked`);
    const quiet = b.customers === 0 && visits === 0;
    check(got.charts === (quiet ? 0 : 2), `${m.name}: ${got.charts} charts`);
  }
}

async function signIn(page, username, password) {
  await page.fill('#username', username);
  await page.fill('#password', password);
  await page.click('#sign-in');
  await page.waitForSelector('body[data-loaded="true"]', { timeout: 20000 });
}

main(async () => {
  const [base, username, password, dir] = process.argv.slice(2);
  const login = await call(base, 'POST', '/auth/login', null, { username, password });
  check(login.status === 200, `log-in of ${username} answered ${login.status}`);
  const token = login.json.access_token;
  const want = await expected(base, token);
  check(want.merchants.length > 0, `${username} owns no merchant: did the demo run?`);
  check(Object.values(want.boards).some((b) => b.customers > 0), 'the demo left no customer on any dashboard');

  const browser = await launch();
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    const problems = watch(page, base);
    const response = await page.goto(`${base}/console`, { timeout: 15000 });
    check(response.status() === 200, `GET /console answered ${response.status()}`);
    await signIn(page, username, password);
    const read = await settledRead(page, base, token, 5);
    compare(read.got, read.want);
    compareTotals(read.totalsShown, read.want);
    if (dir) {
      await page.screenshot({ path: path.join(dir, 'console.png'), fullPage: true, clip: { x: 0, y: 0, width: 1280, height: 1500 } });
      await page.screenshot({ path: path.join(dir, 'console-full.png'), fullPage: true });
    }

    // The session survives a refresh, and the token is where it belongs.
    await page.reload();
    await page.waitForSelector('body[data-loaded="true"]', { timeout: 20000 });
    const again = await settledRead(page, base, token, 5);
    compare(again.got, again.want);
    const storage = await page.evaluate(() => ({
      session: sessionStorage.getItem('paystream.console.token'),
      local: localStorage.length,
      url: location.href,
    }));
    check(storage.session && storage.session.split('.').length === 3, 'the token is in sessionStorage');
    check(storage.local === 0, 'nothing in localStorage');
    check(!storage.url.includes(storage.session), 'the token is not in the URL');

    // Usable on a phone too: nothing wider than its screen.
    await page.setViewportSize({ width: 390, height: 844 });
    await page.reload();
    await page.waitForSelector('body[data-loaded="true"]', { timeout: 20000 });
    const phoneWidth = await page.evaluate(() => document.documentElement.scrollWidth);
    check(phoneWidth <= 390, `at 390 px wide the page is ${phoneWidth} px wide`);
    if (dir) await page.screenshot({ path: path.join(dir, 'console-phone.png'), fullPage: true, clip: { x: 0, y: 0, width: 390, height: 1600 } });
    await page.setViewportSize({ width: 1280, height: 900 });

    // Someone who owns no merchant sees none; the API refuses them the demo
    // merchant's dashboard (404, as if it did not exist).
    const stranger = `stranger_${Date.now()}`;
    const signup = await call(base, 'POST', '/auth/signup', null,
      { username: stranger, email: `${stranger}@example.com`, password: 'stranger-password-1', phone: '+821055550009' });
    check(signup.status === 201, `sign-up answered ${signup.status}`);
    await page.click('#sign-out');
    await page.waitForSelector('#login:not([hidden])');
    check(await page.evaluate(() => sessionStorage.length) === 0, 'signing out forgets the token');
    await signIn(page, stranger, 'stranger-password-1');
    check((await page.$$('section.merchant')).length === 0, 'a stranger sees no merchant');
    check((await page.textContent('#status')).includes('no merchants'), 'a stranger is told there are none');
    const strangerToken = (await call(base, 'POST', '/auth/login', null, { username: stranger, password: 'stranger-password-1' })).json.access_token;
    const peek = await call(base, 'GET', `/merchants/${want.merchants[0].merchant_id}/dashboard`, strangerToken);
    check(peek.status === 404, `a stranger reading the demo merchant's dashboard got ${peek.status}`);

    check(problems.length === 0, `the page had problems:\n${problems.join('\n')}`);
    console.log(JSON.stringify({
      merchants: want.merchants.length,
      customers: Object.values(want.boards).reduce((s, b) => s + b.customers, 0),
      vips: Object.values(want.boards).reduce((s, b) => s + b.vips, 0),
    }));
  } finally {
    await browser.close();
  }
});
