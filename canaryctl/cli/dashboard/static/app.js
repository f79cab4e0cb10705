// canaryctl dashboard: renders the Canaries the server streams (Server-Sent Events) and sends the
// control verbs after a confirmation. Text from the cluster is only ever set as text, never as HTML.
"use strict";

const token = document.querySelector('meta[name="canaryctl-token"]').content;
const canaries = new Map();
const verbs = ["promote", "pause", "resume", "retry", "abort"];

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "text") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "style") Object.assign(node.style, value);  // CSSOM: allowed by the page's CSP
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

function bounds(metric) {
  const parts = [];
  if (metric.min !== undefined && metric.min !== null) parts.push(`min ${metric.min}`);
  if (metric.max !== undefined && metric.max !== null) parts.push(`max ${metric.max}`);
  return parts.join(" ") || "no threshold";
}

function metricsTable(metrics) {
  if (!metrics.length) return el("p", { class: "message", text: "no metric checked yet" });
  const rows = metrics.map((m) =>
    el("tr", { dataset: { metric: m.name } },
      el("td", { class: `verdict-${m.verdict}`, text: m.verdict }),
      el("td", { text: m.name }),
      el("td", { class: "value", text: m.value === null || m.value === undefined ? "no data" : m.value.toFixed(2) }),
      el("td", { text: bounds(m) + (m.verdict !== "pass" && m.message ? `  ${m.message}` : "") })));
  return el("table", { class: "metrics" },
    el("thead", {}, el("tr", {}, ...["", "metric", "value", "threshold"].map((t) => el("th", { text: t })))),
    el("tbody", {}, ...rows));
}

function webhooksTable(webhooks) {
  if (!webhooks.length) return null;
  const rows = webhooks.map((h) =>
    el("tr", {},
      el("td", { class: h.success ? "verdict-pass" : "verdict-fail", text: h.success ? "ok" : "failed" }),
      el("td", { text: `${h.type} ${h.name}` }),
      el("td", { text: h.statusCode === undefined || h.statusCode === null ? "-" : String(h.statusCode) }),
      el("td", { text: h.success ? "" : h.message || "" })));
  return el("table", { class: "webhooks" },
    el("thead", {}, el("tr", {}, ...["", "webhook", "HTTP", ""].map((t) => el("th", { text: t })))),
    el("tbody", {}, ...rows));
}

function eventsList(events) {
  const items = events.slice().reverse().map((e) =>
    el("li", { class: e.type, text: `${e.time ? new Date(e.time).toLocaleTimeString() : "-"}  ${e.message}` }));
  return el("details", { class: "events", open: "" },
    el("summary", { text: `events (${events.length})` }), el("ul", {}, ...items));
}

function card(view) {
  const article = el("article", { class: "canary", dataset: { key: view.key } });
  if (view.invalid) {
    article.append(el("h3", {}, el("span", { text: view.name }), el("span", { class: "phase Failed", text: "Invalid" })),
      el("p", { class: "reason", text: view.invalid }), eventsList(view.events || []));
    return article;
  }
  const phase = view.paused && view.phase === "Progressing" ? "Paused" : view.phase;
  const bar = el("div", { class: "bar", title: `canary ${view.weight}%, mirror ${view.mirror}%` },
    el("div", { class: "fill", style: { width: `${view.weight}%` } }),
    view.mirror ? el("div", { class: "mirror", style: { left: `${view.weight}%`, width: `${view.mirror}%` } }) : null);
  const facts = [
    ["step", view.step], ["next", view.next], ["time left", view.timeLeft],
    ["failed checks", view.failedChecks], ["strategy", view.strategy], ["provider", view.provider],
  ];
  if (view.fault) facts.push(["fault", view.fault]);
  const buttons = verbs.map((verb) => el("button", { type: "button", dataset: { verb }, text: verb }));
  for (const button of buttons) button.addEventListener("click", () => confirmVerb(view.key, button.dataset.verb));
  const parts = [
    el("h3", {}, el("span", { class: "name", text: view.name }), el("span", { class: `phase ${phase}`, text: phase })),
    el("p", { class: view.fastFail ? "message reason" : "message", text: view.message || "" }),
    el("div", { class: "weight" }, el("span", { class: "weight-value", text: `${view.weight}% canary` }), bar,
      el("span", { text: view.mirror ? `${view.mirror}% mirrored` : "" })),
    el("dl", {}, ...facts.flatMap(([term, value]) => [el("dt", { text: term }), el("dd", { text: value })])),
    metricsTable(view.metrics), webhooksTable(view.webhooks), eventsList(view.events),
    el("div", { class: "verbs" }, ...buttons),
  ];
  article.append(...parts.filter(Boolean));
  return article;
}

function render() {
  const main = document.getElementById("namespaces");
  const byNamespace = new Map();
  for (const view of [...canaries.values()].sort((a, b) => a.key.localeCompare(b.key))) {
    if (!byNamespace.has(view.namespace)) byNamespace.set(view.namespace, []);
    byNamespace.get(view.namespace).push(view);
  }
  const sections = [...byNamespace].map(([namespace, views]) =>
    el("section", { class: "namespace", dataset: { namespace } },
      el("h2", { text: `namespace ${namespace}` }), el("div", { class: "cards" }, ...views.map(card))));
  main.replaceChildren(...(sections.length ? sections : [el("p", { class: "empty", text: "No Canaries found." })]));
}

function toast(text) {
  const node = document.getElementById("toast");
  node.textContent = text;
  node.classList.add("shown");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => node.classList.remove("shown"), 6000);
}

function confirmVerb(key, verb) {
  const view = canaries.get(key);
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = `${verb} ${key}?`;
  document.getElementById("confirm-effect").textContent = `The operator will: ${view.effects[verb]}`;
  dialog.dataset.key = key;
  dialog.dataset.verb = verb;
  dialog.returnValue = "";
  dialog.showModal();
}

async function send(key, verb) {
  const [namespace, name] = key.split("/");
  const answer = await fetch(`/api/canaries/${encodeURIComponent(namespace)}/${encodeURIComponent(name)}/${verb}`,
    { method: "POST", headers: { "X-Canaryctl-Token": token } });
  const body = await answer.json().catch(() => ({ error: `HTTP ${answer.status}` }));
  toast(answer.ok ? `${verb} requested for ${key}: the operator will ${body.effect}` : `${verb} failed: ${body.error}`);
}

document.getElementById("confirm").addEventListener("close", (event) => {
  const dialog = event.target;
  if (dialog.returnValue === "ok") send(dialog.dataset.key, dialog.dataset.verb);
});

function connect() {
  const status = document.getElementById("connection");
  const source = new EventSource("/api/stream");
  source.onopen = () => { status.textContent = "live"; status.classList.add("live"); };
  source.onerror = () => { status.textContent = "reconnecting…"; status.classList.remove("live"); };
  source.onmessage = (message) => {
    const change = JSON.parse(message.data);
    if (change.type === "snapshot") {
      canaries.clear();
      for (const view of change.items) canaries.set(view.key, view);
    } else if (change.type === "upsert") {
      canaries.set(change.canary.key, change.canary);
    } else if (change.type === "delete") {
      canaries.delete(change.key);
    }
    render();
  };
}

connect();
