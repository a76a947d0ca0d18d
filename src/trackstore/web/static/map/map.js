/* The TrackStore fleet map.
 *
 * Markers follow the live stream (/fleet/stream, Server-Sent Events): a `snapshot` event
 * replaces them all, a `position` event moves or adds one, a `leave` event removes one. Opening a
 * device's popup (a click, or Enter on a focused marker) draws its track for the chosen window
 * from /locations/{deviceId}.
 *
 * With API keys configured, the API answers 401 until the page sends a key: the page then asks
 * for one, keeps it in sessionStorage (this tab only) and sends it as `Authorization: Bearer` on
 * its requests and as `access_token` on the stream's URL (EventSource cannot set headers). A key
 * can also come once in the address's fragment, /map#key=..., which is never sent to a server;
 * the page moves it to sessionStorage and takes it out of the address bar.
 */
(function () {
  "use strict";

  const STREAM_PATH = "/fleet/stream";
  const PROBE_PATH = "/devices?limit=1";
  const KEY_ITEM = "trackstore.apiKey";
  const PAGE_SIZE = 1000;
  const MAX_PAGES = 10; // at most 10,000 points in a track: the newest ones
  const RETRY_MS = 3000;
  const TRACK_COLOUR = "#0969da";
  const STATUSES = new Set(["active", "inactive", "registered"]);
  const ARROW =
    '<svg viewBox="0 0 24 24" aria-hidden="true" focusable="false">' +
    '<path class="shape" d="M12 2 20 21 12 16.5 4 21Z"/></svg>';
  const DOT =
    '<svg viewBox="0 0 24 24" aria-hidden="true" focusable="false">' +
    '<circle class="shape" cx="12" cy="12" r="6.5"/></svg>';

  const container = document.getElementById("map");
  const config = JSON.parse(container.dataset.config);
  const ui = {
    range: document.getElementById("track-range"),
    trackInfo: document.getElementById("track-info"),
    trackText: document.getElementById("track-text"),
    trackClear: document.getElementById("track-clear"),
    count: document.getElementById("device-count"),
    connection: document.getElementById("connection"),
    updated: document.getElementById("updated"),
    tilesNote: document.getElementById("tiles-note"),
    keyOpen: document.getElementById("key-open"),
    keyDialog: document.getElementById("key-dialog"),
    keyForm: document.getElementById("key-form"),
    keyInput: document.getElementById("key-input"),
    keyError: document.getElementById("key-error"),
  };

  // -- the API key ------------------------------------------------------------------------------

  let keyInMemory = null; // where sessionStorage is unavailable

  function readKey() {
    try {
      return window.sessionStorage.getItem(KEY_ITEM);
    } catch (_) {
      return keyInMemory;
    }
  }

  function storeKey(key) {
    keyInMemory = key;
    try {
      window.sessionStorage.setItem(KEY_ITEM, key);
    } catch (_) {
      /* kept in memory only */
    }
  }

  function forgetKey() {
    keyInMemory = null;
    try {
      window.sessionStorage.removeItem(KEY_ITEM);
    } catch (_) {
      /* nothing stored */
    }
  }

  /** /map#key=...: into sessionStorage, and out of the address bar (and the history). */
  function takeKeyFromFragment() {
    if (!window.location.hash) return;
    let key = null;
    const rest = [];
    for (const part of window.location.hash.slice(1).split("&")) {
      if (part.startsWith("key=")) {
        try {
          key = decodeURIComponent(part.slice(4));
        } catch (_) {
          key = part.slice(4);
        }
      } else if (part) {
        rest.push(part);
      }
    }
    if (key === null) return;
    if (key.trim()) storeKey(key.trim());
    const fragment = rest.length ? `#${rest.join("&")}` : "";
    window.history.replaceState(
      window.history.state,
      "",
      window.location.pathname + window.location.search + fragment,
    );
  }

  class KeyNeeded extends Error {}

  function askForKey(refused) {
    ui.keyError.textContent = refused ? "That key was not accepted: try another." : "";
    setConnection("API key needed", "trouble");
    ui.keyOpen.hidden = false;
    if (!ui.keyDialog.open) ui.keyDialog.showModal();
    ui.keyInput.focus();
  }

  ui.keyForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const key = ui.keyInput.value.trim();
    if (!key) return;
    storeKey(key);
    ui.keyInput.value = "";
    ui.keyError.textContent = "";
    ui.keyDialog.close();
    ui.keyOpen.hidden = true;
    start();
    if (selected) loadTrack();
  });

  ui.keyOpen.addEventListener("click", () => askForKey(false));

  /** GET `path` as JSON, with the key if there is one; KeyNeeded on 401. */
  async function getJson(path, signal) {
    const key = readKey();
    const headers = { Accept: "application/json" };
    if (key) headers.Authorization = `Bearer ${key}`;
    const response = await fetch(path, { headers, signal, cache: "no-store" });
    if (response.status === 401) {
      if (key && readKey() === key) forgetKey();
      askForKey(Boolean(key));
      throw new KeyNeeded("API key needed");
    }
    if (!response.ok) {
      let detail = response.statusText;
      try {
        detail = (await response.json()).detail || detail;
      } catch (_) {
        /* no problem body */
      }
      throw new Error(`${response.status} ${detail}`);
    }
    return response.json();
  }

  // -- the map ----------------------------------------------------------------------------------

  // No view until the first snapshot says where the fleet is (fitOnce): no tiles of the whole
  // world are asked for in the meantime.
  const map = L.map(container, { worldCopyJump: true });
  let tileLoaded = false;
  L.tileLayer(config.tileUrl, { attribution: config.attribution, maxZoom: 19 })
    // Tiles that cannot load leave the plain background: markers and tracks still show.
    .on("tileerror", () => {
      if (!tileLoaded) ui.tilesNote.hidden = false;
    })
    .on("tileload", () => {
      tileLoaded = true;
      ui.tilesNote.hidden = true;
    })
    .addTo(map);

  const markers = new Map(); // deviceId -> {marker, arrow, device, shape, rotation}
  let fitted = false;
  let hasView = false;

  function statusOf(device) {
    return STATUSES.has(device.status) ? device.status : "inactive";
  }

  function labelOf(device) {
    const name = device.name ? ` (${device.name})` : "";
    return `${device.deviceId}${name}, ${statusOf(device)}`;
  }

  function formatTime(iso) {
    const when = new Date(iso);
    return Number.isNaN(when.getTime())
      ? iso
      : when.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" });
  }

  function popupFor(device) {
    const location = device.lastLocation || {};
    const root = document.createElement("div");
    root.className = "device-popup";
    const title = document.createElement("h2");
    title.textContent = device.deviceId;
    root.append(title);
    const list = document.createElement("dl");
    const row = (term, value) => {
      const dt = document.createElement("dt");
      const dd = document.createElement("dd");
      dt.textContent = term;
      dd.textContent = value;
      list.append(dt, dd);
    };
    row("Name", device.name || "\u2014");
    row("Status", statusOf(device));
    row("Last seen", device.lastSeen ? formatTime(device.lastSeen) : "never");
    row("Speed", typeof location.speed === "number" ? `${location.speed.toFixed(1)} km/h` : "unknown");
    if (typeof location.heading === "number") row("Heading", `${Math.round(location.heading)}\u00b0`);
    const route = location.attributes && location.attributes.routeId;
    if (route) row("Route", String(route));
    root.append(list);
    return root;
  }

  /** The marker's look: an arrow turned to the heading (a dot without one), its status colour. */
  function drawMarker(entry) {
    const { device, arrow } = entry;
    const heading = device.lastLocation.heading;
    const shape = typeof heading === "number" ? "arrow" : "dot";
    if (entry.shape !== shape) {
      arrow.innerHTML = shape === "arrow" ? ARROW : DOT;
      entry.shape = shape;
    }
    arrow.className = `bus-arrow status-${statusOf(device)}`;
    if (shape === "arrow") {
      // The shorter way round: from 350 to 10 degrees turns 20, not 340.
      const turn = ((((heading - entry.rotation) % 360) + 540) % 360) - 180;
      entry.rotation += turn;
      arrow.style.transform = `rotate(${entry.rotation}deg)`;
    } else {
      arrow.style.transform = "";
    }
    entry.marker.options.title = labelOf(device);
    decorate(entry);
  }

  /** What Leaflet's icon element carries besides the arrow; again whenever it is (re)made. */
  function decorate(entry) {
    const element = entry.marker.getElement();
    if (!element) return;
    const label = labelOf(entry.device);
    element.title = label;
    element.setAttribute("aria-label", label);
    element.dataset.deviceId = entry.device.deviceId;
    element.classList.toggle("selected", entry.device.deviceId === selected);
  }

  function place(device) {
    const id = device.deviceId;
    const location = device.lastLocation;
    if (!location) {
      removeMarker(id); // nowhere to show it
      return;
    }
    const at = [location.latitude, location.longitude];
    let entry = markers.get(id);
    if (entry) {
      entry.device = device;
      entry.marker.setLatLng(at);
      drawMarker(entry);
      if (entry.marker.isPopupOpen()) entry.marker.getPopup().update();
      return;
    }
    const arrow = document.createElement("span");
    const marker = L.marker(at, {
      icon: L.divIcon({
        className: "bus-marker",
        html: arrow,
        iconSize: [26, 26],
        iconAnchor: [13, 13],
        popupAnchor: [0, -12],
      }),
      keyboard: true,
      riseOnHover: true,
      title: labelOf(device),
    });
    entry = { marker, arrow, device, shape: null, rotation: 0 };
    const created = entry;
    marker.bindPopup(() => popupFor(created.device), { maxWidth: 280 });
    marker.on("add", () => decorate(created));
    marker.on("popupopen", () => select(id));
    markers.set(id, entry);
    marker.addTo(map);
    drawMarker(entry);
  }

  function removeMarker(id) {
    const entry = markers.get(id);
    if (!entry) return;
    entry.marker.remove();
    markers.delete(id);
  }

  /** Shows the whole fleet, once: later the view is the user's. */
  function fitOnce() {
    if (fitted) return;
    if (markers.size === 0) {
      if (!hasView) map.setView([20, 0], 2); // nothing to show yet: the world
      hasView = true;
      return;
    }
    fitted = hasView = true;
    const bounds = L.latLngBounds([...markers.values()].map((e) => e.marker.getLatLng()));
    map.fitBounds(bounds.pad(0.1), { maxZoom: 15, animate: false });
  }

  // -- the status line --------------------------------------------------------------------------

  function setConnection(text, kind) {
    ui.connection.textContent = text;
    ui.connection.className = kind || "";
  }

  function showCount() {
    const n = markers.size;
    ui.count.textContent = `${n} device${n === 1 ? "" : "s"}`;
  }

  function noteUpdate() {
    ui.updated.textContent = `updated ${new Date().toLocaleTimeString()}`;
  }

  // -- the live stream --------------------------------------------------------------------------

  let source = null;
  let retryTimer = null;

  function onSnapshot(snapshot) {
    const seen = new Set(snapshot.devices.map((d) => d.deviceId));
    for (const id of [...markers.keys()]) if (!seen.has(id)) removeMarker(id);
    for (const device of snapshot.devices) place(device);
    fitOnce();
    showCount();
    setConnection("live", "live");
    noteUpdate();
  }

  function onPosition(device) {
    place(device);
    fitOnce();
    extendTrack(device);
    showCount();
    noteUpdate();
  }

  function onLeave(left) {
    removeMarker(left.deviceId);
    showCount();
    noteUpdate();
  }

  function openStream() {
    const key = readKey();
    const url = key ? `${STREAM_PATH}?access_token=${encodeURIComponent(key)}` : STREAM_PATH;
    const stream = new EventSource(url);
    source = stream;
    const on = (kind, handle) =>
      stream.addEventListener(kind, (event) => {
        if (stream === source) handle(JSON.parse(event.data));
      });
    on("snapshot", onSnapshot);
    on("position", onPosition);
    on("leave", onLeave);
    stream.addEventListener("error", () => {
      if (stream !== source) return;
      setConnection("reconnecting", "trouble");
      if (stream.readyState === EventSource.CLOSED) {
        // Refused (a 401, a 503 while the service starts): the browser gives up, so do it here,
        // checking the key first.
        source = null;
        retryTimer = window.setTimeout(start, RETRY_MS);
      }
    });
  }

  /** Checks that the API answers (asking for a key on 401), then opens the stream. */
  async function start() {
    window.clearTimeout(retryTimer);
    if (source) {
      source.close();
      source = null;
    }
    setConnection("connecting");
    try {
      await getJson(PROBE_PATH);
    } catch (error) {
      if (error instanceof KeyNeeded) return;
      // Anything else: the stream says whether the fleet can be shown, and retries.
    }
    openStream();
  }

  // -- the selected device's track --------------------------------------------------------------

  let selected = null;
  let trackLine = null;
  let trackLoad = null; // the AbortController of the load under way
  let track = { points: 0, newest: null, truncated: false, label: "" };

  function rangeLabel() {
    return ui.range.options[ui.range.selectedIndex].text;
  }

  function showTrackText(text) {
    ui.trackText.textContent = text;
    ui.trackInfo.hidden = false;
  }

  function describeTrack() {
    const n = track.points;
    if (n === 0) {
      showTrackText(`${selected}: no positions in the last ${track.label}`);
      return;
    }
    const newest = track.truncated ? " (the newest)" : "";
    showTrackText(`${selected}: ${n} point${n === 1 ? "" : "s"}${newest} in the last ${track.label}`);
  }

  function markSelection() {
    for (const entry of markers.values()) {
      entry.marker.setZIndexOffset(entry.device.deviceId === selected ? 1000 : 0);
      decorate(entry);
    }
  }

  function select(id) {
    if (id === selected && (trackLine || trackLoad)) return;
    selected = id;
    markSelection();
    loadTrack();
  }

  function clearTrack() {
    if (trackLoad) trackLoad.abort();
    trackLoad = null;
    if (trackLine) trackLine.remove();
    trackLine = null;
    selected = null;
    ui.trackInfo.hidden = true;
    markSelection();
  }

  async function loadTrack() {
    const id = selected;
    if (!id) return;
    if (trackLoad) trackLoad.abort();
    const load = new AbortController();
    trackLoad = load;
    const minutes = Number(ui.range.value);
    const label = rangeLabel();
    showTrackText(`${id}: loading the last ${label}\u2026`);
    const since = new Date(Date.now() - minutes * 60000).toISOString();
    // Newest first, so that a track longer than MAX_PAGES pages keeps its recent end.
    const query = new URLSearchParams({ start_time: since, order: "desc", limit: `${PAGE_SIZE}` });
    const found = [];
    let token = null;
    let pages = 0;
    try {
      do {
        if (token) query.set("next_token", token);
        const page = await getJson(`/locations/${encodeURIComponent(id)}?${query}`, load.signal);
        found.push(...page.locations);
        token = page.nextToken;
        pages += 1;
      } while (token && pages < MAX_PAGES);
    } catch (error) {
      if (load !== trackLoad) return; // replaced by a newer load
      trackLoad = null;
      if (error instanceof KeyNeeded) showTrackText(`${id}: waiting for an API key`);
      else if (error.name !== "AbortError") showTrackText(`${id}: no track (${error.message})`);
      return;
    }
    if (load !== trackLoad) return;
    trackLoad = null;
    found.reverse();
    if (trackLine) trackLine.remove();
    trackLine = L.polyline(
      found.map((p) => [p.latitude, p.longitude]),
      { className: "track", color: TRACK_COLOUR, weight: 4, opacity: 0.85, interactive: false },
    ).addTo(map);
    const last = found[found.length - 1];
    track = {
      points: found.length,
      newest: last ? Date.parse(last.timestamp) : null,
      truncated: Boolean(token),
      label,
    };
    describeTrack();
  }

  /** The selected device's new positions join its track as they come. */
  function extendTrack(device) {
    if (device.deviceId !== selected || !trackLine || trackLoad || !device.lastLocation) return;
    const location = device.lastLocation;
    const at = Date.parse(location.timestamp);
    if (track.newest !== null && !(at > track.newest)) return;
    trackLine.addLatLng([location.latitude, location.longitude]);
    track.newest = at;
    track.points += 1;
    describeTrack();
  }

  ui.range.addEventListener("change", () => loadTrack());
  ui.trackClear.addEventListener("click", clearTrack);

  takeKeyFromFragment();
  start();
})();
