// The merchant console: signs in with POST /auth/login and shows each of the
// caller's merchants (GET /merchants) with its dashboard
// (GET /merchants/{id}/dashboard). It is only a client of the public API:
// the API decides what the caller may see (a merchant's own, an admin's
// all). The access token lives in sessionStorage (this tab, gone when it
// closes; survives a refresh), is sent only in the Authorization header and
// never put in a URL. Text from the API is set with textContent only.
'use strict';

const TOKEN_KEY = 'paystream.console.token';
const USER_KEY = 'paystream.console.username';
const $ = (id) => document.getElementById(id);
const numbers = new Intl.NumberFormat();
const when = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });

// The most merchants one page shows (the API's page limit), and how many
// dashboards are fetched at once (a merchant with many shops must not fire
// hundreds of requests together).
const MERCHANTS_MAX = 200;
const DASHBOARD_FETCHES = 4;
// Merchants in the overview's chart.
const OVERVIEW_BARS = 10;

class SignedOut extends Error {}

// Runs `task` over `items` with at most `width` in flight; results in order.
async function inPool(items, width, task) {
  const results = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await task(items[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(width, items.length) }, worker));
  return results;
}

async function api(method, path, body) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    cache: 'no-store', credentials: 'omit', referrerPolicy: 'no-referrer',
  });
  const answer = await response.json().catch(() => null);
  if (response.status === 401 && token) {
    signOut('Your session ended. Sign in again.');
    throw new SignedOut();
  }
  if (!response.ok) {
    throw new Error((answer && (answer.detail || answer.title)) || `the API answered ${response.status}`);
  }
  return answer;
}

function roleOf(token) {
  try {
    const payload = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(payload)).role || '';
  } catch (_) {
    return '';
  }
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(USER_KEY);
  for (const chart of charts) chart.destroy();
  charts.length = 0;
  $('merchants').replaceChildren();
  $('overview').hidden = true;
  delete document.body.dataset.loaded;
  $('who').hidden = true;
  $('sign-out').hidden = true;
  $('login').hidden = false;
  $('status').textContent = '';
  const error = $('login-error');
  error.textContent = message || '';
  error.hidden = !message;
  $('password').value = '';
}

const charts = [];

function text(root, selector, value) {
  root.querySelector(selector).textContent = value;
}

// Totals over every merchant, and which merchants the visits went to.
function renderOverview(items, boards) {
  const visits = (b) => b.visits_by_day.reduce((sum, d) => sum + d.visits, 0);
  const sum = (f) => boards.reduce((total, b) => total + f(b), 0);
  const totals = { visits_30d: sum(visits), customers: sum((b) => b.customers), vips: sum((b) => b.vips), tips_sent: sum((b) => b.tips_sent) };
  const node = $('overview');
  for (const [name, value] of Object.entries(totals)) {
    const cell = node.querySelector(`[data-total="${name}"]`);
    cell.textContent = numbers.format(value);
    cell.dataset.value = String(value);
  }
  node.hidden = false;
  // The ten busiest, one labelled bar each.
  const busy = items.map((m, i) => ({ name: m.name, visits: visits(boards[i]) })).filter((m) => m.visits > 0)
    .sort((a, b) => b.visits - a.visits).slice(0, OVERVIEW_BARS);
  node.querySelector('.canvas-box').style.height = `${4 + 1.9 * busy.length}rem`;
  charts.push(new Chart(node.querySelector('.by-merchant-chart'), {
    type: 'bar',
    data: { labels: busy.map((m) => m.name), datasets: [{ label: 'Visits', data: busy.map((m) => m.visits), backgroundColor: '#6366f1', borderRadius: 3 }] },
    options: { responsive: true, maintainAspectRatio: false, animation: false, indexAxis: 'y', plugins: { legend: { display: false } },
      scales: { x: { beginAtZero: true, ticks: { precision: 0 } }, y: { grid: { display: false }, ticks: { autoSkip: false } } } },
  }));
}

