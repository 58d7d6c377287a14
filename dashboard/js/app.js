// Boot, the session and the router. The session lives in sessionStorage (`tollgate.session`) and in
// `session` here; routes live under /dashboard/ and move with the History API.

import { h, replaceChildren } from './dom.js';
import { api, configure } from './api.js';
import * as signin from './pages/signin.js';
import * as keys from './pages/keys.js';
import * as usage from './pages/usage.js';
import * as projects from './pages/projects.js';
import * as claim from './pages/claim.js';
import * as accounts from './pages/accounts.js';

const BASE = '/dashboard/';
const STORAGE = 'tollgate.session';
const EXPIRED = 'Your session has expired. Sign in again.';

const ROUTES = {
  signin: { page: signin, title: 'Sign in', role: null },
  keys: { page: keys, title: 'Keys', role: 'account' },
  usage: { page: usage, title: 'Usage', role: 'account' },
  projects: { page: projects, title: 'Projects', role: 'account' },
  claim: { page: claim, title: 'Claim a trial key', role: 'account' },
  accounts: { page: accounts, title: 'Accounts', role: 'operator' },
};

const NAV = {
  account: [['keys', 'Keys'], ['usage', 'Usage'], ['projects', 'Projects'], ['claim', 'Claim a trial key']],
  operator: [['accounts', 'Accounts']],
};

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const who = document.getElementById('who');
const whoName = document.getElementById('who-name');
const signOutButton = document.getElementById('signout');
const live = document.getElementById('live');

let session = null;
let expiryTimer = null;
let pendingNext = null; // the page asked for before signing in
let notice = null; // a message for the sign-in page
let generation = 0; // bumps on every render, so late answers for a page left behind are dropped

// ------------------------------------------------------------------ session

function readSession() {
  try {
    const stored = JSON.parse(sessionStorage.getItem(STORAGE) || 'null');
    if (!stored || typeof stored.token !== 'string' || !['account', 'operator'].includes(stored.role)) return null;
    return stored;
  } catch {
    return null;
  }
}

function isExpired(s) {
  return s && s.expires_at && Date.parse(s.expires_at) <= Date.now();
}

function armTimer() {
  clearTimeout(expiryTimer);
  expiryTimer = null;
  if (!session || !session.expires_at) return;
  const left = Date.parse(session.expires_at) - Date.now();
  // setTimeout holds at most ~24.8 days; an access token lasts far less, but re-arm if not.
  const wait = Math.min(Math.max(left, 0), 2 ** 31 - 1);
  expiryTimer = setTimeout(() => {
    if (session && isExpired(session)) sessionExpired();
    else armTimer();
  }, wait);
}

function forget() {
  session = null;
  clearTimeout(expiryTimer);
  expiryTimer = null;
  sessionStorage.removeItem(STORAGE);
}

/** Stores a new session and goes to the page asked for before, or the role's home. */
export function startSession(next) {
  session = { token: next.token, role: next.role, email: next.email ?? null, expires_at: next.expires_at ?? null };
  sessionStorage.setItem(STORAGE, JSON.stringify(session));
  armTimer();
  notice = null;
  const wanted = pendingNext;
  pendingNext = null;
  const route = wanted && ROUTES[routeName(wanted)];
  navigate(route && route.role === session.role ? wanted : home(), { replace: true });
}

function sessionExpired() {
  if (!session) return;
  const here = location.pathname;
  forget();
  notice = EXPIRED;
  const route = ROUTES[routeName(here)];
  pendingNext = route && route.role ? here : null;
  navigate(`${BASE}signin`, { replace: true });
}

async function signOut() {
  const ending = session;
  forget();
  pendingNext = null;
  notice = null;
  if (ending && ending.role === 'account') {
    // Ends every access token of the account on the server; a failure changes nothing here.
    api('POST', '/v1/auth/logout', { token: ending.token }).catch(() => {});
  }
  navigate(`${BASE}signin`);
}

configure({ token: () => (session ? session.token : null), expired: sessionExpired });

// ------------------------------------------------------------------ routing

function routeName(pathname) {
  if (!pathname.startsWith(BASE)) return '';
  return pathname.slice(BASE.length).replace(/\/+$/, '');
}

