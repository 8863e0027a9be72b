// The interactive reference. Credentials live in sessionStorage only, are sent only with the
// request being tried, and never appear in a URL, a curl command or a code sample: those read
// $SIESTA_API_KEY and $SIESTA_ORG_ID from the environment of whoever runs them.
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
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
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

// The sticky header's height, so that a jump to an operation does not land under it.
function trackHeaderHeight() {
  const header = document.querySelector("body > header");
  if (!header) return;
  // Narrow screens do not keep the header in view, so nothing is hidden under it there.
  const set = () => document.documentElement.style.setProperty("--header-height",
    getComputedStyle(header).position === "sticky" ? `${header.offsetHeight}px` : "0px");
  set();
  new ResizeObserver(set).observe(header);
  window.addEventListener("resize", set);
}

function refName(ref) {
  return ref.split("/").pop();
}

function resolve(doc, schema) {
  if (schema && schema.$ref) {
    // A $ref with siblings (a description of the use) keeps them over the target's.
    const { $ref, ...rest } = schema;
    return { ...(doc.components.schemas[refName($ref)] || {}), ...rest };
  }
  return schema || {};
}

// A schema with its `allOf` parts merged and a nullable `oneOf` unwrapped; `nullable` says
// whether null is allowed.
function flatten(doc, schema) {
  schema = resolve(doc, schema);
  if (schema.allOf) {
    const out = { type: "object", properties: {}, required: [] };
    for (const part of schema.allOf.map((s) => flatten(doc, s))) {
      Object.assign(out.properties, part.properties || {});
      out.required.push(...(part.required || []));
    }
    return { ...out, description: schema.description };
  }
  if (schema.oneOf) {
    const real = schema.oneOf.filter((s) => s.type !== "null");
    const nullable = real.length < schema.oneOf.length;
    if (real.length === 1) {
      const inner = flatten(doc, real[0]);
      return { ...inner, description: schema.description || inner.description, nullable: nullable || inner.nullable };
    }
  }
  if (Array.isArray(schema.type)) {
    const types = schema.type.filter((t) => t !== "null");
    return { ...schema, type: types.length === 1 ? types[0] : types, nullable: types.length < schema.type.length };
  }
  return schema;
}

const SAMPLE_UUID = "0190a1b2-c3d4-7e5f-8071-8293a4b5c6d7";
const SAMPLE_TIME = "2026-11-28T09:30:00.000Z";

// A plausible text for a string without an example of its own: one that its format, pattern
// and lengths accept where a simple candidate does.
function sampleString(schema, name) {
  const formats = { uuid: SAMPLE_UUID, "date-time": SAMPLE_TIME, date: "2026-11-28", email: "ada@example.com",
    uri: "https://example.com/hook", url: "https://example.com/hook", ipv4: "203.0.113.7", binary: "<file contents>" };
  if (formats[schema.format]) return formats[schema.format];
  const candidates = [name, "string", "example", "abc", "a", "1", "30d", "0"].filter(Boolean);
  let pattern = null;
  try { pattern = schema.pattern ? new RegExp(schema.pattern, "u") : null; } catch (_) { /* unknown syntax */ }
  const fits = (s) => (!pattern || pattern.test(s)) &&
    s.length >= (schema.minLength || 0) && s.length <= (schema.maxLength ?? Infinity);
  return candidates.find(fits) || candidates[1].padEnd(schema.minLength || 0, "x").slice(0, schema.maxLength ?? undefined);
}

