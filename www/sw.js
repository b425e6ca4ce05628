// Burrow's service worker. A site a peer exposes (`burrow expose`) opens at
// /p/{peer}/{service}/...: each fetch there becomes an HTTP request that the room page (which
// holds the peer connection) carries over a data channel to that peer, which forwards it to the
// local site; the response streams back here. Nothing goes through the server.
const PREFIX = /^\/p\/([A-Za-z0-9_-]+)\/([^/]+)(\/.*)?$/;

self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (e) => e.waitUntil(self.clients.claim()));

self.addEventListener('fetch', (event) => {
  const url = new URL(event.request.url);
  if (url.origin !== location.origin) return;
  const m = url.pathname.match(PREFIX);
  if (m) {
    event.respondWith(proxy(event.request, m[1], decodeURIComponent(m[2]), (m[3] || '/') + url.search));
    return;
  }
  // An absolute path (`/style.css`) asked by a page of an opened site belongs to that site.
  if (event.clientId) {
    event.respondWith((async () => {
      const client = await self.clients.get(event.clientId);
      const c = client && new URL(client.url).pathname.match(PREFIX);
      if (!c) return fetch(event.request);
      return proxy(event.request, c[1], decodeURIComponent(c[2]), url.pathname + url.search);
    })());
  }
});

/** Asks a window whether it is connected to `peer`. */
function ask(client, peer) {
  return new Promise((resolve) => {
    const chan = new MessageChannel();
    chan.port1.onmessage = (e) => resolve(e.data === true);
    client.postMessage({ type: 'burrow-has-peer', peer }, [chan.port2]);
    setTimeout(() => resolve(false), 1500);
  });
}

/** The room page that is connected to `peer`. */
async function hostFor(peer) {
  const all = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
  for (const c of all) {
    if (new URL(c.url).pathname.startsWith('/r/') && (await ask(c, peer))) return c;
  }
  return null;
}

const NULL_BODY = new Set([101, 204, 205, 304]);

async function proxy(request, peer, service, path) {
  const host = await hostFor(peer);
  if (!host) {
    return new Response('Open the room page that is connected to this peer, then reload.', {
      status: 502,
      headers: { 'content-type': 'text/plain; charset=utf-8' },
    });
  }
  const body = ['GET', 'HEAD'].includes(request.method) ? null : await request.arrayBuffer();
  const headers = {};
  for (const [k, v] of request.headers) headers[k] = v;
  const chan = new MessageChannel();
  const msg = { type: 'burrow-fetch', peer, service, method: request.method, path, headers, body };
  host.postMessage(msg, body ? [chan.port2, body] : [chan.port2]);
  return new Promise((resolve) => {
    let controller = null;
    let answered = false;
    const stream = new ReadableStream({ start(c) { controller = c; } });
    chan.port1.onmessage = (e) => {
      const m = e.data;
      if (m.type === 'head') {
        answered = true;
        const init = { status: m.status, statusText: m.statusText, headers: m.headers };
        resolve(new Response(NULL_BODY.has(m.status) || request.method === 'HEAD' ? null : stream, init));
      } else if (m.type === 'data') {
        controller.enqueue(new Uint8Array(m.data));
      } else if (m.type === 'end') {
        controller.close();
      } else if (m.type === 'error') {
        if (!answered) resolve(new Response(`Burrow: ${m.message}`, { status: 502 }));
        else controller.error(new Error(m.message));
      }
    };
  });
}
