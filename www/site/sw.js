// The service worker of one exposed site's origin (see signal-server/src/sites.rs). Every
// request of the site becomes a message to the host frame (/__burrow/host.html), which passes it
// over its port to the room page, which carries it peer to peer to the one service this origin
// belongs to; the response streams back here. Nothing goes through the server.
'use strict';

self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (e) => e.waitUntil(self.clients.claim()));

self.addEventListener('fetch', (event) => {
  const url = new URL(event.request.url);
  if (url.origin !== location.origin || url.pathname.startsWith('/__burrow/')) return;
  event.respondWith(proxy(event, url.pathname + url.search));
});

// Which host frame serves each of the site's documents: the one that served its navigation,
// so a page's own requests all go where the page came from. Only room pages can make host
// frames (frame-ancestors), and the origin's label is the visitor's secret: every host frame
// here is one of this visitor's own room pages, showing this same peer's service. Forgotten
// with the worker; a page whose host frame is gone is served by another.
const owners = new Map(); // site document's client id -> host frame's client id
const MAX_OWNERS = 1024;

/** The host frame for `event`: its document's owner, else one of this origin's host frames. */
async function hostFrame(event) {
  const all = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
  const hosts = all.filter((c) => c.frameType === 'nested' && new URL(c.url).pathname === '/__burrow/host.html');
  const owner = owners.get(event.clientId);
  const host = hosts.find((c) => c.id === owner) || hosts.find((c) => c.visibilityState === 'visible') || hosts[0] || null;
  if (host && event.resultingClientId) {
    if (owners.size >= MAX_OWNERS) owners.delete(owners.keys().next().value);
    owners.set(event.resultingClientId, host.id);
  }
  return host;
}

const NULL_BODY = new Set([101, 204, 205, 304]);

async function proxy(event, path) {
  const request = event.request;
  const host = await hostFrame(event);
  if (!host) {
    return new Response('Open this site from the Burrow room page.', {
      status: 502,
      headers: { 'content-type': 'text/plain; charset=utf-8' },
    });
  }
  const body = ['GET', 'HEAD'].includes(request.method) ? null : await request.arrayBuffer();
  const headers = {};
  for (const [k, v] of request.headers) headers[k] = v;
  const chan = new MessageChannel();
  const msg = { type: 'burrow-fetch', method: request.method, path, headers, body };
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
        chan.port1.close();
      } else if (m.type === 'error') {
        if (!answered) resolve(new Response(`Burrow: ${m.message}`, { status: 502 }));
        else controller.error(new Error(m.message));
        chan.port1.close();
      }
    };
  });
}