// An example value for a schema, for request bodies and documentation. With `sendable`, an
// object holds only its required members and those with an example of their own, so that
// a Try request works as it is prefilled (an empty optional field would be refused).
// `hints` holds values by member name (the request's, for its answer) where a member has no
// example of its own.
function example(doc, schema, depth, sendable, name, hints) {
  if (depth > 5) return null;
  const raw = resolve(doc, schema);
  if (raw.example !== undefined) return raw.example;
  if (raw.examples && raw.examples.length) return raw.examples[0];
  schema = flatten(doc, schema);
  if (schema.example !== undefined) return schema.example;
  if (schema.examples && schema.examples.length) return schema.examples[0];
  if (schema.default !== undefined) return schema.default;
  if (schema.enum) return schema.enum[0];
  const type = Array.isArray(schema.type) ? schema.type[0] : schema.type;
  if (type === "object" || schema.properties) {
    const out = {};
    const required = schema.required || [];
    for (const [prop, sub] of Object.entries(schema.properties || {})) {
      const own = resolve(doc, sub);
      const exampled = own.example !== undefined || (own.examples && own.examples.length);
      if (sendable && !required.includes(prop) && !exampled) continue;
      const hinted = hints && hints[prop];
      const fits = hinted !== undefined && hinted !== null && !exampled && typeof hinted !== "object" &&
        [].concat(flatten(doc, sub).type).includes(typeof hinted === "number" ? "integer" : typeof hinted);
      out[prop] = fits ? hinted : example(doc, sub, depth + 1, sendable, prop, hints);
    }
    return out;
  }
  if (type === "array") return sendable && !schema.minItems ? [] : [example(doc, schema.items, depth + 1, sendable, null, hints)];
  if (type === "integer" || type === "number") {
    const lo = schema.minimum ?? 0;
    return lo <= 25 && 25 <= (schema.maximum ?? Infinity) ? 25 : lo;
  }
  if (type === "boolean") return true;
  if (type === "string") return sampleString(schema, name);
  return null;
}

// ---- Limits and types, as a reader of a table wants them ----

function count(n) {
  return Number(n).toLocaleString("en-US");
}

function typeLabel(doc, schema) {
  const s = flatten(doc, schema);
  let label;
  if (s.enum) label = "enum";
  else if (s.type === "array") {
    const items = flatten(doc, s.items);
    label = `array of ${items.properties ? "objects" : typeLabel(doc, s.items)}`;
  } else if (s.format === "binary") label = "file";
  else label = [].concat(s.type || (s.properties ? "object" : "any")).join(" or ");
  if (s.format && s.format !== "binary" && !/^(int32|int64|double|float)$/.test(s.format)) label += ` (${s.format})`;
  if (s.nullable) label += " or null";
  return label;
}

// The schema's limits in words: lengths, ranges, item counts, allowed values, pattern.
function limits(doc, schema) {
  const s = flatten(doc, schema);
  const out = [];
  const range = (lo, hi, unit) => {
    if (lo !== undefined && hi !== undefined) return lo === hi ? `exactly ${count(lo)}${unit}` : `${count(lo)}–${count(hi)}${unit}`;
    if (hi !== undefined) return `up to ${count(hi)}${unit}`;
    if (lo !== undefined) return `at least ${count(lo)}${unit}`;
    return null;
  };
  if (s.format !== "uuid" && s.format !== "date-time") {
    const unit = s.format === "binary" ? " bytes" : " characters";
    const len = range(s.minLength, s.maxLength, unit);
    if (len) out.push(len);
    if (s.type === "integer" || s.type === "number") {
      // The 64-bit bounds say only "a number", not a limit to mention.
      const hi = s.maximum !== undefined && s.maximum < 2 ** 53 ? s.maximum : undefined;
      const r = range(s.minimum, hi, "");
      if (r) out.push(r.replace(/–/, " to "));
    }
  }
  const items = range(s.minItems, s.maxItems, " items");
  if (items) out.push(items);
  return { words: out, values: s.enum || null, pattern: s.format === "uuid" ? null : s.pattern || null, fallback: s.default };
}

// A button that shows and hides what it controls. Not a <details>: an operation's own
// <summary> is the only one inside it.
let disclosures = 0;
function disclosure(label, content) {
  const id = `disclosure-${++disclosures}`;
  content.id = id;
  content.hidden = true;
  const button = el("button", { type: "button", class: "disclosure", "aria-expanded": "false", "aria-controls": id, text: label });
  button.addEventListener("click", () => {
    content.hidden = !content.hidden;
    button.setAttribute("aria-expanded", String(!content.hidden));
  });
  return el("span", { class: "limit" }, button, content);
}

function limitsCell(doc, schema, description) {
  const cell = prose("td", description || flatten(doc, schema).description || "");
  const l = limits(doc, schema);
  const notes = el("div", { class: "limits" });
  if (l.words.length) notes.append(el("span", { class: "limit", text: l.words.join(", ") }));
  if (l.values) {
    const values = el("span", { class: "limit" }, "One of: ");
    l.values.forEach((v, i) => values.append(i ? ", " : "", el("code", { text: String(v) })));
    notes.append(values);
  }
  if (l.fallback !== undefined) notes.append(el("span", { class: "limit" }, "Default: ", el("code", { text: JSON.stringify(l.fallback) })));
  if (l.pattern) {
    // Long patterns (character classes that refuse control characters) are kept out of the way.
    if (l.pattern.length <= 48) notes.append(el("span", { class: "limit" }, "Pattern: ", el("code", { text: l.pattern })));
    else notes.append(disclosure("Pattern", el("code", { class: "pattern", text: l.pattern })));
  }
  if (notes.childNodes.length) cell.append(notes);
  return cell;
}

