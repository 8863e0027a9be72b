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