function renderMerchant(merchant, board) {
  const node = $('merchant-template').content.firstElementChild.cloneNode(true);
  node.dataset.merchantId = merchant.merchant_id;
  text(node, '.name', merchant.name);
  text(node, '.meta', `${merchant.category.toLowerCase()} · ${merchant.country}`);
  const visits30d = board.visits_by_day.reduce((sum, d) => sum + d.visits, 0);
  const kpis = { visits_30d: visits30d, customers: board.customers, vips: board.vips, tips_sent: board.tips_sent };
  for (const [name, value] of Object.entries(kpis)) {
    const cell = node.querySelector(`[data-kpi="${name}"]`);
    cell.textContent = numbers.format(value);
    cell.dataset.value = String(value);
  }

  const vipList = node.querySelector('.vip-list');
  if (board.recent_vips.length === 0) {
    const li = document.createElement('li');
    li.className = 'muted';
    li.textContent = 'No VIP yet.';
    vipList.append(li);
  }
  for (const vip of board.recent_vips) {
    const li = document.createElement('li');
    li.className = 'vip';
    const who = document.createElement('span');
    who.className = 'customer';
    who.textContent = vip.customer;
    const badge = document.createElement('span');
    badge.className = 'badge';
    badge.textContent = `${vip.visits} visits`;
    who.append(badge);
    const at = document.createElement('time');
    at.className = 'when';
    at.dateTime = vip.became_at;
    at.textContent = `VIP since ${when.format(new Date(vip.became_at))}`;
    li.append(who, at);
    vipList.append(li);
  }
  const topList = node.querySelector('.top-list');
  for (const top of board.top_customers) {
    const li = document.createElement('li');
    li.className = 'top';
    li.dataset.customer = top.customer;
    li.dataset.visits = String(top.visits);
    li.textContent = `${top.customer}: ${top.visits} visits`;
    topList.append(li);
  }
  $('merchants').append(node);
  if (board.customers === 0 && visits30d === 0) {
    // Nothing to draw yet: one line instead of empty charts.
    node.classList.add('quiet');
    node.querySelector('.charts').replaceWith(Object.assign(document.createElement('p'), { className: 'muted', textContent: 'No visits yet.' }));
    return;
  }

  const common = { responsive: true, maintainAspectRatio: false, animation: false, plugins: { legend: { display: false } } };
  charts.push(new Chart(node.querySelector('.visits-chart'), {
    type: 'bar',
    data: {
      labels: board.visits_by_day.map((d) => d.day.slice(5)),
      datasets: [{ label: 'Visits', data: board.visits_by_day.map((d) => d.visits), backgroundColor: '#2563eb', borderRadius: 3 }],
    },
    options: { ...common, scales: { y: { beginAtZero: true, ticks: { precision: 0 } }, x: { grid: { display: false }, ticks: { autoSkip: true, maxTicksLimit: 10, maxRotation: 0 } } } },
  }));
  charts.push(new Chart(node.querySelector('.top-chart'), {
    type: 'bar',
    data: {
      labels: board.top_customers.map((t) => t.customer),
      datasets: [{ label: 'Visits', data: board.top_customers.map((t) => t.visits), backgroundColor: '#10b981', borderRadius: 3 }],
    },
    options: { ...common, indexAxis: 'y', scales: { x: { beginAtZero: true, ticks: { precision: 0 } }, y: { grid: { display: false }, ticks: { autoSkip: false } } } },
  }));
}

async function showDashboards() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  $('login').hidden = true;
  $('sign-out').hidden = false;
  const who = $('who');
  who.textContent = `${sessionStorage.getItem(USER_KEY) || ''} (${roleOf(token) || 'signed in'})`;
  who.hidden = false;
  delete document.body.dataset.loaded;
  $('status').textContent = 'Loading…';
  try {
    const { items } = await api('GET', `/merchants?limit=${MERCHANTS_MAX}`);
    const boards = await inPool(items, DASHBOARD_FETCHES, (m) => api('GET', `/merchants/${encodeURIComponent(m.merchant_id)}/dashboard`));
    $('merchants').replaceChildren();
    for (const chart of charts) chart.destroy();
    charts.length = 0;
    // The busiest merchants first (visits in the window, then customers).
    const order = items.map((_, i) => i).sort((a, b) => {
      const va = boards[a].visits_by_day.reduce((s, d) => s + d.visits, 0);
      const vb = boards[b].visits_by_day.reduce((s, d) => s + d.visits, 0);
      return vb - va || boards[b].customers - boards[a].customers || items[a].name.localeCompare(items[b].name);
    });
    if (items.length > 0) renderOverview(items, boards);
    for (const i of order) renderMerchant(items[i], boards[i]);
    const capped = items.length === MERCHANTS_MAX ? ` (the first ${MERCHANTS_MAX} by name)` : '';
    $('status').textContent = items.length === 0
      ? 'You have no merchants yet.'
      : `${items.length} merchant${items.length === 1 ? '' : 's'}${capped} · updated ${when.format(new Date())}`;
    document.body.dataset.loaded = 'true';
  } catch (err) {
    if (!(err instanceof SignedOut)) $('status').textContent = `Could not load the dashboards: ${err.message}`;
  }
}

$('login-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const username = $('username').value.trim();
  const password = $('password').value;
  $('login-error').hidden = true;
  $('sign-in').disabled = true;
  try {
    const token = await api('POST', '/auth/login', { username, password });
    sessionStorage.setItem(TOKEN_KEY, token.access_token);
    sessionStorage.setItem(USER_KEY, username);
    $('password').value = '';
    await showDashboards();
  } catch (err) {
    $('login-error').textContent = err.message;
    $('login-error').hidden = false;
  } finally {
    $('sign-in').disabled = false;
  }
});

$('sign-out').addEventListener('click', () => signOut());

if (sessionStorage.getItem(TOKEN_KEY)) {
  showDashboards();
} else {
  signOut();
}
