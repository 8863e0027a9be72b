// The interactive reference. Credentials live in sessionStorage only, are sent only with the
// request being tried, and never appear in a URL or a curl command.
"use strict";

const KEY = "siesta.apiKey";
const ORG = "siesta.orgId";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

function setupCredentials() {
  const key = document.getElementById("api-key");
  const org = document.getElementById("org-id");
  if (!key) return;
  key.value = sessionStorage.getItem(KEY) || "";
  org.value = sessionStorage.getItem(ORG) || "";
  key.addEventListener("input", () => sessionStorage.setItem(KEY, key.value));
  org.addEventListener("input", () => sessionStorage.setItem(ORG, org.value));
  document.getElementById("clear-credentials").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    sessionStorage.removeItem(ORG);
    key.value = "";
    org.value = "";
  });
}

function resolve(doc, schema) {
  if (schema && schema.$ref) {
    return doc.components.schemas[schema.$ref.split("/").pop()] || {};
  }
  return schema || {};
}

// An example value for a schema, for request bodies and documentation. With `sendable`, an
// object holds only its required members and those with an example of their own, so that
// a Try request works as it is prefilled (an empty optional field would be refused).
function example(doc, schema, depth, sendable) {
  schema = resolve(doc, schema);
  if (depth > 4) return null;
  if (schema.example !== undefined) return schema.example;
  if (schema.examples && schema.examples.length) return schema.examples[0];
  if (schema.oneOf) return example(doc, schema.oneOf.find((s) => s.type !== "null") || schema.oneOf[0], depth + 1, sendable);
  const type = Array.isArray(schema.type) ? schema.type.find((t) => t !== "null") : schema.type;
  if (schema.enum) return schema.enum[0];
  if (type === "object" || schema.properties) {
    const out = {};
    const required = schema.required || [];
    for (const [name, prop] of Object.entries(schema.properties || {})) {
      const own = resolve(doc, prop);
      const exampled = own.example !== undefined || (own.examples && own.examples.length);
      if (sendable && !required.includes(name) && !exampled) continue;
      out[name] = example(doc, prop, depth + 1, sendable);
    }
    return out;
  }
  if (type === "array") return [example(doc, schema.items, depth + 1, sendable)];
  if (type === "integer" || type === "number") return 0;
  if (type === "boolean") return false;
  if (schema.format === "uuid") return "00000000-0000-0000-0000-000000000000";
  if (schema.format === "date-time") return "2026-11-28T09:30:00.000Z";
  return "";
}

function shellQuote(s) {
  return "'" + s.replace(/'/g, "'\\''") + "'";
}

// The command a person can paste: secrets by variable name, never by value.
function curlFor(method, url, body) {
  const lines = [`curl -X ${method} ${shellQuote(url)}`,
    `  -H "X-Api-Key: $SIESTA_API_KEY"`,
    `  -H "X-Org-Id: $SIESTA_ORG_ID"`];
  if (body !== null) {
    lines.push(`  -H 'Content-Type: application/json'`);
    lines.push(`  --data ${shellQuote(body)}`);
  }
  return lines.join(" \\\n");
}

function tryForm(doc, path, method, op) {
  const form = el("form", { class: "try" });
  const params = op.parameters || [];
  for (const p of params) {
    form.append(el("label", { for: `${op.operationId}-${p.name}`, text: `${p.name} (${p.in}${p.required ? ", required" : ""})` }));
    const input = el("input", { id: `${op.operationId}-${p.name}`, name: p.name, "data-in": p.in });
    // The browser says so by the field, instead of sending a request to a broken path.
    if (p.required) input.required = true;
    form.append(input);
  }
  let bodyArea = null;
  const content = op.requestBody && op.requestBody.content;
  if (content && content["application/json"]) {
    form.append(el("label", { for: `${op.operationId}-body`, text: "JSON body" }));
    bodyArea = el("textarea", { id: `${op.operationId}-body`, rows: "6" });
    bodyArea.value = JSON.stringify(example(doc, content["application/json"].schema, 0, true), null, 2);
    form.append(bodyArea);
  }
  const curl = el("pre", { class: "curl" });
  const result = el("div", { class: "result" });
  const send = el("button", { type: "submit", text: "Try request" });
  form.append(send, el("p", { text: "Equivalent command:" }), curl, result);

  function target() {
    let url = path;
    const query = new URLSearchParams();
    for (const input of form.querySelectorAll("input[data-in]")) {
      const v = input.value.trim();
      if (input.dataset.in === "path") url = url.replace(`{${input.name}}`, encodeURIComponent(v));
      else if (input.dataset.in === "query" && v !== "") query.append(input.name, v);
    }
    const qs = query.toString();
    return qs ? `${url}?${qs}` : url;
  }
  function refresh() {
    curl.textContent = curlFor(method.toUpperCase(), location.origin + target(), bodyArea ? bodyArea.value : null);
  }
  form.addEventListener("input", refresh);
  refresh();
  // A field the browser refuses to send: an earlier answer below would read as this one's.
  form.addEventListener("invalid", () => result.replaceChildren(), true);

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    refresh();
    result.replaceChildren(el("p", { text: "Sending…" }));
    const headers = {
      "X-Api-Key": sessionStorage.getItem(KEY) || "",
      "X-Org-Id": sessionStorage.getItem(ORG) || "",
    };
    const init = { method: method.toUpperCase(), headers, credentials: "omit", cache: "no-store", referrerPolicy: "no-referrer" };
    if (bodyArea) {
      headers["Content-Type"] = "application/json";
      init.body = bodyArea.value;
    }
    let response;
    try {
      response = await fetch(target(), init);
    } catch (e) {
      result.replaceChildren(el("p", { class: "failure", text:
        "The browser could not send this request (blocked by CORS, a network policy or the connection). " +
        "Use the curl command above from a terminal instead." }));
      return;
    }
    const shown = ["x-request-id", "ratelimit", "ratelimit-policy", "retry-after", "content-type"]
      .filter((h) => response.headers.has(h))
      .map((h) => `${h}: ${response.headers.get(h)}`).join("\n");
    let text = await response.text();
    try { text = JSON.stringify(JSON.parse(text), null, 2); } catch (_) { /* not JSON */ }
    result.replaceChildren(
      el("p", { class: "status", text: `Status: ${response.status}` }),
      el("pre", { class: "headers", text: shown }),
      el("pre", { class: "body", text }));
  });
  return form;
}