function table(headings, rows, label) {
  const t = el("table", { class: "schema" });
  if (label) t.setAttribute("aria-label", label);
  t.append(el("thead", {}, el("tr", {}, ...headings.map((h) => el("th", { scope: "col", text: h })))));
  t.append(el("tbody", {}, ...rows));
  return el("div", { class: "table-wrap" }, t);
}

// In a request, `required` is what the caller must send; in an answer, every member is there
// unless it says "optional", so only that is marked.
function fieldCell(name, required, answer) {
  const mark = required ? (answer ? null : el("span", { class: "required", text: "required" })) : el("span", { class: "optional", text: "optional" });
  return el("td", { class: "field" }, el("code", { class: "name", text: name }), mark);
}

// One row per member, nested objects as `parent.child` and `list[].child`.
function schemaRows(doc, schema, prefix, depth, rows, answer) {
  const s = flatten(doc, schema);
  const required = s.required || [];
  for (const [name, sub] of Object.entries(s.properties || {})) {
    const full = prefix + name;
    const row = el("tr", { "data-field": full }, fieldCell(full, required.includes(name), answer),
      el("td", { class: "type", text: typeLabel(doc, sub) }), limitsCell(doc, sub));
    rows.push(row);
    if (depth >= 3) continue;
    const inner = flatten(doc, sub);
    if (inner.properties) schemaRows(doc, inner, `${full}.`, depth + 1, rows, answer);
    else if (inner.type === "array" && flatten(doc, inner.items).properties) schemaRows(doc, inner.items, `${full}[].`, depth + 1, rows, answer);
  }
  return rows;
}

function schemaTable(doc, schema, label, answer) {
  const s = flatten(doc, schema);
  if (!s.properties) return el("p", {}, "A ", el("code", { text: typeLabel(doc, schema) }), ".");
  return table(["Field", "Type", "Description"], schemaRows(doc, s, "", 0, [], answer), label);
}

// ---- Code samples ----

const SAMPLE_LANGUAGES = [
  ["curl", "curl"],
  ["python", "Python"],
  ["javascript", "JavaScript"],
  ["rust", "Rust"],
];

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

function indent(text, by) {
  return text.split("\n").map((line, i) => (i ? by + line : line)).join("\n");
}

// JSON as a Python literal: the same text but for true, false and null.
function pythonLiteral(value) {
  return JSON.stringify(value, null, 4).replace(/("(?:[^"\\]|\\.)*")|\b(true|false|null)\b/g,
    (m, str, word) => str || { true: "True", false: "False", null: "None" }[word]);
}

// What one operation's samples need: the URL with example path values and required query
// parameters, the method, and the body (JSON, or a multipart file field).
function requestShape(doc, path, method, op) {
  let url = path;
  const query = new URLSearchParams();
  for (const p of op.parameters || []) {
    const value = String(example(doc, p.schema, 0, true, p.name));
    if (p.in === "path") url = url.replace(`{${p.name}}`, encodeURIComponent(value));
    else if (p.in === "query" && p.required) query.append(p.name, value);
  }
  const qs = query.toString();
  const content = (op.requestBody && op.requestBody.content) || {};
  let json = null;
  let file = null;
  if (content["application/json"]) json = example(doc, content["application/json"].schema, 0, true);
  else if (content["multipart/form-data"]) {
    const form = flatten(doc, content["multipart/form-data"].schema);
    file = Object.keys(form.properties || { file: {} })[0];
  }
  return { method: method.toUpperCase(), url: location.origin + url + (qs ? `?${qs}` : ""), json, file };
}

function sampleCurl(r) {
  if (r.file) {
    return [`curl -X ${r.method} ${shellQuote(r.url)}`, `  -H "X-Api-Key: $SIESTA_API_KEY"`,
      `  -H "X-Org-Id: $SIESTA_ORG_ID"`, `  -F ${shellQuote(`${r.file}=@report.pdf`)}`].join(" \\\n");
  }
  return curlFor(r.method, r.url, r.json === null ? null : JSON.stringify(r.json, null, 2));
}

