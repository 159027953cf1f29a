// The graphexec chat page: no build step, no dependencies.
//
// The conversation is one trace (its id in the URL: ?trace=...). The page shows the trace's
// events as they stream (GET /runs/{id}/events, SSE): user messages from GraphStart's input,
// assistant tokens from Custom events ({"token": ...}), the approval card from BarrierWaiting.
// Whenever the stream (re)opens, the card and the status are rebuilt from the stored state
// (GET /runs/{id}): a page that reconnects after a server restart, or is reloaded, shows the
// barrier the run really waits at. Event ids make the stream exact across reconnects: the
// browser sends Last-Event-ID, and an event whose id the page already showed is ignored.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  let traceId = params.get("trace");
  let token = params.get("token") || sessionStorage.getItem("gx-token") || "";
  if (params.get("token")) sessionStorage.setItem("gx-token", token);

  let config = null;
  let lastId = 0; // the id of the last event shown
  let source = null; // the EventSource
  let ended = false; // the last event shown ended the run (complete, failed)
  let idleTimer = null;
  let assistant = null; // the bubble the next token goes to
  let card = null; // the barrier id the card shows
  const resolved = new Set(); // barrier ids decided (a stale state must not show them again)
  // Counters the browser tests read.
  // seen: the reply's text after each token (the last 200), in the order they were shown.
  const gx = (window.gx = { events: 0, tokens: 0, refreshes: 0, ids: [], seen: [] });

  function authHeaders() {
    return token ? { Authorization: `Bearer ${token}` } : {};
  }

  async function api(method, path, body) {
    const init = { method, headers: authHeaders() };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const r = await fetch(path, init);
    const data = await r.json().catch(() => ({}));
    if (!r.ok) {
      const e = data.error || { type: "HTTPError", message: r.statusText };
      throw Object.assign(new Error(e.message), { status: r.status, type: e.type });
    }
    return data;
  }

  function showError(e) {
    $("error").textContent = e ? `${e.type || "Error"}: ${e.message}` : "";
    $("error").hidden = !e;
  }

  function setStatus(s) {
    const b = $("status");
    b.textContent = s;
    b.dataset.status = s;
    $("cancel").hidden = !(s === "running" || s === "waiting");
  }

  function setConn(c) {
    $("conn").textContent = c;
    $("conn").dataset.conn = c;
  }

  function bubble(role, text) {
    const d = document.createElement("div");
    d.className = `msg ${role}`;
    d.textContent = text;
    $("messages").append(d);
    d.scrollIntoView({ block: "end" });
    return d;
  }

  function showCard(b) {
    if (resolved.has(b.barrier_id)) return;
    card = b.barrier_id;
    const p = b.prompt;
    $("card").dataset.barrier = card;
    $("card-text").textContent =
      (p && typeof p === "object" && p.text) || `The run waits for a decision at ${b.node}.`;
    $("card-prompt").textContent = JSON.stringify(p, null, 2);
    $("edit-json").value = JSON.stringify((p && typeof p === "object" && p.update) || {}, null, 2);
    $("edit-box").hidden = true;
    $("reject-box").hidden = true;
    $("card").hidden = false;
  }

  function hideCard(id) {
    if (id === undefined || id === card) {
      card = null;
      $("card").hidden = true;
      delete $("card").dataset.barrier;
    }
  }

  function handle(ev) {
    gx.events += 1;
    switch (ev.type) {
      case "GraphStart": {
        ended = false;
        const input = ev.input;
        const key = config.chat_input_key;
        if (input && typeof input === "object" && input[key] !== undefined) {
          bubble("user", String(input[key]));
        }
        assistant = null;
        setStatus("running");
        break;
      }
      case "Custom":
        if (ev.data && typeof ev.data.token === "string") {
          if (!assistant) {
            assistant = bubble("assistant", "");
            assistant.dataset.tokens = "0";
          }
          assistant.textContent += ev.data.token;
          assistant.dataset.tokens = String(Number(assistant.dataset.tokens) + 1);
          gx.tokens += 1;
          gx.seen.push(assistant.textContent);
          if (gx.seen.length > 200) gx.seen.shift();
        }
        break;
      case "NodeEnd":
        assistant = null; // each node's reply gets its own bubble
        break;
      case "BarrierWaiting":
        showCard({ barrier_id: ev.barrier_id, node: ev.node, prompt: ev.prompt });
        setStatus("waiting");
        break;
      case "BarrierResolved":
        // by "cancel": the run stopped while waiting; it asks again with the same id.
        if (ev.by !== "cancel") resolved.add(ev.barrier_id);
        hideCard(ev.barrier_id);
        if (ev.by !== "cancel") {
          const past = { approve: "approved", reject: "rejected", skip: "skipped" };
          const how = ev.edited ? "approved with an edit" : past[ev.decision] || ev.decision;
          bubble("note", `${ev.barrier_id} ${how}${ev.reason ? `: ${ev.reason}` : ""}`);
          setStatus("running");
        }
        break;
      case "GraphComplete":
        setStatus("completed");
        ended = true;
        break;
      case "GraphFailed":
        setStatus(ev.status);
        bubble("note", `${ev.error.type}: ${ev.error.message}`);
        ended = true;
        break;
      case "GraphInterrupted":
        setStatus("interrupted"); // a server shut down; the run goes on when one recovers it
        break;
      default:
        break;
    }
  }

  // The stored state: the card and the status as the store has them (on every (re)open).
  async function refresh() {
    const seen = gx.events;
    gx.refreshes += 1;
    try {
      const st = await api("GET", `/runs/${encodeURIComponent(traceId)}`);
      if (gx.events !== seen) return st; // events came meanwhile: they are newer
      setStatus(st.status);
      if (st.pending_barrier && st.status === "waiting") showCard(st.pending_barrier);
      else hideCard();
      return st;
    } catch (e) {
      if (e.status !== 404) showError(e);
      return null;
    }
  }

  function connect() {
    clearTimeout(idleTimer);
    if (source) source.close();
    const q = new URLSearchParams();
    if (lastId) q.set("after", String(lastId));
    if (token) q.set("token", token);
    const es = new EventSource(`/runs/${encodeURIComponent(traceId)}/events?${q}`);
    source = es;
    setConn("connecting");
    es.onopen = () => {
      setConn("connected");
      showError(null);
      refresh();
    };
    es.onmessage = (m) => {
      const id = Number(m.lastEventId);
      if (id && id <= lastId) return; // shown already
      if (id) lastId = id;
      gx.ids.push(id);
      if (gx.ids.length > 200) gx.ids.shift();
      handle(JSON.parse(m.data));
    };
    es.addEventListener("stream-error", (m) => showError(JSON.parse(m.data)));
    es.onerror = () => {
      if (source !== es) return;
      if (ended) {
        // The run ended and the server closed the stream: wait for a next turn.
        es.close();
        source = null;
        setConn("idle");
        idleTimer = setTimeout(idlePoll, 2000);
        return;
      }
      setConn("reconnecting");
      hideCard(); // shown again from the stored state once the stream is back
      if (es.readyState === EventSource.CLOSED) {
        source = null;
        setTimeout(connect, 1000);
      }
    };
  }

  async function idlePoll() {
    const st = await refresh();
    if (st && (st.status === "running" || st.status === "waiting")) connect();
    else idleTimer = setTimeout(idlePoll, 2000);
  }

  async function decide(decision) {
    if (!card) return;
    const barrier = card;
    try {
      await api("POST", `/runs/${encodeURIComponent(traceId)}/decisions`, {
        barrier_id: barrier,
        decision,
      });
      showError(null);
      hideCard(barrier);
    } catch (e) {
      showError(e);
    }
  }

  $("approve").onclick = () => decide({ type: "approve" });
  $("reject").onclick = () => {
    $("reject-box").hidden = false;
    $("edit-box").hidden = true;
  };
  $("reject-send").onclick = () =>
    decide({ type: "reject", reason: $("reject-reason").value || null });
  $("edit").onclick = () => {
    $("edit-box").hidden = false;
    $("reject-box").hidden = true;
  };
  $("edit-send").onclick = () => {
    let update;
    try {
      update = JSON.parse($("edit-json").value || "{}");
    } catch (e) {
      showError({ type: "InvalidJSON", message: e.message });
      return;
    }
    decide({ type: "edit", update });
  };
  $("cancel").onclick = async () => {
    try {
      await api("POST", `/runs/${encodeURIComponent(traceId)}/cancel`);
    } catch (e) {
      showError(e);
    }
  };

  $("form").onsubmit = async (e) => {
    e.preventDefault();
    const text = $("input").value.trim();
    if (!text || !config) return;
    const body = { graph: config.chat_graph, input: { [config.chat_input_key]: text } };
    if (traceId) body.trace_id = traceId;
    try {
      const r = await api("POST", "/runs", body);
      $("input").value = "";
      showError(null);
      if (!traceId) {
        traceId = r.trace_id;
        $("trace").textContent = traceId;
        const url = new URL(location.href);
        url.searchParams.set("trace", traceId);
        history.replaceState(null, "", url);
      }
      ended = false;
      if (!source) connect();
    } catch (err) {
      showError(err);
    }
  };

  async function boot() {
    try {
      config = await api("GET", "/config");
    } catch (e) {
      if (e.status === 401) {
        token = window.prompt("This server needs a token:") || "";
        sessionStorage.setItem("gx-token", token);
        if (token) return boot();
      }
      showError(e);
      return;
    }
    if (traceId) {
      $("trace").textContent = traceId;
      connect();
    }
  }

  boot();
})();
