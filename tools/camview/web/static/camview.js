// camview: watch one camera live, over WebRTC, through camview's WHEP endpoint
// (draft-ietf-wish-whep).
//
// The page's address carries the camera and the grant in its fragment,
// #device=ID&grant=G, which the browser never sends to a server. The page
//   1. makes a receive-only video PeerConnection and waits for ICE gathering to complete
//      (no trickle: the offer carries every candidate),
//   2. POSTs the offer to /whep/<device> with the grant as a bearer token,
//   3. applies the camera's answer and plays the video,
//   4. DELETEs its WHEP session when the page goes away,
//   5. when its connection breaks, GETs its WHEP session, which says (410 Gone) why the camera
//      ended it (privacy mode, the grant's expiry, a rotation, …), and shows that.
//
// window.camview.stats() reports what the browser decoded, for people and for tests.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const video = $('video');
  const stateLine = $('state');
  const statsLine = $('stats');
  const form = $('connect');

  // How long to wait for ICE gathering before offering what was gathered.
  const GATHER_TIMEOUT_MS = 5000;

  let pc = null;        // the RTCPeerConnection
  let resource = null;  // the WHEP session's URL, to DELETE when leaving
  let lastError = null; // the last error, as text

  function show(text) {
    stateLine.textContent = text;
  }

  function fail(err) {
    lastError = (err && err.message) || String(err);
    show('Error: ' + lastError);
  }

  // The camera and grant from the fragment, or empty strings.
  function fromFragment() {
    const p = new URLSearchParams(location.hash.slice(1));
    return { device: p.get('device') || '', grant: p.get('grant') || '' };
  }

  // Resolves when ICE gathering is complete, or after timeoutMs.
  function gatheringComplete(conn, timeoutMs) {
    return new Promise((resolve) => {
      if (conn.iceGatheringState === 'complete') {
        resolve();
        return;
      }
      const check = () => {
        if (conn.iceGatheringState === 'complete') done();
      };
      const done = () => {
        clearTimeout(timer);
        conn.removeEventListener('icegatheringstatechange', check);
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      conn.addEventListener('icegatheringstatechange', check);
    });
  }

  async function watch(device, grant) {
    lastError = null;
    const conn = new RTCPeerConnection({ iceServers: [] });
    pc = conn;
    conn.addTransceiver('video', { direction: 'recvonly' });
    conn.addEventListener('track', (e) => {
      video.srcObject = e.streams[0] || new MediaStream([e.track]);
    });
    conn.addEventListener('connectionstatechange', () => {
      if (pc !== conn) return; // an earlier connection, closed to watch again
      const state = conn.connectionState;
      if (state === 'disconnected' || state === 'failed') {
        explain(conn, state).catch(fail);
      } else if (state !== 'closed') {
        show('Connection: ' + state);
      }
    });

    show('Gathering network candidates…');
    await conn.setLocalDescription(await conn.createOffer());
    await gatheringComplete(conn, GATHER_TIMEOUT_MS);

    show('Asking camera ' + device + '…');
    const res = await fetch('/whep/' + encodeURIComponent(device), {
      method: 'POST',
      headers: { 'Content-Type': 'application/sdp', 'Authorization': 'Bearer ' + grant },
      body: conn.localDescription.sdp,
      cache: 'no-store',
      redirect: 'error',
    });
    if (res.status !== 201) {
      const why = (await res.text()).trim();
      throw new Error(why || 'HTTP ' + res.status);
    }
    resource = new URL(res.headers.get('Location'), location.href).href;
    await conn.setRemoteDescription({ type: 'answer', sdp: await res.text() });
    // The camera closes DTLS when it ends the session: the browser says so at once, while ICE
    // would take seconds to notice the silence.
    const receiver = conn.getReceivers()[0];
    const dtls = receiver && receiver.transport;
    if (dtls) {
      dtls.addEventListener('statechange', () => {
        if (pc === conn && (dtls.state === 'closed' || dtls.state === 'failed')) {
          explain(conn, 'ended').catch(fail);
        }
      });
    }
    show('Connecting…');
  }

  // Says why the connection broke ('disconnected' or 'failed', or 'ended' when the camera
  // closed it): asks the WHEP session, which says (410 Gone) when the camera ended it, and why.
  // The camera closes the connection just before it sends its reason, so an ended connection
  // asks a few times while the session is still live.
  async function explain(conn, state) {
    let why = '';
    let relay = 'live'; // 'live', 'unknown' (404: restarted?) or 'unreachable'
    for (let attempt = 0; resource && !why; attempt++) {
      try {
        const res = await fetch(resource, { cache: 'no-store', redirect: 'error' });
        if (res.status === 410) why = (await res.text()).trim();
        relay = res.status === 404 ? 'unknown' : 'live';
      } catch (e) {
        relay = 'unreachable';
      }
      if (why || relay !== 'live' || state !== 'ended' || attempt >= 5) break;
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
    if (pc !== conn) return; // the viewer moved on meanwhile
    if (why) {
      resource = null; // the camera ended it: there is nothing to DELETE
      pc = null;
      conn.close();
      lastError = why;
      show('Stopped: ' + why);
      return;
    }
    if (state === 'disconnected' && conn.connectionState === 'disconnected') {
      show('Connection interrupted: waiting for the camera…');
      return;
    }
    if (state === 'disconnected') return; // it recovered, or failed meanwhile: that says more
    // The camera closed the connection, or ICE gave up (this page does no ICE restart): it is
    // over. The DELETE frees the session's place on the relay at once, which a camera that
    // lost power would otherwise hold until the grant's expiry.
    deleteSession();
    pc = null;
    conn.close();
    if (relay === 'unknown') {
      fail(new Error('the connection to the camera was lost, and camview no longer knows this session (was it restarted?): reload the page to watch again'));
    } else if (relay === 'unreachable') {
      fail(new Error('the connection to the camera was lost, and camview does not answer (is it running?): reload the page once it is back'));
    } else {
      fail(new Error('the connection to the camera was lost (is the camera online?): reload the page to try again'));
    }
  }

  // Deletes the WHEP session, so the camera is told at once rather than when ICE consent
  // fails. keepalive lets the request outlive the page.
  function deleteSession() {
    if (resource) {
      fetch(resource, { method: 'DELETE', keepalive: true }).catch(() => {});
      resource = null;
    }
  }

  // Ends the session and closes the connection, to watch another camera.
  function hangUp() {
    deleteSession();
    if (pc) {
      pc.close();
      pc = null;
    }
  }

  // What the browser decoded so far, from getStats() (inbound-rtp, kind video).
  async function stats() {
    const out = {
      framesDecoded: 0,
      frameWidth: 0,
      frameHeight: 0,
      framesPerSecond: 0,
      connectionState: pc ? pc.connectionState : 'closed',
      error: lastError,
    };
    if (!pc) return out;
    const report = await pc.getStats();
    report.forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') {
        out.framesDecoded = s.framesDecoded || 0;
        out.frameWidth = s.frameWidth || 0;
        out.frameHeight = s.frameHeight || 0;
        out.framesPerSecond = s.framesPerSecond || 0;
      }
    });
    return out;
  }

  async function showStats() {
    const s = await stats();
    if (s.framesDecoded > 0) {
      statsLine.textContent = s.frameWidth + '×' + s.frameHeight + ', ' +
        Math.round(s.framesPerSecond) + ' fps, ' + s.framesDecoded + ' frames decoded';
    }
  }

  function start() {
    const { device, grant } = fromFragment();
    if (!device || !grant) {
      form.hidden = false;
      show('Enter a camera id and a grant.');
      return;
    }
    form.hidden = true;
    watch(device, grant).catch((err) => {
      fail(err);
      if (pc) {
        pc.close();
        pc = null;
      }
    });
  }

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const p = new URLSearchParams({ device: $('device').value.trim(), grant: $('grant').value.trim() });
    location.hash = p.toString(); // hashchange starts watching
  });
  window.addEventListener('hashchange', () => {
    hangUp();
    start();
  });
  // The browser closes the connection as the page goes; closing it here first would make the
  // camera end the session as failed before the DELETE arrives.
  window.addEventListener('pagehide', deleteSession);
  window.addEventListener('pageshow', (e) => {
    if (e.persisted) start(); // back from the back-forward cache, where pagehide hung up
  });

  window.camview = { stats };
  setInterval(() => showStats().catch(() => {}), 1000);
  start();
})();