function samplePython(r) {
  const args = [`    ${JSON.stringify(r.url)},`,
    `    headers={`,
    `        "X-Api-Key": os.environ["SIESTA_API_KEY"],`,
    `        "X-Org-Id": os.environ["SIESTA_ORG_ID"],`,
    `    },`];
  if (r.json !== null) args.push(`    json=${indent(pythonLiteral(r.json), "    ")},`);
  if (r.file) args.push(`    files={${JSON.stringify(r.file)}: open("report.pdf", "rb")},`);
  args.push(`    timeout=30,`);
  return ["import os", "", "import requests", "",
    `response = requests.${r.method.toLowerCase()}(`, ...args, ")",
    "print(response.status_code, response.text)"].join("\n");
}

function sampleJavaScript(r) {
  const lines = [];
  if (r.file) {
    lines.push(`import { openAsBlob } from "node:fs";`, "",
      "const form = new FormData();",
      `form.append(${JSON.stringify(r.file)}, await openAsBlob("report.pdf"), "report.pdf");`, "");
  }
  lines.push(`const response = await fetch(${JSON.stringify(r.url)}, {`,
    `  method: ${JSON.stringify(r.method)},`,
    "  headers: {",
    `    "X-Api-Key": process.env.SIESTA_API_KEY,`,
    `    "X-Org-Id": process.env.SIESTA_ORG_ID,`);
  if (r.json !== null) lines.push(`    "Content-Type": "application/json",`);
  lines.push("  },");
  if (r.json !== null) lines.push(`  body: JSON.stringify(${indent(JSON.stringify(r.json, null, 2), "  ")}),`);
  if (r.file) lines.push("  body: form,");
  lines.push("});", "console.log(response.status, await response.text());");
  return lines.join("\n");
}

function sampleRust(r) {
  const lines = [];
  if (r.file) lines.push("use reqwest::multipart::Form;", "");
  lines.push("#[tokio::main]",
    "async fn main() -> Result<(), Box<dyn std::error::Error>> {",
    `    let api_key = std::env::var("SIESTA_API_KEY")?;`,
    `    let org_id = std::env::var("SIESTA_ORG_ID")?;`);
  if (r.file) lines.push(`    let form = Form::new().file(${JSON.stringify(r.file)}, "report.pdf").await?;`);
  lines.push("    let response = reqwest::Client::new()",
    `        .request(reqwest::Method::${r.method}, ${JSON.stringify(r.url)})`,
    `        .header("X-Api-Key", api_key)`,
    `        .header("X-Org-Id", org_id)`);
  if (r.json !== null) lines.push(`        .json(&serde_json::json!(${indent(JSON.stringify(r.json, null, 4), "        ")}))`);
  if (r.file) lines.push("        .multipart(form)");
  lines.push("        .send()", "        .await?;",
    `    println!("{} {}", response.status(), response.text().await?);`,
    "    Ok(())", "}");
  return lines.join("\n");
}

const SAMPLES = { curl: sampleCurl, python: samplePython, javascript: sampleJavaScript, rust: sampleRust };

function copyButton(source) {
  if (!navigator.clipboard) return null;
  const button = el("button", { type: "button", class: "copy", text: "Copy" });
  button.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(source.textContent);
      button.textContent = "Copied";
    } catch (_) {
      button.textContent = "Select and copy";
    }
    setTimeout(() => { button.textContent = "Copy"; }, 1500);
  });
  return button;
}

// Tabs in the WAI-ARIA pattern: one tab list, one panel per tab, arrow keys move between tabs.
// The language chosen is remembered for the page, so every operation shows the same one.
function tabs(id, label, entries, group) {
  const list = el("div", { class: "tabs", role: "tablist", "aria-label": label });
  const panels = [];
  const buttons = entries.map(([key, name, content], i) => {
    const button = el("button", { type: "button", role: "tab", id: `${id}-tab-${key}`, "aria-controls": `${id}-panel-${key}`,
      "data-key": key, "data-group": group || "", text: name });
    const panel = el("div", { role: "tabpanel", id: `${id}-panel-${key}`, "aria-labelledby": `${id}-tab-${key}`, class: "tabpanel" }, content);
    panels.push(panel);
    list.append(button);
    button.addEventListener("click", () => {
      if (group) for (const other of document.querySelectorAll(`[role=tab][data-group="${group}"][data-key="${key}"]`)) other.choose();
      else button.choose();
    });
    button.addEventListener("keydown", (event) => {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
      if (!step) return;
      const next = buttons[(i + step + buttons.length) % buttons.length];
      next.click();
      next.focus();
    });
    button.choose = () => {
      buttons.forEach((b, j) => {
        b.setAttribute("aria-selected", String(b === button));
        b.tabIndex = b === button ? 0 : -1;
        panels[j].hidden = b !== button;
      });
    };
    return button;
  });
  buttons[0].choose();
  return el("div", { class: "tabbed" }, list, ...panels);
}

