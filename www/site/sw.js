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
  event.respondWith(proxy(event.request, url.pathname + url.search));
});

/** The host frame of this origin (there is one per room page that opened the site). */
async function hostFrame() {
  const all = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
  return all.find((c) => new URL(c.url).pathname === '/__burrow/host.html') || null;
}

const NULL_BODY = new Set([101, 204, 205, 304]);

async function proxy(request, path) {
  const host = await hostFrame();
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
