// The one way the dashboard talks to tollgate: JSON in and out, the session's bearer token, and every
// failure as an ApiError carrying the API's own {code, message, field}. A 401 on a call made with the
// session's token ends the session (app.js decides what that means for the page).

export class ApiError extends Error {
  constructor(status, code, message, field = null) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.field = field;
  }
}

export const UNREACHABLE = 'tollgate could not be reached.';

const hooks = {
  token: () => null,
  expired: () => {},
};

/** app.js tells the wrapper where the session's token is and what to do when it stops working. */
export function configure({ token, expired }) {
  hooks.token = token;
  hooks.expired = expired;
}

/**
 * One request. `body` is sent as JSON. The session's token is sent unless `token` is given (a token
 * to try, such as the operator's before it is stored) or `token: null` (the login call).
 */
export async function api(method, path, { body, token } = {}) {
  const usesSession = token === undefined;
  const bearer = usesSession ? hooks.token() : token;
  const headers = { Accept: 'application/json' };
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
      credentials: 'omit',
    });
  } catch {
    throw new ApiError(0, 'unreachable', UNREACHABLE);
  }
  let data = null;
  const text = await response.text().catch(() => '');
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (response.ok) return data;
  const error = data && typeof data.error === 'object' && data.error !== null ? data.error : null;
  const failure = new ApiError(
    response.status,
    (error && error.code) || 'http_error',
    (error && typeof error.message === 'string' && error.message) || `Request failed (HTTP ${response.status}).`,
    (error && error.field) || null,
  );
  if (response.status === 401 && usesSession && bearer) {
    failure.sessionEnded = true;
    hooks.expired();
  }
  throw failure;
}

/** Every item of a paged list, following has_more with after=last_id. */
export async function listAll(path, options) {
  const items = [];
  let after = null;
  for (let page = 0; page < 1000; page += 1) {
    const separator = path.includes('?') ? '&' : '?';
    const url = after ? `${path}${separator}after=${encodeURIComponent(after)}` : path;
    const list = await api('GET', url, options);
    items.push(...(list.data || []));
    if (!list.has_more || !list.last_id) break;
    after = list.last_id;
  }
  return items;
}

/** A query string from the members that have a value. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, v);
  const text = q.toString();
  return text ? `?${text}` : '';
}
