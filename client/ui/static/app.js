// raftka's live cluster page: plain JavaScript, no framework, no build step.
// Snapshots arrive over Server-Sent Events (/api/events); each panel is redrawn only when its part changed.
// Every text from the cluster goes in with textContent, never as HTML (a group id may be anything).
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const drawn = {};              // panel -> JSON of what it last drew
const openInternal = new Set(); // internal topics the learner unfolded
let latest = null;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function changed(panel, part) {
  const text = JSON.stringify(part);
  if (drawn[panel] === text) return false;
  drawn[panel] = text;
  return true;
}

function clock(ms) {
  const d = new Date(ms);
  return d.toLocaleTimeString([], {hour12: false}) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

// ---- status ---------------------------------------------------------------------------------------

function setStatus(status, text) {
  const s = document.getElementById("status");
  s.dataset.status = status;
  s.textContent = text;
}

function drawStatus(snap) {
  const banner = document.getElementById("banner");
  document.getElementById("cluster-id").textContent = snap.cluster_id ? `cluster ${snap.cluster_id}` : "";
  document.getElementById("updated").textContent = `updated ${clock(snap.generated_ms)}`;
  if (snap.status === "ok") {
    const down = snap.brokers.filter(b => b.state !== "alive").length;
    setStatus("ok", down ? `${snap.brokers.length - down} of ${snap.brokers.length} brokers up` : "all brokers up");
    banner.hidden = true;
  } else if (snap.status === "no-broker") {
    setStatus("no-broker", "no broker answers");
    banner.hidden = false;
    banner.textContent = snap.message;
  } else {
    setStatus("starting", snap.message || "asking the cluster…");
    banner.hidden = true;
  }
}

// ---- brokers ----------------------------------------------------------------------------------------

const STATE_TEXT = {
  alive: "alive", fenced: "fenced", unreachable: "not answering", unregistered: "not registered",
  unknown: "unknown",
};

function drawBrokers(snap) {
  const part = {brokers: snap.brokers, controls: snap.controls};
  if (!changed("brokers", part)) return;
  const body = document.querySelector("#brokers tbody");
  const controls = snap.controls.enabled;
  document.getElementById("controls-head").hidden = !controls;
  body.replaceChildren(...snap.brokers.map(b => el("tr", {
      "data-broker": b.broker_id, "data-state": b.state, "data-controller": b.is_controller ? "true" : "false"},
    el("td", {text: `broker ${b.broker_id}`}),
    el("td", {text: b.address, class: "mono"}),
    el("td", {}, el("span", {class: `badge ${b.state}`, text: STATE_TEXT[b.state] || b.state,
                             title: b.error || ""})),
    el("td", {text: b.is_controller ? "★ controller" : ""}),
    el("td", {text: b.raft_term ?? "–", class: "num"}),
    el("td", {text: b.metadata_offset ?? "–", class: "num"}),
    el("td", {text: `${b.leader_count}`, class: "num", title: "partitions it leads (internal ones too)"}),
    controls ? el("td", {class: "controls"}, ...snap.controls.actions.map(a => el("button", {
      type: "button", class: `control ${a}`, "data-action": a, "data-broker": b.broker_id, text: a,
      onclick: () => control(b.broker_id, a)}))) : null)));
  const note = document.getElementById("controls-note");
  note.textContent = snap.controls.reason;
}

async function control(brokerId, action) {
  const out = document.getElementById("control-result");
  out.textContent = `${action} broker ${brokerId}…`;
  out.dataset.result = "pending";
  try {
    const r = await fetch(`/api/brokers/${brokerId}/${action}`, {
      method: "POST", headers: {"Content-Type": "application/json"}, body: "{}"});
    const answer = await r.json();
    out.textContent = r.ok ? answer.message : answer.error;
    out.dataset.result = r.ok ? "ok" : "error";
  } catch (e) {
    out.textContent = `the page's server did not answer: ${e}`;
    out.dataset.result = "error";
  }
}

// ---- topics, partitions, replica bars -------------------------------------------------------------------

function bar(r, scale) {
  const pct = v => `${Math.max(0, Math.min(100, (100 * v) / scale))}%`;
  const track = el("div", {class: "bar"});
  if (r.log_end_offset === null || r.log_end_offset === undefined) {
    track.classList.add("empty");
    return track;
  }
  const start = r.log_start_offset ?? 0, hw = r.high_watermark ?? start, leo = r.log_end_offset;
  const seg = (cls, from, to) => {
    const s = el("div", {class: `seg ${cls}`});
    s.style.left = pct(from);
    s.style.width = pct(Math.max(0, to - from));
    return s;
  };
  track.append(seg("deleted", 0, start), seg("committed", start, hw), seg("uncommitted", hw, leo));
  return track;
}

function replicaLine(r, scale) {
  const star = r.role === "leader" ? " ★" : "";
  const numbers = r.role === "offline"
    ? (r.log_end_offset !== null && r.log_end_offset !== undefined
       ? `no answer; its last fetch reached ${r.log_end_offset}` : "no answer")
    : `start ${r.log_start_offset} · HW ${r.high_watermark} · LEO ${r.log_end_offset}`
      + (r.role === "follower" && r.lag !== null ? ` · lag ${r.lag}` : "");
  return el("div", {class: `replica ${r.role}${r.in_isr ? "" : " out-of-isr"}`, "data-replica": r.broker_id,
                    "data-role": r.role, "data-hw": r.high_watermark ?? "", "data-leo": r.log_end_offset ?? ""},
    el("span", {class: "who", text: `B${r.broker_id}${star}`, title: r.in_isr ? "in sync" : "out of the ISR"}),
    bar(r, scale),
    el("span", {class: "numbers", text: numbers}));
}

function partitionRow(p) {
  const scale = Math.max(1, ...p.bars.map(b => b.log_end_offset ?? 0));
  const name = `${p.topic}-${p.partition}`;
  return el("tr", {"data-partition": name, "data-leader": p.leader, "data-epoch": p.leader_epoch,
                   "data-isr": p.isr.join(","), class: p.under_replicated ? "under-replicated" : ""},
    el("td", {text: `${p.partition}`, class: "num"}),
    el("td", {class: "leader", text: p.leader >= 0 ? `${p.leader}` : "none"}),
    el("td", {text: `${p.leader_epoch}`, class: "num"}),
    el("td", {text: p.replicas.join(",")}),
    el("td", {text: p.isr.join(",") || "–", class: p.under_replicated ? "warn" : ""}),
    el("td", {class: "bars"}, ...p.bars.map(b => replicaLine(b, scale))));
}

function topicTable(t) {
  return el("table", {class: "partitions"},
    el("thead", {}, el("tr", {}, ...["Partition", "Leader", "Epoch", "Replicas", "ISR", "Replica logs"]
      .map(h => el("th", {text: h})))),
    el("tbody", {}, ...t.partitions.map(partitionRow)));
}

function drawTopics(snap) {
  if (!changed("topics", snap.topics)) return;
  const box = document.getElementById("topics");
  if (!snap.topics.length) {
    box.replaceChildren(el("p", {class: "muted", text: "no topics yet: kclient topics --create …"}));
    return;
  }
  box.replaceChildren(...snap.topics.map(t => {
    const under = t.partitions.filter(p => p.under_replicated).length;
    const title = `${t.name} · ${t.partitions.length} partition${t.partitions.length === 1 ? "" : "s"}`
      + (under ? ` · ${under} under-replicated` : "");
    if (!t.internal) {
      return el("section", {class: "topic", "data-topic": t.name}, el("h3", {text: title}), topicTable(t));
    }
    const details = el("details", {class: "topic internal", "data-topic": t.name,
                                   open: openInternal.has(t.name)},
      el("summary", {text: `${title} (internal)`}));
    details.addEventListener("toggle", () => {
      if (details.open) { openInternal.add(t.name); details.append(topicTable(t)); }
      else { openInternal.delete(t.name); details.replaceChildren(details.firstChild); }
    });
    if (details.open) details.append(topicTable(t));
    return details;
  }));
  const names = document.getElementById("topic-names");
  names.replaceChildren(...snap.topics.filter(t => !t.internal).map(t => el("option", {value: t.name})));
  const topic = document.getElementById("produce-topic");
  if (!topic.value && snap.topics.some(t => !t.internal)) topic.value = snap.topics.find(t => !t.internal).name;
}

// ---- groups -------------------------------------------------------------------------------------------

function drawGroups(snap) {
  if (!changed("groups", [snap.groups, snap.groups_error])) return;
  const box = document.getElementById("groups");
  const rows = snap.groups.map(g => el("section", {class: "group", "data-group": g.group_id},
    el("h3", {text: `${g.group_id} · ${g.state} · ${g.members} member${g.members === 1 ? "" : "s"}`
      + ` · coordinator ${g.coordinator} · lag ${g.total_lag ?? "?"}` + (g.protocol ? ` · ${g.protocol}` : "")}),
    g.error ? el("p", {class: "warn", text: g.error}) : el("table", {class: "lag"},
      el("thead", {}, el("tr", {}, ...["Topic", "Partition", "Committed", "Log end (HW)", "Lag", "Owner"]
        .map(h => el("th", {text: h})))),
      el("tbody", {}, ...g.partitions.map(p => el("tr", {"data-group-partition": `${p.topic}-${p.partition}`,
                                                      "data-committed": p.committed_offset, "data-lag": p.lag ?? ""},
        el("td", {text: p.topic}), el("td", {text: `${p.partition}`, class: "num"}),
        el("td", {text: p.committed_offset >= 0 ? `${p.committed_offset}` : "–", class: "num"}),
        el("td", {text: p.log_end_offset ?? "–", class: "num"}),
        el("td", {text: p.lag ?? "–", class: p.lag ? "num warn" : "num"}),
        el("td", {text: p.owner || "–", class: "mono"})))))));
  if (snap.groups_error) rows.push(el("p", {class: "warn", text: `groups: ${snap.groups_error}`}));
  box.replaceChildren(...(rows.length ? rows : [el("p", {class: "muted", text: "no consumer groups yet"})]));
}

// ---- the metadata log ----------------------------------------------------------------------------------

function drawTimeline(snap) {
  if (!changed("timeline", snap.timeline)) return;
  const list = document.getElementById("timeline");
  list.replaceChildren(...snap.timeline.map(i => el("li", {"data-kind": i.kind, "data-offset": i.offset},
    el("span", {class: "when", text: clock(i.committed_ms),
                title: `metadata offset ${i.offset}, Raft term ${i.term}`}),
    el("span", {class: "kind", text: i.kind}),
    el("span", {class: "text", text: i.text}))));
  if (!snap.timeline.length) list.append(el("li", {class: "muted", text: "reading the metadata log…"}));
}

// ---- the lesson: produce through a node, draw the hops -------------------------------------------------

function drawNodes(snap) {
  const ids = snap.brokers.map(b => `${b.broker_id}:${b.address}:${b.state}`);
  if (!changed("nodes", ids)) return;
  const select = document.getElementById("produce-node");
  const before = select.value;
  const label = b => `broker ${b.broker_id} (${b.address})`
    + (b.state === "alive" ? "" : ` – ${STATE_TEXT[b.state] || b.state}`);
  select.replaceChildren(...snap.brokers.map(b => el("option", {value: b.broker_id, text: label(b)})));
  if (before && snap.brokers.some(b => `${b.broker_id}` === before)) select.value = before;
}

async function produce(event) {
  event.preventDefault();
  const out = document.getElementById("produce-result");
  const button = document.getElementById("produce-send");
  const partition = document.getElementById("produce-partition").value;
  const key = document.getElementById("produce-key").value;
  const body = {
    node: Number(document.getElementById("produce-node").value),
    topic: document.getElementById("produce-topic").value,
    partition: partition === "" ? null : Number(partition),
    key: key === "" ? null : key,
    value: document.getElementById("produce-value").value,
  };
  button.disabled = true;
  out.dataset.result = "pending";
  out.textContent = `sending through broker ${body.node}…`;
  try {
    const r = await fetch("/api/produce", {method: "POST", headers: {"Content-Type": "application/json"},
                                           body: JSON.stringify(body)});
    const answer = await r.json();
    if (!r.ok) {
      out.dataset.result = "error";
      out.textContent = answer.error;
      return;
    }
    const redirects = answer.hops.filter(h => h.kind === "redirect").length;
    out.dataset.result = answer.produce_error ? "error" : "ok";
    out.textContent = answer.produce_error
      ? `not stored: ${answer.produce_error}`
      : `stored in ${answer.topic}-${answer.partition} at offset ${answer.offset}, through broker ${answer.node}`
        + (redirects ? ` (redirected ${redirects}×)` : " (it was the leader)");
    drawDiagram(answer.hops);
  } catch (e) {
    out.dataset.result = "error";
    out.textContent = `the page's server did not answer: ${e}`;
  } finally {
    button.disabled = false;
  }
}

function participantOf(hop) {
  if (hop.broker_id === null || hop.broker_id === undefined) return {key: hop.address, label: hop.address};
  return {key: `B${hop.broker_id}`, label: `Broker ${hop.broker_id} (:${hop.address.split(":").pop()})`};
}

function drawDiagram(hops) {
  // A sequence diagram as client/trace.py's MermaidTracer draws it: requests solid, answers dashed back.
  const box = document.getElementById("produce-diagram");
  const lanes = [{key: "C", label: "kclient ui"}];
  for (const h of hops) {
    const p = participantOf(h);
    if (!lanes.some(l => l.key === p.key)) lanes.push(p);
  }
  const gap = 170, top = 40, row = 34, width = Math.max(gap * (lanes.length - 1) + 140, 480);
  const height = top + row * hops.length + 30;
  const x = key => 70 + gap * lanes.findIndex(l => l.key === key);
  const root = svg("svg", {viewBox: `0 0 ${width} ${height}`, width: "100%", class: "sequence",
                           "data-hops": hops.length, role: "img"});
  root.append(svg("title", {}, "the hops of one produce, as a sequence diagram"));
  const marker = svg("marker", {id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5,
                                markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse"});
  marker.append(svg("path", {d: "M 0 0 L 10 5 L 0 10 z", class: "head"}));
  const defs = svg("defs");
  defs.append(marker);
  root.append(defs);
  for (const l of lanes) {
    root.append(svg("line", {x1: x(l.key), y1: top - 8, x2: x(l.key), y2: height - 8, class: "lifeline"}));
    root.append(svg("rect", {x: x(l.key) - 64, y: 4, width: 128, height: 24, rx: 4, class: "actor"}));
    root.append(svg("text", {x: x(l.key), y: 20, class: "actor-label"}, l.label));
  }
  hops.forEach((h, i) => {
    const y = top + 14 + row * i, b = x(participantOf(h).key), c = x("C");
    const text = `${h.api}: ${h.detail}`;
    const room = Math.floor((width - x("C") - 16) / 5.6);   // characters that fit right of the client's lifeline
    const label = text.length > room ? text.slice(0, room - 1) + "…" : text;
    const g = svg("g", {class: `hop ${h.kind}`, "data-kind": h.kind});
    g.append(svg("title", {}, text));
    if (h.kind === "retry") {
      g.append(svg("rect", {x: c - 60, y: y - 12, width: 120, height: 18, class: "note"}));
      g.append(svg("text", {x: c, y: y + 1, class: "note-label"}, label.slice(0, 22)));
    } else {
      const [from, to] = h.kind === "request" ? [c, b] : [b, c];
      g.append(svg("line", {x1: from, y1: y, x2: to, y2: y, "marker-end": "url(#arrow)",
                            class: h.kind === "request" ? "call" : "answer"}));
      g.append(svg("text", {x: c + 6, y: y - 5, class: "hop-label"}, label));
    }
    root.append(g);
  });
  box.replaceChildren(root);
}

// ---- the stream --------------------------------------------------------------------------------------------

function draw(snap) {
  latest = snap;
  drawStatus(snap);
  drawBrokers(snap);
  drawNodes(snap);
  drawTopics(snap);
  drawGroups(snap);
  drawTimeline(snap);
}

function connect() {
  const source = new EventSource("/api/events");
  source.onmessage = event => {
    try { draw(JSON.parse(event.data)); }
    catch (e) { setStatus("error", `could not draw the snapshot: ${e}`); }
  };
  source.onerror = () => setStatus("disconnected", "the page's server does not answer; retrying…");
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("produce-form").addEventListener("submit", produce);
  connect();
});
