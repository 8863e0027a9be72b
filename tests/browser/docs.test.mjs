// The /docs reference in real headless Chromium: credentials typed once, kept in
// sessionStorage only, sent only with the request tried, never in a URL or a curl command.
//
// Needs the siesta binary (SIESTA_BIN, default target/debug/siesta, built by `cargo test`)
// and Chromium (CHROMIUM_PATH, default /usr/bin/chromium). With CI set, a missing one fails.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createInterface } from "node:readline";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { chromium } from "playwright-core";

const root = resolve(import.meta.dirname, "..", "..");
const bin = process.env.SIESTA_BIN || join(root, "target", "debug", "siesta");
const browserPath = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const missing = [bin, browserPath].filter((p) => !existsSync(p));
if (missing.length && process.env.CI) {
  throw new Error(`browser tests need ${missing.join(" and ")}`);
}
const skip = missing.length ? `missing ${missing.join(", ")}` : false;

let server, dir, base, key, org, browser;

async function startServer() {
  dir = mkdtempSync(join(tmpdir(), "siesta-docs-"));
  server = spawn(bin, ["serve", "--listen", "127.0.0.1:0"], { cwd: dir, env: { ...process.env, RUST_LOG: "warn" } });
  const lines = createInterface({ input: server.stdout });
  for await (const line of lines) {
    if (line.startsWith("listening on ")) base = line.slice("listening on ".length);
    const k = line.match(/^\s+X-Api-Key: (\S+)/);
    if (k) key = k[1];
    const o = line.match(/^\s+X-Org-Id:\s+(\S+)/);
    if (o) org = o[1];
    if (line.trim().startsWith("curl ")) break;
  }
  assert.ok(base && key && org, "the first start printed the address, key and organization");
}

