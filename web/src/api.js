// api.js — owns every request the live UI makes to the cicada server: JSON GETs, form-encoded POSTs
// (Locust's /swarm, /stop, /stats/reset) and the live snapshot stream, which is Server-Sent Events on
// /events with a polling fallback on /stats/requests. Paths are relative so the UI also works when it
// is served below a path prefix.

/** GET a JSON document; throws with the path and status on failure. */
export async function getJson(path) {
  const response = await fetch(path, { headers: { Accept: 'application/json' }, cache: 'no-store' });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

/**
 * POST form-encoded fields (arrays become repeated fields; empty values are left out).
 * Always resolves to `{success, message, ...}`, also for HTTP errors and non-JSON answers.
 */
export async function postForm(path, fields = {}) {
  const body = new URLSearchParams();
  for (const [key, value] of Object.entries(fields)) {
    const values = Array.isArray(value) ? value : [value];
    for (const v of values) {
      if (v !== undefined && v !== null && String(v).trim() !== '') body.append(key, String(v).trim());
    }
  }
  let response;
  try {
    response = await fetch(path, { method: 'POST', body, headers: { Accept: 'application/json' } });
  } catch (err) {
    return { success: false, message: `${path}: ${err.message || 'network error'}` };
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!data || typeof data !== 'object') data = { success: response.ok };
  if (!response.ok) {
    data.success = false;
    if (!data.message) data.message = `${path}: HTTP ${response.status}`;
  }
  if (typeof data.success !== 'boolean') data.success = response.ok;
  return data;
}

/** How long without a snapshot before the watchdog polls /stats/requests itself. */
const STALE_AFTER_MS = 2500;
const MAX_RETRY_MS = 15000;

/**
 * Delivers live snapshots to `onSnapshot(snapshot)` and the transport to `onConnection(kind)`, where
 * kind is "live" (SSE), "polling" (SSE silent or failing) or "offline" (nothing answers).
 *
 * EventSource reconnects by itself after a dropped connection; when the browser gives up (readyState
 * CLOSED, e.g. /events answered with an error) we open a new one with a growing delay. Meanwhile a
 * watchdog polls /stats/requests once a second while the stream is not open, or when it is open but
 * silent for STALE_AFTER_MS, so the UI stays current without SSE. Returns `{close, refresh}`.
 */
export function streamSnapshots({ onSnapshot, onConnection, eventsPath = 'events', pollPath = 'stats/requests' }) {
  let source = null;
  let lastAt = 0;
  let retryMs = 1000;
  let retryTimer = null;
  let polling = false;
  let closed = false;

  const deliver = (snapshot, kind) => {
    if (closed || !snapshot || typeof snapshot !== 'object') return;
    lastAt = Date.now();
    onConnection(kind);
    onSnapshot(snapshot);
  };

  const open = () => {
    if (closed || typeof EventSource === 'undefined') return;
    source = new EventSource(eventsPath);
    source.addEventListener('snapshot', (event) => {
      let snapshot;
      try {
        snapshot = JSON.parse(event.data);
      } catch {
        return;
      }
      retryMs = 1000;
      deliver(snapshot, 'live');
    });
    source.onerror = () => {
      if (source && source.readyState === EventSource.CLOSED) {
        source.close();
        source = null;
        retryTimer = setTimeout(open, retryMs);
        retryMs = Math.min(retryMs * 2, MAX_RETRY_MS);
      }
    };
  };

  const poll = async (kind = 'polling') => {
    if (polling || closed) return;
    polling = true;
    try {
      deliver(await getJson(pollPath), kind);
    } catch {
      if (!closed) onConnection('offline');
    } finally {
      polling = false;
    }
  };

  const watchdog = setInterval(() => {
    const sseOpen = source !== null && source.readyState === EventSource.OPEN;
    if (!sseOpen || Date.now() - lastAt > STALE_AFTER_MS) poll();
  }, 1000);

  open();
  poll();

  return {
    /** Fetch a snapshot now (after a POST, so the UI does not wait for the next event). */
    refresh: () => poll(source && source.readyState === EventSource.OPEN ? 'live' : 'polling'),
    close() {
      closed = true;
      clearInterval(watchdog);
      clearTimeout(retryTimer);
      if (source) source.close();
    },
  };
}
