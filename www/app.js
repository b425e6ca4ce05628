// The page's glue: shows what the wasm peer (www/pkg, built from wasm-peer/) reports, and
// passes the user's chat lines and files to it. All peer logic lives in Rust.
import init, { Room, netcheckVerdict, roomIdOf } from '/pkg/wasm_peer.js';

const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
};

const roomMatch = location.pathname.match(/^\/r\/([A-Za-z0-9_-]{1,64})\/?$/);

function showStatus(text, kind = 'info', action) {
  const s = $('status');
  s.hidden = !text;
  s.className = `status ${kind}`;
  s.textContent = text || '';
  if (action) {
    const b = el('button', 'button', action.label);
    b.onclick = action.run;
    s.append(' ', b);
  }
}

if (!roomMatch) {
  $('landing').hidden = false;
  $('join-form').onsubmit = async (e) => {
    e.preventDefault();
    await init();
    // The same parser `burrow` uses (peer_core::link).
    const id = roomIdOf($('join-id').value, location.origin);
    if (id) location.href = `/r/${id}`;
    else showStatus('That is not a room id or link.', 'error');
  };
} else {
  startRoom(roomMatch[1]);
}

async function startRoom(roomId) {
  $('room').hidden = false;
  const link = `${location.origin}/r/${roomId}`;
  $('link').value = link;
  $('cli-hint').textContent = `burrow join ${link}`;
  $('copy').onclick = async () => {
    try {
      await navigator.clipboard.writeText(link);
    } catch {
      $('link').select();
      document.execCommand('copy');
    }
    $('copy').textContent = 'Copied';
    setTimeout(() => ($('copy').textContent = 'Copy'), 1500);
  };
  $('netcheck-run').onclick = netcheck;
  // The server draws the QR code (the page's wasm stays small).
  const qr = document.createElement('img');
  qr.alt = 'QR code of the room link';
  qr.src = `/qr.svg?text=${encodeURIComponent(link)}`;
  $('qr').replaceChildren(qr);
  await init();

  const peers = new Map(); // id -> {li, name}
  const transfers = new Map(); // id -> {li, size}
  const wsUrl = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws/${roomId}`;
  const nameInput = $('name');
  nameInput.value = localStorage.getItem('burrow.name') || '';
  let room = null;

  // A name always with its id: two peers may pick the same name (the server drops bidi and
  // invisible characters from names, so one cannot pose as another by look alone).
  const who = (id, name) => (name ? `${name} (${id})` : id);
  const label = (id) => who(id, peers.get(id)?.name);

  function note(text) {
    const li = el('li', 'note', text);
    $('chat-log').append(li);
    li.scrollIntoView({ block: 'nearest' });
  }

  function renderEmpty() {
    const list = $('peers');
    const empty = list.querySelector('.empty');
    if (peers.size === 0 && !empty) list.append(el('li', 'empty', 'Nobody else here yet — share the link.'));
    if (peers.size > 0 && empty) empty.remove();
  }

  // The events this page was told, newest last (the same set `burrow --json` prints; kept for
  // scripts and tests, bounded).
  const events = [];
  window.burrowEvents = events;

  function onEvent(ev) {
    if (ev.event !== 'voice_track') {
      events.push(ev);
      if (events.length > 500) events.shift();
    }
    switch (ev.event) {
      case 'joined':
        $('me').textContent = nameInput.value ? `${nameInput.value} (${ev.peer_id})` : ev.peer_id;
        showStatus('');
        break;
      case 'peer_joined': {
        const li = el('li', 'peer');
        li.dataset.peer = ev.peer;
        li.append(el('span', 'who', who(ev.peer, ev.name)),
          el('span', 'voice', ''), el('span', 'state', 'connecting'), el('span', 'badge', ''), el('span', 'rtt', ''));
        peers.set(ev.peer, { li, name: ev.name });
        $('peers').append(li);
        renderEmpty();
        break;
      }
      case 'peer_state': {
        const p = peers.get(ev.peer);
        if (p) {
          // 'disconnected': the path went quiet (consent checks unanswered); the connection
          // waits for the peer, greyed out, and says so.
          const unreachable = ev.state === 'disconnected';
          p.li.querySelector('.state').textContent = unreachable ? 'unreachable' : ev.state;
          p.li.dataset.state = ev.state;
        }
        break;
      }
      case 'connection_failed':
        if (peers.has(ev.peer)) note(`Could not reach ${label(ev.peer)}: no path found.`);
        break;
      case 'connected':
      case 'path_changed':
      case 'path_stats': {
        const p = peers.get(ev.peer);
        if (!p) break;
        // Path reports repeat; an unreachable peer stays so until its state says otherwise.
        if (p.li.dataset.state !== 'disconnected') {
          p.li.dataset.state = 'connected';
          p.li.querySelector('.state').textContent = 'connected';
        }
        const badge = p.li.querySelector('.badge');
        badge.textContent = ev.label;
        badge.dataset.path = ev.path || '';
        const pair = ev.local && ev.remote ? `${ev.local} ↔ ${ev.remote}` : '';
        badge.title = pair ? `candidate pair: ${pair}` : '';
        p.li.querySelector('.rtt').textContent = ev.rtt_ms != null ? `${ev.rtt_ms.toFixed(1)} ms` : '';
        // Repeated every few seconds with fresh stats; note only what changed.
        if (p.label !== ev.label) note(`${p.label ? 'Now' : 'Connected'} to ${label(ev.peer)}: ${ev.label}.`);
        p.label = ev.label;
        break;
      }
      case 'services': {
        const p = peers.get(ev.peer);
        if (!p) break;
        p.services = ev.services;
        p.li.querySelector('.services')?.remove();
        const box = el('span', 'services');
        for (const svc of ev.services) {
          // Down: the exposer's health check finds its local service not answering.
          const down = svc.down === true;
          if (svc.kind === 'http') {
            const b = el('button', down ? 'button open down' : 'button open', down ? `${svc.name}: down` : `Open ${svc.name}`);
            b.dataset.service = svc.name;
            b.disabled = down;
            b.title = down ? `${svc.name} is down: its local server does not answer` : '';
            b.onclick = () => openSite(ev.peer, svc);
            box.append(b);
          } else {
            const text = `${svc.kind === 'udp' ? 'udp' : 'tcp'} “${svc.name}”: ${down ? 'down' : 'use burrow forward'}`;
            box.append(el('span', down ? 'tcp down' : 'tcp', text));
          }
        }
        p.li.append(box);
        break;
      }
      case 'peer_left': {
        const p = peers.get(ev.peer);
        if (p) {
          p.li.remove();
          peers.delete(ev.peer);
          const a = voice.audio.get(ev.peer);
          if (a) { a.srcObject = null; a.remove(); voice.audio.delete(ev.peer); }
          note(`${label(ev.peer)} left.`);
        }
        renderEmpty();
        break;
      }
      case 'chat': {
        const li = el('li', 'msg');
        li.dataset.from = ev.from;
        li.append(el('b', null, who(ev.from, ev.name)), el('span', 'text', ev.text));
        $('chat-log').append(li);
        li.scrollIntoView({ block: 'nearest' });
        break;
      }
      case 'file_started': {
        const li = el('li', 'transfer');
        li.dataset.id = ev.id;
        li.dataset.direction = ev.direction;
        const arrow = ev.direction === 'in' ? `from ${label(ev.peer)}` : `to ${label(ev.peer)}`;
        const bar = el('progress');
        bar.max = ev.size || 1;
        bar.value = 0;
        li.append(el('span', 'fname', ev.name), el('span', 'dir', `${arrow} · ${fmtBytes(ev.size)}`),
          bar, el('span', 'fstatus', ev.direction === 'in' ? 'receiving…' : 'sending…'));
        transfers.set(ev.id, { li, bar, name: ev.name, size: ev.size });
        $('transfers').prepend(li);
        break;
      }
      case 'file_progress': {
        const t = transfers.get(ev.id);
        if (t) t.bar.value = ev.done;
        break;
      }
      case 'file_sent':
      case 'file_received': {
        const t = transfers.get(ev.id);
        if (!t) break;
        t.bar.value = t.size;
        t.li.dataset.sha256 = ev.sha256;
        const status = t.li.querySelector('.fstatus');
        status.textContent = '';
        if (ev.url) {
          const a = el('a', 'download button', 'Download');
          a.href = ev.url;
          a.download = t.name;
          status.append(a);
        } else {
          status.textContent = 'delivered ✓';
        }
        t.li.title = `SHA-256 ${ev.sha256}`;
        t.li.classList.add('done');
        break;
      }
      case 'file_failed': {
        const t = transfers.get(ev.id);
        if (t) {
          t.li.classList.add('failed');
          t.li.querySelector('.fstatus').textContent = `failed: ${ev.reason}`;
        }
        break;
      }
      case 'error':
        if (ev.code === 'room_full') {
          showStatus(`This room is full. ${ev.message}`, 'error', { label: 'Try again', run: () => room.retry() });
        } else {
          showStatus(`${ev.message} (${ev.code})`, 'error');
        }
        break;
      case 'server_lost':
        showStatus(`Lost the connection to the server — links to peers carry on; reconnecting in ${(ev.retry_in_ms / 1000).toFixed(1)} s…`, 'warn');
        break;
      case 'server_back':
        showStatus('');
        note(`Back in the room after ${(ev.after_ms / 1000).toFixed(1)} s${ev.resumed ? ' (the server kept our place)' : ''}.`);
        break;
      case 'voice': {
        const p = peers.get(ev.peer);
        if (!p) break;
        p.inVoice = ev.on;
        p.li.querySelector('.voice').textContent = ev.on ? (ev.sending ? 'in voice' : 'in voice, listening') : '';
        note(`${label(ev.peer)} ${ev.on ? 'joined' : 'left'} voice${ev.on && !ev.sending ? ' (listening only)' : ''}.`);
        playVoice();
        break;
      }
      case 'voice_track': {
        const p = peers.get(ev.peer);
        if (!p) break;
        p.stream = ev.stream || new MediaStream([ev.track]);
        playVoice();
        break;
      }
      case 'peer_unreachable':
        if (peers.has(ev.peer)) note(`${label(ev.peer)} is unreachable; waiting for it.`);
        break;
      case 'peer_back':
        if (peers.has(ev.peer)) note(`${label(ev.peer)} is back.`);
        break;
      case 'ice_restart':
        if (peers.has(ev.peer)) note(`The link to ${label(ev.peer)} is down: looking for a new path…`);
        break;
    }
  }

  // Sites peers expose open in the "Site" panel, each on an origin of its own
  // (`<label>.<sites domain>`, see signal-server/src/sites.rs): the site can never script this
  // page, read its storage, or reach another service. Its host frame asks for a port; the port
  // we give it carries requests to that one peer and service only.
  const tokens = new Map(); // "peer/service" -> token
  const sitesDomain = fetch('/api/sites').then((r) => r.json()).then((j) => j.domain).catch(() => null);
  let siteFrame = null; // { origin, peer, service, channel }
  // The visitor's own secret in every site label: no other member can compute the origin of a
  // site we open (and frame it, or plant storage there); kept, so a site's cookies last.
  const newSalt = () => [...crypto.getRandomValues(new Uint8Array(16))].map((b) => b.toString(16).padStart(2, '0')).join('');
  let pageSalt = null; // when storage is off: this page's own
  function siteSalt() {
    try {
      let salt = localStorage.getItem('burrow.site-salt');
      if (!/^[0-9a-f]{32}$/.test(salt || '')) localStorage.setItem('burrow.site-salt', (salt = newSalt()));
      return salt;
    } catch {
      return (pageSalt ||= newSalt());
    }
  }
  async function siteOrigin(peer, service) {
    const domain = await sitesDomain;
    if (!domain) return null;
    const bytes = new TextEncoder().encode(`${siteSalt()}\n${roomId}\n${peer}\n${service}`);
    const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
    const label = [...digest.slice(0, 16)].map((b) => b.toString(16).padStart(2, '0')).join('');
    return `${location.protocol}//${label}.${domain}${location.port ? `:${location.port}` : ''}`;
  }
  async function openSite(peer, svc) {
    if (!window.isSecureContext || !crypto.subtle) {
      showStatus('Opening sites needs the page over https (or on localhost).', 'error');
      return;
    }
    const origin = await siteOrigin(peer, svc.name);
    if (!origin) {
      showStatus('This server has no sites domain (--sites-domain): sites open only from a page on localhost.', 'error');
      return;
    }
    if (svc.protected && !tokens.has(`${peer}/${svc.name}`)) {
      const t = prompt(`The service “${svc.name}” needs its access token:`);
      if (t === null) return;
      tokens.set(`${peer}/${svc.name}`, t);
    }
    siteFrame?.channel.port1.close();
    siteFrame = { origin, peer, service: svc.name, channel: new MessageChannel() };
    $('site').hidden = false;
    $('site-title').textContent = `${svc.name} on ${label(peer)}`;
    $('site-origin').textContent = origin;
    $('site-frame').src = `${origin}/__burrow/host.html`;
  }
  // What a site's frame may ask for: a plain method, an origin-relative path, header lines
  // that cannot split the request (the site's own code could write these messages).
  const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
  function checkedRequest(m) {
    if (!m || m.type !== 'burrow-fetch' || !/^[A-Z]{1,16}$/.test(m.method)) return null;
    if (typeof m.path !== 'string' || !/^\/[\x21-\x7e]*$/.test(m.path)) return null;
    const headers = {};
    for (const [k, v] of Object.entries(m.headers || {})) {
      if (TOKEN.test(k) && typeof v === 'string' && !/[\r\n\0]/.test(v)) headers[k] = v;
    }
    const body = m.body instanceof ArrayBuffer ? m.body : null;
    return { method: m.method, path: m.path, headers, body };
  }
  window.addEventListener('message', (e) => {
    const f = siteFrame;
    if (!f || e.origin !== f.origin || e.source !== $('site-frame').contentWindow) return;
    if (!e.data || e.data.type !== 'burrow-site-ready') return;
    // A fresh channel each time the frame (re)loads; the old one goes quiet.
    f.channel.port1.close();
    f.channel = new MessageChannel();
    const { peer, service } = f;
    f.channel.port1.onmessage = (ev) => {
      const req = checkedRequest(ev.data);
      if (!ev.ports[0]) return;
      if (!req) {
        ev.ports[0].postMessage({ type: 'error', message: 'malformed request' });
        return;
      }
      // Peer and service are this frame's, whatever the message says.
      httpOverStream(room, { ...req, peer, service }, ev.ports[0], tokens.get(`${peer}/${service}`));
    };
    e.source.postMessage({ type: 'burrow-port' }, f.origin, [f.channel.port2]);
  });
  // Earlier versions served sites through a worker on this origin: retire it.
  navigator.serviceWorker?.getRegistrations().then((rs) => rs.forEach((r) => r.unregister())).catch(() => {});

  // Voice: everyone who joined hears everyone else who did. A peer's audio is played only while
  // we are in voice; the speaking indicator follows the level getStats() reports.
  const voice = { on: false, muted: false, audio: new Map() };
  function playVoice() {
    for (const [id, p] of peers) {
      let a = voice.audio.get(id);
      const want = voice.on && p.inVoice && p.stream;
      if (want && !a) {
        a = document.createElement('audio');
        a.autoplay = true;
        a.dataset.peer = id;
        document.body.append(a);
        voice.audio.set(id, a);
      }
      if (a) {
        if (want && a.srcObject !== p.stream) { a.srcObject = p.stream; a.play?.().catch(() => {}); }
        if (!want) { a.srcObject = null; a.remove(); voice.audio.delete(id); }
      }
    }
  }
  setInterval(async () => {
    if (!room || !voice.on) return;
    const stats = await room.voiceStats().catch(() => []);
    for (const s of stats) {
      const tag = peers.get(s.peer)?.li.querySelector('.voice');
      if (tag) tag.classList.toggle('speaking', s.level > 0.02);
    }
  }, 300);
  $('voice-join').onclick = async () => {
    if (!room) return;
    if (voice.on) {
      room.leaveVoice();
      voice.on = false;
      $('voice-join').textContent = 'Join voice';
      $('voice-mute').hidden = true;
      $('voice-note').textContent = '';
      playVoice();
      return;
    }
    let stream = null;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch (e) {
      $('voice-note').textContent = `No microphone (${e.name || e}): you can listen, not speak.`;
    }
    room.joinVoice(stream);
    voice.on = true;
    voice.muted = false;
    $('voice-join').textContent = 'Leave voice';
    $('voice-mute').hidden = !stream;
    $('voice-mute').textContent = 'Mute';
    playVoice();
  };
  $('voice-mute').onclick = () => {
    voice.muted = !voice.muted;
    room?.setMuted(voice.muted);
    $('voice-mute').textContent = voice.muted ? 'Unmute' : 'Mute';
  };

  // Closing the tab leaves the room at once (otherwise the server keeps our place a while).
  window.addEventListener('pagehide', () => { if (room) room.leave(); });

  function connect() {
    if (room) room.leave();
    voice.on = false;
    for (const a of voice.audio.values()) { a.srcObject = null; a.remove(); }
    voice.audio.clear();
    $('voice-join').textContent = 'Join voice';
    $('voice-mute').hidden = true;
    peers.forEach((p) => p.li.remove());
    peers.clear();
    renderEmpty();
    room = new Room(wsUrl, nameInput.value.trim() || null, onEvent);
    window.burrowRoom = room;
  }
  connect();

  nameInput.onchange = () => {
    localStorage.setItem('burrow.name', nameInput.value.trim());
    connect();
  };

  $('chat-form').onsubmit = (e) => {
    e.preventDefault();
    const text = $('chat-input').value;
    if (!text.trim()) return;
    room.sendChat(text);
    const li = el('li', 'msg mine');
    li.append(el('b', null, 'you'), el('span', 'text', text));
    $('chat-log').append(li);
    li.scrollIntoView({ block: 'nearest' });
    $('chat-input').value = '';
  };

  const sendFiles = (files) => {
    for (const f of files) {
      if (room.sendFile(f) === 0) showStatus('No peer is connected yet: nobody to send to.', 'warn');
    }
  };
  $('file-input').onchange = (e) => {
    sendFiles(e.target.files);
    e.target.value = '';
  };
  const drop = $('drop');
  drop.ondragover = (e) => {
    e.preventDefault();
    drop.classList.add('over');
  };
  drop.ondragleave = () => drop.classList.remove('over');
  drop.ondrop = (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    sendFiles(e.dataTransfer.files);
  };
}