function codeBlock(text, attrs) {
  const pre = el("pre", { class: "code", ...attrs }, el("code", { text }));
  return el("div", { class: "code-wrap" }, copyButton(pre), pre);
}

function samplesView(doc, path, method, op) {
  const r = requestShape(doc, path, method, op);
  const entries = SAMPLE_LANGUAGES.map(([key, name]) => [key, name, codeBlock(SAMPLES[key](r), { "data-lang": key, class: "code sample" })]);
  return el("section", { class: "panel samples", "aria-label": "Code samples" },
    el("h4", { text: "Request" }),
    el("p", { class: "hint" }, "Reads the key and organization id from ", el("code", { text: "SIESTA_API_KEY" }),
      " and ", el("code", { text: "SIESTA_ORG_ID" }), " in the environment."),
    tabs(`${op.operationId}-samples`, "Language", entries, "language"));
}

// ---- Responses ----

const REASONS = { 200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 400: "Bad Request", 401: "Unauthorized",
  403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 409: "Conflict", 413: "Content Too Large",
  415: "Unsupported Media Type", 429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
  503: "Service Unavailable", 504: "Gateway Timeout" };

function responseOf(doc, r) {
  return r && r.$ref ? doc.components.responses[refName(r.$ref)] || {} : r || {};
}

// The problem codes a response's description names: `snake_case` words in backticks, but
// for the problem document's own members (`errors`).
function problemCodes(doc, description) {
  const members = Object.keys(flatten(doc, { $ref: "#/components/schemas/Problem" }).properties || {});
  return [...(description || "").matchAll(/`([a-z]+(?:_[a-z]+)*)`/g)].map((m) => m[1]).filter((c) => !members.includes(c));
}

// A problem document as the server sends it for this status, with its first code.
function problemExample(doc, op, status, response) {
  const codes = problemCodes(doc, response.description);
  const code = codes[0] || "error";
  const detail = (response.description || "").replace(/^`[a-z_]+`:\s*/, "").replace(/`/g, "");
  const body = {
    type: `/docs/errors#${code}`,
    title: REASONS[status] || "Error",
    status: Number(status),
    detail: detail.charAt(0).toUpperCase() + detail.slice(1),
    code,
    requestId: "0190a1b2c3d47e5f80718293a4b5c6d8",
  };
  if (code === "validation_error") {
    // The first required member of the body, else the first query parameter, with its limit.
    const content = op.requestBody && op.requestBody.content && op.requestBody.content["application/json"];
    const sent = content ? flatten(doc, content.schema) : {};
    const query = (op.parameters || []).find((p) => p.in === "query");
    const field = (sent.required || [])[0] || (query && query.name) || "body";
    const schema = (sent.properties || {})[field] || (query && query.schema) || {};
    const words = limits(doc, schema).words;
    body.detail = "The request is not valid; see errors for each field.";
    body.errors = { [field]: [words.length ? `must be ${words[0]}` : "is not valid"] };
  }
  return body;
}

function statusBadge(status) {
  const kind = status.startsWith("2") ? "ok" : status.startsWith("5") ? "server" : "client";
  return el("span", { class: `status-code status-${kind}`, text: status });
}

function responsesView(doc, op) {
  const rows = [];
  for (const [status, r] of Object.entries(op.responses || {})) {
    const response = responseOf(doc, r);
    rows.push(el("tr", {}, el("td", {}, statusBadge(status)), el("td", { text: REASONS[status] || "" }), prose("td", response.description)));
  }
  return table(["Status", "Meaning", "When"], rows, "Responses");
}