// Text from the document, with its `code` spans shown as code. Built from text nodes only,
// never parsed as HTML.
function prose(tag, text) {
  const node = el(tag, {});
  (text || "").split("`").forEach((part, i) => node.append(i % 2 ? el("code", { text: part }) : part));
  return node;
}

function operationView(doc, path, method, op) {
  const details = el("details", { class: "op", id: op.operationId });
  details.append(el("summary", {},
    el("span", { class: "method", text: method.toUpperCase() }),
    el("span", { class: "path", text: path }), " — ", prose("span", op.summary)));
  if (op.description) details.append(prose("p", op.description));
  if (op.parameters && op.parameters.length) {
    const table = el("table", {}, el("tr", {}, el("th", { text: "Parameter" }), el("th", { text: "In" }), el("th", { text: "Description" })));
    for (const p of op.parameters) table.append(el("tr", {}, el("td", { text: p.name + (p.required ? " *" : "") }), el("td", { text: p.in }), prose("td", p.description)));
    details.append(el("h4", { text: "Parameters" }), table);
  }
  const body = op.requestBody && op.requestBody.content;
  if (body) {
    for (const [type, media] of Object.entries(body)) {
      details.append(el("h4", { text: `Request body (${type})` }),
        el("pre", { text: JSON.stringify(example(doc, media.schema, 0), null, 2) }));
    }
  }
  const responses = el("table", {}, el("tr", {}, el("th", { text: "Status" }), el("th", { text: "Meaning" })));
  for (const [status, r] of Object.entries(op.responses || {})) {
    const resolved = r.$ref ? doc.components.responses[r.$ref.split("/").pop()] : r;
    responses.append(el("tr", {}, el("td", { text: status }), prose("td", resolved && resolved.description)));
  }
  details.append(el("h4", { text: "Responses" }), responses);
  const ok = Object.entries(op.responses || {}).find(([s]) => s.startsWith("2"));
  const okContent = ok && ok[1].content && ok[1].content["application/json"];
  if (okContent) details.append(el("h4", { text: "Example answer" }), el("pre", { text: JSON.stringify(example(doc, okContent.schema, 0), null, 2) }));
  details.append(el("h4", { text: "Try request" }), tryForm(doc, path, method, op));
  return details;
}

async function renderReference() {
  const main = document.getElementById("reference");
  if (!main) return;
  let doc;
  try {
    doc = await (await fetch("/openapi.json", { credentials: "omit" })).json();
  } catch (e) {
    main.replaceChildren(el("p", { class: "failure", text: "Could not load /openapi.json." }));
    return;
  }
  const byTag = new Map();
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(item)) {
      const tag = (op.tags && op.tags[0]) || "Other";
      if (!byTag.has(tag)) byTag.set(tag, []);
      byTag.get(tag).push([path, method, op]);
    }
  }
  const sections = [el("p", { text: doc.info.description || "" })];
  // The calling key first: it is the request to try before any other.
  const tags = [...byTag.keys()].sort((a, b) => (b === "Me") - (a === "Me"));
  for (const tag of tags) {
    const ops = byTag.get(tag);
    const section = el("section", { class: "tag" }, el("h2", { text: tag }));
    // What the resource is, as the document's tag says it.
    const described = (doc.tags || []).find((t) => t.name === tag);
    if (described && described.description) section.append(prose("p", described.description));
    for (const [path, method, op] of ops) section.append(operationView(doc, path, method, op));
    sections.push(section);
  }
  main.replaceChildren(...sections);
}

setupCredentials();
renderReference();