before(async () => {
  if (skip) return;
  await startServer();
  browser = await chromium.launch({
    executablePath: browserPath,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
});

after(async () => {
  await browser?.close();
  server?.kill("SIGTERM");
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** A fresh page on /docs that records every request it makes. */
async function openDocs() {
  const context = await browser.newContext();
  const page = await context.newPage();
  const requests = [];
  page.on("request", (r) => requests.push({ url: r.url(), headers: r.headers() }));
  await page.goto(`${base}/docs`);
  await page.locator("details#me").waitFor();
  return { context, page, requests };
}

async function tryMe(page) {
  const me = page.locator("details#me");
  if (!(await me.evaluate((d) => d.open))) await me.locator("summary").click();
  await me.getByRole("button", { name: "Try request" }).click();
  return me;
}

test("the page loads with no request leaving this server", { skip }, async () => {
  const { context, requests } = await openDocs();
  assert.ok(requests.length >= 3, "page, script, style and the OpenAPI document");
  for (const r of requests) assert.ok(r.url.startsWith(base), `left the origin: ${r.url}`);
  await context.close();
});

test("each resource says what it is under its heading, as the document's tag does", { skip }, async () => {
  const { context, page } = await openDocs();
  const doc = await (await fetch(`${base}/openapi.json`)).json();
  const agent = doc.tags.find((t) => t.name === "Agent");
  assert.ok(agent && agent.description, "the document describes the Agent tag");
  const section = page.locator("section.tag", { has: page.getByRole("heading", { name: "Agent", exact: true }) });
  assert.equal(await section.locator("h2 + p").innerText(), agent.description);
  await context.close();
});

test("credentials typed once are sent with Try request and shown nowhere else", { skip }, async () => {
  const { context, page, requests } = await openDocs();
  const input = page.getByLabel("X-Api-Key");
  assert.equal(await input.getAttribute("type"), "password");
  await input.fill(key);
  await page.getByLabel("X-Org-Id").fill(org);
  const me = await tryMe(page);
  await me.locator(".status").waitFor();
  assert.equal(await me.locator(".status").textContent(), "Status: 200");
  const headers = await me.locator(".headers").textContent();
  assert.match(headers, /x-request-id: /);
  assert.match(headers, /ratelimit: "api-key";r=\d+;t=\d+/);
  const sent = requests.find((r) => r.url === `${base}/api/v1/Me`);
  assert.equal(sent.headers["x-api-key"], key);
  assert.equal(sent.headers["x-org-id"], org);
  for (const r of requests) {
    assert.ok(!r.url.includes(key), "no URL holds the key");
    if (r.url !== `${base}/api/v1/Me`) assert.equal(r.headers["x-api-key"], undefined, `key sent with ${r.url}`);
  }
  const curl = await me.locator(".curl").textContent();
  assert.match(curl, /\$SIESTA_API_KEY/);
  assert.match(curl, /\$SIESTA_ORG_ID/);
  assert.ok(!curl.includes(key) && !curl.includes(org));
  const session = await page.evaluate(() => JSON.stringify(sessionStorage));
  assert.ok(session.includes(key) && session.includes(org), "sessionStorage holds them");
  assert.equal(await page.evaluate(() => localStorage.length), 0);
  assert.deepEqual(await context.cookies(), []);
  assert.ok(!page.url().includes(key));

  await page.reload();
  await page.locator("details#me").waitFor();
  assert.equal(await page.getByLabel("X-Api-Key").inputValue(), key, "a reload in the tab keeps them");
  assert.equal(await page.getByLabel("X-Org-Id").inputValue(), org);
  await page.getByRole("button", { name: "Clear credentials" }).click();
  assert.equal(await page.getByLabel("X-Api-Key").inputValue(), "");
  assert.equal(await page.evaluate(() => sessionStorage.length), 0, "Clear credentials forgets them");
  await context.close();
});

test("a request the browser cannot send points to the curl command", { skip }, async () => {
  const { context, page } = await openDocs();
  await page.getByLabel("X-Api-Key").fill(key);
  await page.getByLabel("X-Org-Id").fill(org);
  await page.route("**/api/v1/Me", (route) => route.abort("blockedbyclient"));
  const me = await tryMe(page);
  const failure = me.locator(".failure");
  await failure.waitFor();
  assert.match(await failure.textContent(), /could not send this request.*curl command/s);
  await context.close();
});

test("a prefilled Try request works as it is, and a missing path id is caught by its field", { skip }, async () => {
  const { context, page, requests } = await openDocs();
  await page.getByLabel("X-Api-Key").fill(key);
  await page.getByLabel("X-Org-Id").fill(org);
  // The body holds what the operation needs; optional fields left empty would be refused.
  const create = page.locator("details#create_agent");
  await create.locator("summary").click();
  await create.getByRole("button", { name: "Try request" }).click();
  await create.locator(".status").waitFor();
  assert.equal(await create.locator(".status").textContent(), "Status: 201");
  // Without its agentId, the request is not sent: the field says what is missing.
  const respond = page.locator("details#respond");
  await respond.locator("summary").click();
  const before = requests.length;
  await respond.getByRole("button", { name: "Try request" }).click();
  const agentId = respond.getByLabel(/agentId/);
  assert.notEqual(await agentId.evaluate((i) => i.validationMessage), "");
  await page.waitForTimeout(300);
  assert.equal(requests.length, before, "nothing was sent");
  // An answer to an earlier try is not left under a field the browser refused.
  await agentId.fill("0190a1b2-c3d4-7e5f-8071-8293a4b5c6d7");
  await respond.getByRole("button", { name: "Try request" }).click();
  await respond.locator(".status").waitFor();
  assert.equal(await respond.locator(".status").textContent(), "Status: 404");
  await agentId.fill("");
  await respond.getByRole("button", { name: "Try request" }).click();
  assert.equal(await respond.locator(".status").count(), 0, "the earlier answer is cleared");
  await context.close();
});

test("the sidebar lists every operation of the document, and its links open them", { skip }, async () => {
  const { context, page } = await openDocs();
  const doc = await (await fetch(`${base}/openapi.json`)).json();
  const ids = Object.values(doc.paths).flatMap((item) => Object.values(item).map((op) => op.operationId));
  const links = await page.locator("#sidebar a").evaluateAll((as) => as.map((a) => a.getAttribute("href")));
  assert.deepEqual([...links].sort(), ids.map((id) => `#${id}`).sort());
  for (const id of ids) assert.equal(await page.locator(`details.op#${id}`).count(), 1, id);

  for (const id of ["create_agent", "get_workspace"]) {
    const link = page.locator(`#sidebar a[href="#${id}"]`);
    assert.match(await link.locator(".method").innerText(), /^(GET|POST|PUT|DELETE)$/);
    await link.click();
    const op = page.locator(`details#${id}`);
    await page.waitForFunction((i) => document.getElementById(i).open, id);
    assert.ok(page.url().endsWith(`#${id}`));
    // It lands below the sticky header, at the top of what is in view.
    const box = await op.locator("summary").boundingBox();
    const header = await page.locator("body > header").boundingBox();
    assert.ok(box.y >= header.y + header.height - 1 && box.y < 400, `${id} in view at ${box.y}`);
  }
  await context.close();
});

test("each language's sample reads the credentials from the environment, never the typed ones", { skip }, async () => {
  const { context, page } = await openDocs();
  await page.getByLabel("X-Api-Key").fill(key);
  await page.getByLabel("X-Org-Id").fill(org);
  const create = page.locator("details#create_agent");
  await create.locator("summary").click();
  const expected = {
    curl: [/\$SIESTA_API_KEY/, /\$SIESTA_ORG_ID/, /curl -X POST/],
    Python: [/os\.environ\["SIESTA_API_KEY"\]/, /os\.environ\["SIESTA_ORG_ID"\]/, /requests\.post\(/],
    JavaScript: [/process\.env\.SIESTA_API_KEY/, /process\.env\.SIESTA_ORG_ID/, /await fetch\(/],
    Rust: [/std::env::var\("SIESTA_API_KEY"\)/, /std::env::var\("SIESTA_ORG_ID"\)/, /reqwest::Client::new\(\)/],
  };
  const samples = create.getByRole("tablist", { name: "Language" });
  for (const [language, patterns] of Object.entries(expected)) {
    await samples.getByRole("tab", { name: language }).click();
    const panel = create.locator(".samples [role=tabpanel]:not([hidden]) pre");
    const text = await panel.innerText();
    for (const p of patterns) assert.match(text, p, language);
    assert.match(text, /"name": "Support triage"/, `${language} sends the example body`);
    assert.ok(!text.includes(key) && !text.includes(org), `${language} holds no typed credential`);
  }
  // The language chosen is the one every operation shows.
  const me = page.locator("details#me");
  await me.locator("summary").click();
  assert.equal(await me.getByRole("tab", { name: "Rust" }).getAttribute("aria-selected"), "true");
  await context.close();
});

test("request and response schemas are tables with each field's limits", { skip }, async () => {
  const { context, page } = await openDocs();
  const create = page.locator("details#create_agent");
  await create.locator("summary").click();
  const name = create.locator(".request-schema tr[data-field=name]");
  assert.match(await name.innerText(), /name\s+required\s+string/);
  assert.match(await name.innerText(), /1–100 characters/);
  assert.match(await create.locator(".request-schema tr[data-field=description]").innerText(), /optional[\s\S]*up to 2,000 characters/);
  const id = create.locator(".response-schema tr[data-field=id]");
  assert.match(await id.innerText(), /^id\s+string \(uuid\)/);
  assert.match(await create.locator(".response-schema tr[data-field=model]").innerText(), /model\s+optional\s+string or null/);

  const list = page.locator("details#list_agents");
  await list.locator("summary").click();
  assert.match(await list.locator("tr[data-field=Limit]").innerText(), /query[\s\S]*1 to 100/);
  assert.ok(await list.locator(".response-schema tr[data-field='items[].name']").count(), "nested members are listed");
  await context.close();
});

test("examples are realistic: one per status, errors as problem documents with their codes", { skip }, async () => {
  const { context, page } = await openDocs();
  const create = page.locator("details#create_agent");
  await create.locator("summary").click();
  const statuses = create.getByRole("tablist", { name: "Status" });
  const doc = await (await fetch(`${base}/openapi.json`)).json();
  const documented = Object.keys(doc.paths["/api/v1/Agent"].post.responses);
  assert.deepEqual(await statuses.getByRole("tab").allInnerTexts(), documented);
  const shown = async (status) => {
    await statuses.getByRole("tab", { name: status }).click();
    return JSON.parse(await create.locator(".examples [role=tabpanel]:not([hidden]) pre").innerText());
  };
  const created = await shown("201");
  assert.equal(created.name, "Support triage");
  assert.match(created.id, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
  const conflict = await shown("409");
  assert.equal(conflict.status, 409);
  assert.equal(conflict.code, "conflict");
  assert.equal(conflict.type, "/docs/errors#conflict");
  const invalid = await shown("400");
  assert.equal(invalid.code, "validation_error");
  assert.deepEqual(invalid.errors, { name: ["must be 1–100 characters"] }, "the field with its own limit");
  const unauthorized = await shown("401");
  assert.ok(["missing_api_key", "invalid_api_key", "expired_api_key", "missing_org_id"].includes(unauthorized.code));
  // A prefilled body holds no empty text for a required field.
  const task = page.locator("details#create_task");
  await task.locator("summary").click();
  const body = JSON.parse(await task.locator("textarea").inputValue());
  assert.ok(body.title && body.workspaceId, "required members have values");
  for (const v of Object.values(body)) assert.notEqual(v, "");
  await context.close();
});
