// The host frame of one exposed site, on that site's own origin (see signal-server/src/sites.rs).
//
// The room page frames this page and hands it a MessagePort bound to one peer and one service;
// no other page can (only a room page may frame this one, and only the top window's port counts).
// This page installs the origin's service worker and shows the site in a frame of its own; the
// worker sends every request of the site here, and this page passes it over the port. The site
// runs on this origin, never on the room page's: it cannot script the room, read its storage or
// reach any other peer's service, since the port can only name its own.
'use strict';

const state = document.getElementById('state');
const site = document.getElementById('site');
let port = null;

function say(text) {
  state.textContent = text;
  state.hidden = !text;
}

// The room page that frames us: the top window, on the origin the browser says framed us (the
// server lets only room pages frame this page: `frame-ancestors`, see sites.rs).
const roomOrigin = window.parent === window.top ? location.ancestorOrigins?.[0] : undefined;

// The first port the room page sends is the one this frame serves, for its whole life.
window.addEventListener('message', (e) => {
  if (port || e.source !== window.parent || !roomOrigin || e.origin !== roomOrigin) return;
  if (!e.data || e.data.type !== 'burrow-port' || !e.ports[0]) return;
  port = e.ports[0];
  start().catch((err) => say(`cannot open the site: ${err}`));
});

async function start() {
  if (!navigator.serviceWorker) throw new Error('service workers are off here (the page needs https)');
  await navigator.serviceWorker.register('/__burrow/sw.js', { scope: '/' });
  await navigator.serviceWorker.ready;
  say('');
  site.hidden = false;
  site.src = '/';
}

// Requests from the worker: passed on with their reply port, and the body if any.
if (navigator.serviceWorker) {
  navigator.serviceWorker.onmessage = (e) => {
    const m = e.data;
    if (!m || m.type !== 'burrow-fetch' || !e.ports[0]) return;
    if (!port) {
      e.ports[0].postMessage({ type: 'error', message: 'the room page has not connected this frame' });
      return;
    }
    const transfer = m.body ? [e.ports[0], m.body] : [e.ports[0]];
    port.postMessage({ type: 'burrow-fetch', method: m.method, path: m.path, headers: m.headers, body: m.body }, transfer);
  };
}

// Tell the room page we are ready for a port (nothing secret is said).
if (roomOrigin) window.parent.postMessage({ type: 'burrow-site-ready' }, roomOrigin);
else say('Open this site from the Burrow room page.');