// Netcheck in the browser: one RTCPeerConnection with both STUN ports as ICE servers gathers
// from one socket; one public ip:port back means endpoint-independent mapping, two mean the
// mapping depends on the destination (symmetric NAT).
async function netcheck() {
  const out = $('netcheck-result');
  out.textContent = 'checking…';
  try {
    const { stun } = await (await fetch('/api/netcheck')).json();
    const pc = new RTCPeerConnection({ iceServers: stun.map((u) => ({ urls: [u] })) });
    const seen = new Set();
    const done = new Promise((resolve) => {
      pc.onicecandidate = (e) => {
        if (!e.candidate) return resolve();
        const c = e.candidate;
        if (c.type === 'srflx') seen.add(`${c.address}:${c.port}`);
      };
      setTimeout(resolve, 5000);
    });
    pc.createDataChannel('netcheck');
    await pc.setLocalDescription(await pc.createOffer());
    await done;
    pc.close();
    const mapped = [...seen];
    // The same verdict `burrow netcheck` gives (peer_core::netcheck).
    const { mapping, advice } = netcheckVerdict(mapped);
    out.dataset.mapping = mapping;
    out.innerHTML = '';
    out.append(el('div', null, `public address: ${mapped.join(', ') || 'unknown'}`), el('strong', null, advice));
  } catch (err) {
    out.textContent = `netcheck failed: ${err}`;
  }
}

