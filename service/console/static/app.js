// The veriflow operator console: plain JavaScript, no build step. Every request carries the API
// key kept in this tab's sessionStorage; the service answers with that client's data only.
"use strict";

(() => {
  const KEY = "veriflow.console.key";
  const REFRESH_MS = 10000;
  const $ = (id) => document.getElementById(id);
  let timer = null;
  let diagrams = 0;

  function key() { return sessionStorage.getItem(KEY); }

  async function api(path) {
    const response = await fetch(path, {
      headers: { Authorization: `Bearer ${key()}`, Accept: "application/json" },
      cache: "no-store",
    });
    let body = null;
    try { body = await response.json(); } catch { body = null; }
    if (response.status === 401) { signOut("Your API key was refused. Sign in again."); }
    return { status: response.status, body };
  }

  function text(tag, value, attrs) {
    const node = document.createElement(tag);
    node.textContent = value === null || value === undefined || value === "" ? "—" : String(value);
    for (const [name, attr] of Object.entries(attrs || {})) node.setAttribute(name, attr);
    return node;
  }

  // Each cell carries its column's name: narrow screens show a row as a labelled card.
  function row(cells, labels) {
    const tr = document.createElement("tr");
    cells.forEach((cell, index) => {
      const td = cell instanceof Node ? cell : text("td", cell);
      if (labels) td.dataset.label = labels[index];
      tr.append(td);
    });
    return tr;
  }

  const LIVE = ["Channel", "State", "Status", "Count"];
  const OUTCOMES = ["Channel", "Status", "Code", "Count", "안내 문구", "Message"];
  const TIMELINE = ["At", "From", "To", "Trigger", "Actor", "Code"];

  function when(iso) {  // local time as YYYY-MM-DD HH:MM:SS
    if (!iso) return "—";
    const date = new Date(iso);
    return Number.isNaN(date.getTime()) ? iso : date.toLocaleString("sv-SE");
  }

  function notice(message) { $("notice").textContent = message || ""; }

  // ---- signing in and out ----

  async function signIn(event) {
    event.preventDefault();
    const input = $("api-key");
    const candidate = input.value.trim();
    $("sign-in-error").textContent = "";
    if (!candidate) { $("sign-in-error").textContent = "Enter an API key."; input.focus(); return; }
    sessionStorage.setItem(KEY, candidate);
    const { status, body } = await api("/v1/console/summary");
    if (status !== 200) {
      sessionStorage.removeItem(KEY);
      $("sign-in-error").textContent = status === 401 ? "This API key is not valid." : `The service answered ${status}.`;
      input.focus();
      return;
    }
    input.value = "";
    show(body);
    $("query").focus();
  }

  function signOut(message) {
    sessionStorage.removeItem(KEY);
    if (timer) { clearInterval(timer); timer = null; }
    $("console").hidden = true;
    $("sign-out").hidden = true;
    $("who").hidden = true;
    $("results").replaceChildren();
    $("sign-in").hidden = false;
    notice(message || "Signed out.");
    $("api-key").focus();
  }

  function show(summary) {
    $("sign-in").hidden = true;
    $("console").hidden = false;
    $("sign-out").hidden = false;
    $("who").hidden = false;
    $("who").textContent = `Client ${summary.client_id}`;
    notice("");
    render(summary);
    if (!timer) timer = setInterval(refresh, REFRESH_MS);
  }

  async function refresh() {
    const { status, body } = await api("/v1/console/summary");
    if (status === 200) render(body);
  }

  // ---- the summary ----

  function render(summary) {
    $("live-total").textContent = String(summary.live.total);
    const live = $("live").tBodies[0];
    live.replaceChildren(...summary.live.by_state.map((r) =>
      row([r.channel, r.state, r.status, text("td", r.count, { class: "num" })], LIVE)));
    if (!summary.live.by_state.length) live.append(empty(4, "No live verifications."));
    const outcomes = $("outcomes").tBodies[0];
    outcomes.replaceChildren(...summary.outcomes.by_code.map((r) => row([
      r.channel, r.status, text("td", r.code, { class: "code" }), text("td", r.count, { class: "num" }),
      text("td", r.messages && r.messages.ko, { lang: "ko", class: "message" }),
      text("td", r.messages && r.messages.en, { class: "message" }),
    ], OUTCOMES)));
    if (!summary.outcomes.by_code.length) outcomes.append(empty(6, "No outcomes in the last hour."));
    $("outcomes-window").textContent = `Since ${when(summary.outcomes.since)} (five-minute buckets).`;
  }

  function empty(span, message) {
    const tr = document.createElement("tr");
    tr.append(text("td", message, { colspan: String(span), class: "empty" }));
    return tr;
  }

  // ---- search, timeline and diagram ----

  async function search(event) {
    event.preventDefault();
    const query = $("query").value.trim();
    if (!query) return;
    const results = $("results");
    results.replaceChildren(text("p", "Searching…", { class: "hint" }));
    const { status, body } = await api(`/v1/console/verifications?q=${encodeURIComponent(query)}`);
    if (status !== 200) {
      results.replaceChildren(text("p", (body && body.error && body.error.description) || `The service answered ${status}.`, { class: "error" }));
      return;
    }
    if (!body.results.length) {
      results.replaceChildren(text("p", `No verification of yours has the id or tx_id “${query}”.`, { class: "hint" }));
      return;
    }
    results.replaceChildren(...body.results.map(result));
    const heading = results.querySelector(".result-title");
    if (heading) heading.focus();
    for (const node of results.querySelectorAll(".diagram")) await draw(node);
  }

  function result(item) {
    const v = item.verification;
    const card = $("result-template").content.firstElementChild.cloneNode(true);
    const title = card.querySelector(".result-title");
    title.textContent = `${v.channel.toUpperCase()} ${v.id}`;
    title.tabIndex = -1;
    const facts = card.querySelector(".facts");
    for (const [name, value] of [["Status", v.status], ["State", v.state], ["Last code", v.last_code],
      ["Detail code", v.last_detail_code], ["tx_id", v.tx_id], ["Attempts left", v.attempts_left],
      ["Resends left", v.resends_left], ["Created", when(v.created_at)], ["Expires", when(v.expires_at)]]) {
      const pair = document.createElement("div");
      pair.append(text("dt", name), text("dd", value));
      facts.append(pair);
    }
    const body = card.querySelector(".timeline tbody");
    for (const e of item.events) {
      body.append(row([when(e.at), e.from || "(created)", e.to, e.trigger, e.actor,
        text("td", e.code ? (e.detail_code ? `${e.code} / ${e.detail_code}` : e.code) : "", { class: "code" })],
        TIMELINE));
    }
    if (!item.events.length) body.append(empty(6, "No events recorded."));
    const diagram = card.querySelector(".diagram");
    diagram.dataset.source = highlighted(item.diagram);
    diagram.dataset.edges = JSON.stringify(item.diagram.edges);
    diagram.setAttribute("aria-label", `State diagram of the ${item.diagram.channel} channel; states taken: ${item.diagram.visited.join(", ")}`);
    return card;
  }

  function highlighted(diagram) {
    const taken = diagram.visited.filter((state) => /^[a-z_]+$/.test(state));
    const lines = [diagram.mermaid, "    classDef taken fill:#ffe08a,stroke:#8a5a00,stroke-width:3px,color:#1a1a1a"];
    if (taken.length) lines.push(`    class ${taken.join(",")} taken`);
    return lines.join("\n");
  }

  async function draw(node) {
    const source = node.dataset.source;
    if (!window.mermaid) { node.replaceChildren(text("pre", source)); return; }
    try {
      diagrams += 1;
      const { svg } = await window.mermaid.render(`diagram-${diagrams}`, source);
      node.innerHTML = svg; // drawn by Mermaid (securityLevel strict) from the service's own definition
      for (const edge of JSON.parse(node.dataset.edges || "[]")) {
        for (const part of node.querySelectorAll(`[data-id="edge${edge}"]`)) part.classList.add("taken-edge");
      }
      node.dataset.rendered = "true";
    } catch (error) {
      node.replaceChildren(text("p", "The diagram could not be drawn.", { class: "error" }), text("pre", source));
    }
  }

  // ---- start ----

  document.addEventListener("DOMContentLoaded", async () => {
    if (window.mermaid) window.mermaid.initialize({ startOnLoad: false, securityLevel: "strict", theme: "neutral" });
    $("sign-in-form").addEventListener("submit", signIn);
    $("search-form").addEventListener("submit", search);
    $("sign-out").addEventListener("click", () => signOut());
    $("refresh").addEventListener("click", refresh);
    if (key()) {
      const { status, body } = await api("/v1/console/summary");
      if (status === 200) { show(body); return; }
    }
    $("sign-in").hidden = false;
    document.body.dataset.ready = "true";
  });
  window.addEventListener("load", () => { document.body.dataset.ready = "true"; });
})();