function examplesView(doc, op) {
  const entries = [];
  const sent = op.requestBody && op.requestBody.content && op.requestBody.content["application/json"];
  const hints = sent ? example(doc, sent.schema, 0) : null;
  for (const [status, r] of Object.entries(op.responses || {})) {
    const response = responseOf(doc, r);
    const content = response.content || {};
    let text;
    if (content["application/json"]) text = JSON.stringify(example(doc, content["application/json"].schema, 0, false, null, hints), null, 2);
    else if (content["application/problem+json"]) text = JSON.stringify(problemExample(doc, op, status, response), null, 2);
    else if (Object.keys(content).length) text = `(${Object.keys(content)[0]})`;
    else text = "(no body)";
    entries.push([status, status, codeBlock(text, { "data-status": status, class: "code example" })]);
  }
  return el("section", { class: "panel examples", "aria-label": "Response examples" },
    el("h4", { text: "Response" }), tabs(`${op.operationId}-examples`, "Status", entries));
}

// ---- Try request ----

function tryForm(doc, path, method, op) {
  const form = el("form", { class: "try" });
  const params = op.parameters || [];
  for (const p of params) {
    form.append(el("label", { for: `${op.operationId}-${p.name}`, text: `${p.name} (${p.in}${p.required ? ", required" : ""})` }));
    const input = el("input", { id: `${op.operationId}-${p.name}`, name: p.name, "data-in": p.in, autocomplete: "off", spellcheck: "false" });
    // The browser says so by the field, instead of sending a request to a broken path.
    if (p.required) input.required = true;
    // What the field takes, so an empty one is not a guess: its limits, values and default.
    const l = limits(doc, p.schema || {});
    const hint = [...l.words, ...(l.values ? [`one of ${l.values.join(", ")}`] : [])];
    if (l.fallback !== undefined) hint.push(`default ${l.fallback}`);
    if (hint.length) input.placeholder = hint.join("; ");
    form.append(input);
  }
  let bodyArea = null;
  const content = op.requestBody && op.requestBody.content;
  if (content && content["application/json"]) {
    form.append(el("label", { for: `${op.operationId}-body`, text: "JSON body" }));
    bodyArea = el("textarea", { id: `${op.operationId}-body`, rows: "6", spellcheck: "false" });
    bodyArea.value = JSON.stringify(example(doc, content["application/json"].schema, 0, true), null, 2);
    form.append(bodyArea);
  }
  const curl = el("pre", { class: "curl" });
  const result = el("div", { class: "result" });
  const send = el("button", { type: "submit", class: "primary", text: "Try request" });
  form.append(el("div", { class: "actions" }, send), el("p", { class: "hint", text: "Equivalent command:" }), curl, result);

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

// ---- The page ----

// Text from the document, with its `code` spans shown as code. Built from text nodes only,
// never parsed as HTML.
function prose(tag, text) {
  const node = el(tag, {});
  (text || "").split("`").forEach((part, i) => node.append(i % 2 ? el("code", { text: part }) : part));
  return node;
}

function methodBadge(method) {
  return el("span", { class: `method method-${method}`, text: method.toUpperCase() });
}

// A path that wraps after its slashes only.
function breakable(tag, attrs, path) {
  const node = el(tag, attrs);
  path.split("/").forEach((part, i) => node.append(...(i ? ["/", part, el("wbr")] : [part])));
  return node;
}

function shortPath(path) {
  return path.replace(/^\/api\/v1/, "");
}

function operationView(doc, path, method, op) {
  const details = el("details", { class: "op", id: op.operationId });
  details.append(el("summary", {},
    el("span", { class: "op-line" }, methodBadge(method), el("code", { class: "path", text: path })),
    prose("span", op.summary)));

  const text = el("div", { class: "op-text" });
  if (op.description) text.append(prose("p", op.description));
  if (op.parameters && op.parameters.length) {
    const rows = op.parameters.map((p) => el("tr", { "data-field": p.name }, fieldCell(p.name, p.required),
      el("td", { class: "type" }, typeLabel(doc, p.schema), el("span", { class: "in", text: p.in })),
      limitsCell(doc, p.schema, p.description)));
    text.append(el("h4", { text: "Parameters" }), table(["Name", "Type", "Description"], rows, "Parameters"));
  }
  const body = op.requestBody && op.requestBody.content;
  for (const [type, media] of Object.entries(body || {})) {
    const described = flatten(doc, media.schema).description;
    text.append(el("h4", {}, "Request body ", el("span", { class: "media", text: type })));
    if (described) text.append(prose("p", described));
    const t = schemaTable(doc, media.schema, "Request body");
    t.classList && t.classList.add("request-schema");
    text.append(t);
  }
  text.append(el("h4", { text: "Responses" }), responsesView(doc, op));
  const ok = Object.entries(op.responses || {}).find(([s]) => s.startsWith("2"));
  if (ok) {
    const content = responseOf(doc, ok[1]).content || {};
    const json = content["application/json"];
    text.append(el("h4", {}, `${ok[0]} response `, el("span", { class: "media", text: json ? "application/json" : "no body" })));
    if (json) {
      const t = schemaTable(doc, json.schema, `${ok[0]} response`, true);
      t.classList && t.classList.add("response-schema");
      text.append(t);
    }
    const others = Object.keys(content).filter((t) => t !== "application/json");
    if (others.length) text.append(el("p", { class: "hint" }, "Also as ", ...others.map((t) => el("code", { text: t })), ", by its Accept header."));
  }

  const side = el("div", { class: "op-side" }, samplesView(doc, path, method, op), examplesView(doc, op));
  const trySection = el("section", { class: "try-section", "aria-label": "Try request" },
    el("h4", { text: "Try request" }), tryForm(doc, path, method, op));
  details.append(el("div", { class: "op-body" }, text, side), trySection);
  return details;
}

function sidebarView(tags, byTag) {
  const nav = document.getElementById("sidebar");
  if (!nav) return;
  const groups = tags.map((tag) => el("li", {}, el("span", { class: "group", text: tag }),
    el("ul", {}, ...byTag.get(tag).map(([path, method, op]) => el("li", {},
      el("a", { href: `#${op.operationId}`, title: op.summary || "" }, methodBadge(method),
        breakable("span", { class: "path" }, shortPath(path))))))));
  nav.replaceChildren(el("p", { class: "sidebar-title", text: "API reference" }), el("ul", {}, ...groups));
}

// A jump to an operation opens it.
function openFromHash() {
  const id = decodeURIComponent(location.hash.slice(1));
  const target = id && document.getElementById(id);
  if (!target || !target.matches("details.op")) return;
  target.open = true;
  target.scrollIntoView({ block: "start" });
  for (const a of document.querySelectorAll("#sidebar a")) {
    if (a.getAttribute("href") === `#${id}`) a.setAttribute("aria-current", "location");
    else a.removeAttribute("aria-current");
  }
}

async function renderReference() {
  const main = document.getElementById("reference");
  if (!main) return;
  let doc;
  try {
    doc = await (await fetch("/openapi.json", { credentials: "omit" })).json();
  } catch (e) {
    main.replaceChildren(el("p", { class: "failure", role: "alert", text: "Could not load /openapi.json." }));
    main.removeAttribute("aria-busy");
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
  const sections = [el("div", { class: "intro" }, el("h2", { text: doc.info.title || "API reference" }),
    prose("p", doc.info.description || ""),
    el("p", {}, "Every request sends two headers: ", el("code", { text: "X-Api-Key" }), " and ",
      el("code", { text: "X-Org-Id" }), ". Errors are ", el("code", { text: "application/problem+json" }), "; see ",
      el("a", { href: "/docs/guides/errors", text: "Paging and errors" }), "."))];
  const order = ["get", "post", "put", "patch", "delete"];
  for (const ops of byTag.values()) {
    ops.sort(([p, m], [q, n]) => (p < q ? -1 : p > q ? 1 : order.indexOf(m) - order.indexOf(n)));
  }
  // The calling key first: it is the request to try before any other.
  const tags = [...byTag.keys()].sort((a, b) => (b === "Me") - (a === "Me"));
  for (const tag of tags) {
    const ops = byTag.get(tag);
    const section = el("section", { class: "tag", id: `tag-${tag}` }, el("h2", { text: tag }));
    // What the resource is, as the document's tag says it.
    const described = (doc.tags || []).find((t) => t.name === tag);
    if (described && described.description) section.append(prose("p", described.description));
    for (const [path, method, op] of ops) section.append(operationView(doc, path, method, op));
    sections.push(section);
  }
  main.replaceChildren(...sections);
  main.removeAttribute("aria-busy");
  sidebarView(tags, byTag);
  window.addEventListener("hashchange", openFromHash);
  // A click on the link already in the address bar opens its operation again.
  document.getElementById("sidebar")?.addEventListener("click", (event) => {
    const a = event.target.closest("a");
    if (a && a.getAttribute("href") === location.hash) openFromHash();
  });
  openFromHash();
}

trackHeaderHeight();
setupCredentials();
renderReference();