function home() {
  if (!session) return `${BASE}signin`;
  return session.role === 'operator' ? `${BASE}accounts` : `${BASE}keys`;
}

export function navigate(path, { replace = false } = {}) {
  if (replace) history.replaceState(null, '', path);
  else if (path !== location.pathname + location.search) history.pushState(null, '', path);
  render({ focus: true });
}

/** Says `message` in the polite live region (emptied first, so the same words are said again). */
export function announce(message) {
  live.textContent = '';
  setTimeout(() => { live.textContent = message; }, 60);
}

function renderHeader(active) {
  const links = session ? NAV[session.role] : [];
  replaceChildren(nav, links.length ? h('ul', {}, links.map(([name, text]) => h('li', {},
    h('a', { href: `${BASE}${name}`, 'aria-current': name === active ? 'page' : null }, text)))) : null);
  nav.hidden = !links.length;
  who.hidden = !session;
  whoName.textContent = session ? (session.role === 'operator' ? 'Operator' : session.email || 'Signed in') : '';
}

/** The sign-in page's message, shown once. */
function takeNotice() {
  const message = notice;
  notice = null;
  return message;
}

function notFound() {
  const h1 = h('h1', { tabindex: '-1' }, 'Page not found');
  replaceChildren(main, h1, h('p', {}, 'There is no such page. ', h('a', { href: home() }, 'Go to the start page'), '.'));
  document.title = 'Page not found · tollgate';
}

function render({ focus = false } = {}) {
  generation += 1;
  const mine = generation;
  if (session && isExpired(session)) {
    forget();
    notice = EXPIRED;
  }
  let name = routeName(location.pathname);
  if (name === '') {
    history.replaceState(null, '', home());
    name = routeName(location.pathname);
  }
  const route = ROUTES[name];
  if (route && route.role && !session) {
    pendingNext = location.pathname;
    history.replaceState(null, '', `${BASE}signin`);
    return render({ focus });
  }
  if (route && route.role && session && route.role !== session.role) {
    history.replaceState(null, '', home());
    return render({ focus });
  }
  if (name === 'signin' && session) {
    history.replaceState(null, '', home());
    return render({ focus });
  }
  // A page change (sign-out by timer, a 401, Back) closes any open dialog: each removes itself.
  for (const dialog of document.querySelectorAll('dialog[open]')) dialog.close('navigate');
  renderHeader(name);
  main.replaceChildren();
  if (!route) {
    notFound();
  } else {
    document.title = `${route.title} · tollgate`;
    const ctx = {
      session,
      announce,
      navigate,
      startSession,
      notice: name === 'signin' ? takeNotice() : null,
      alive: () => mine === generation,
    };
    route.page.render(main, ctx);
  }
  if (focus) {
    const heading = main.querySelector('h1');
    if (heading) {
      heading.setAttribute('tabindex', '-1');
      heading.focus({ preventScroll: false });
    }
  }
  return undefined;
}

// Internal links move with the History API; a modified click (new tab) is the browser's.
document.addEventListener('click', (event) => {
  if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const link = event.target.closest && event.target.closest('a[href]');
  if (!link || link.target || link.hasAttribute('download')) return;
  const url = new URL(link.href, location.href);
  if (url.origin !== location.origin || !url.pathname.startsWith(BASE)) return;
  if (url.hash) {
    // An in-page link (the skip link): move focus there without a history entry or a re-render.
    if (url.pathname !== location.pathname) return;
    const target = document.getElementById(decodeURIComponent(url.hash.slice(1)));
    if (!target) return;
    event.preventDefault();
    target.focus();
    return;
  }
  event.preventDefault();
  navigate(url.pathname + url.search);
});

window.addEventListener('popstate', () => render({ focus: true }));
signOutButton.addEventListener('click', signOut);

// Another tab of this session signing out (sessionStorage is per tab, so only our own changes) and
// coming back to a tab after its token ran out.
document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'visible' && session && isExpired(session)) sessionExpired();
});

session = readSession();
if (session && isExpired(session)) {
  forget();
  notice = EXPIRED;
}
armTimer();
render();