// One HTTP/1.0 exchange over a stream to a peer's service: the request goes out as bytes, the
// response comes back as bytes, parsed here just enough to hand status and headers to the
// service worker; the body streams through untouched.
const HOP = new Set(['host', 'connection', 'keep-alive', 'transfer-encoding', 'upgrade',
  'accept-encoding', 'proxy-connection', 'te', 'trailer']);
async function httpOverStream(room, m, port, token) {
  const enc = new TextEncoder();
  let head = `${m.method} ${m.path} HTTP/1.0\r\nHost: ${m.service}\r\nConnection: close\r\n`;
  for (const [k, v] of Object.entries(m.headers)) {
    if (!HOP.has(k.toLowerCase())) head += `${k}: ${v}\r\n`;
  }
  if (m.body) head += `Content-Length: ${m.body.byteLength}\r\n`;
  head += '\r\n';
  let pending = new Uint8Array(0);
  let headDone = false;
  const onData = (chunk) => {
    if (headDone) {
      port.postMessage({ type: 'data', data: chunk.buffer }, [chunk.buffer]);
      return;
    }
    const joined = new Uint8Array(pending.length + chunk.length);
    joined.set(pending);
    joined.set(chunk, pending.length);
    pending = joined;
    let end = -1;
    for (let i = 0; i + 3 < pending.length; i++) {
      if (pending[i] === 13 && pending[i + 1] === 10 && pending[i + 2] === 13 && pending[i + 3] === 10) { end = i; break; }
    }
    if (end < 0) return;
    const [statusLine, ...lines] = new TextDecoder().decode(pending.slice(0, end)).split('\r\n');
    const [, code, ...reason] = statusLine.split(' ');
    const headers = [];
    for (const l of lines) {
      const i = l.indexOf(':');
      if (i > 0 && !HOP.has(l.slice(0, i).trim().toLowerCase())) headers.push([l.slice(0, i).trim(), l.slice(i + 1).trim()]);
    }
    headDone = true;
    port.postMessage({ type: 'head', status: Number(code) || 502, statusText: reason.join(' '), headers });
    const rest = pending.slice(end + 4);
    if (rest.length) port.postMessage({ type: 'data', data: rest.buffer }, [rest.buffer]);
  };
  const onEnd = (reason) => {
    if (reason) port.postMessage({ type: 'error', message: reason });
    else port.postMessage(headDone ? { type: 'end' } : { type: 'error', message: 'no HTTP response' });
  };
  try {
    const s = await room.openStream(m.peer, m.service, token ?? null, onData, onEnd);
    await s.write(enc.encode(head));
    if (m.body) await s.write(new Uint8Array(m.body));
    s.end();
  } catch (err) {
    port.postMessage({ type: 'error', message: String(err) });
  }
}

function fmtBytes(n) {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let i = -1;
  do {
    n /= 1024;
    i++;
  } while (n >= 1024 && i < units.length - 1);
  return `${n.toFixed(1)} ${units[i]}`;
}
