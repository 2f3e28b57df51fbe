/**
 * Issue 15 item 5: the fleet page in a real browser (Debian's chromium driven by playwright-core;
 * scripts/ensure-system-deps.sh installs it). A gateway with tokens on simulator VMs: the public
 * shell asks for a token, lists the VMs with their agent state, shows a VM frozen through the API
 * with its owner and a ticking countdown (picked up by the page's own refresh), lists a down VM's
 * error, and a read token limited to web-* sees only those VMs. The page runs under its strict
 * Content-Security-Policy (no violation reported) and through the Host/Origin checks.
 * In CI (CI set) or with QGA_REQUIRE_BROWSER=1 a missing browser FAILS the test; elsewhere it skips.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Simulator } from '../../sim/index.js';
import { listen, makeApp } from '../helpers/app.js';

const CHROMIUM = '/usr/bin/chromium';
/** the little of the DOM the page functions below use (the test's tsconfig has no DOM lib) */
interface Dom {
  document: { querySelector(selector: string): { textContent: string | null } | null };
  sessionStorage: { getItem(key: string): string | null };
}
const REQUIRED = Boolean(process.env.CI) || process.env.QGA_REQUIRE_BROWSER === '1';
const HAVE = existsSync(CHROMIUM);

const TOKENS = [
  { name: 'admin', token: 'admin-token-0123456789abcdef', scopes: ['read', 'write', 'admin'] },
  { name: 'webreader', token: 'webr-token-0123456789abcdef', scopes: ['read'], vms: ['web-*'] },
];

describe('the fleet page needs a browser', () => {
  it(`finds ${CHROMIUM} (required in CI and with QGA_REQUIRE_BROWSER=1)`, (ctx) => {
    if (!HAVE && !REQUIRED) ctx.skip();
    expect(HAVE, `${CHROMIUM} is missing: apt-get install chromium (scripts/ensure-system-deps.sh does)`).toBe(true);
  });
});

describe.runIf(HAVE)('GET /ui in chromium', () => {
  const dir = mkdtempSync(join(tmpdir(), 'qga-ui-'));
  const sim = new Simulator({ dir });
  let app: FastifyInstance;
  let base: string;
  let browser: Browser;
  let page: Page;
  const problems: string[] = [];

  const api = (method: string, path: string, body?: unknown) =>
    fetch(base + path, {
      method,
      headers: { authorization: `Bearer ${TOKENS[0].token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      ...(body ? { body: JSON.stringify(body) } : {}),
    });

  beforeAll(async () => {
    await Promise.all(['web-01', 'web-02', 'db-01'].map((name) => sim.addVm({ name })));
    const vms = [...sim.list().map((v) => ({ name: v.name, endpoint: v.endpoint })), { name: 'web-dead', endpoint: { type: 'unix' as const, path: join(dir, 'nobody.sock') } }];
    app = await makeApp({ vms, config: { auth: { tokens: TOKENS, anonymousScopes: [] }, agent: { probeIntervalMs: 0 } } });
    base = await listen(app);
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
    page = await browser.newPage();
    page.on('console', (m) => {
      if (m.type() === 'error') problems.push(m.text());
    });
    page.on('pageerror', (e) => problems.push(String(e)));
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    await app?.close();
    await sim.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const rows = (table: string, attr: string) => page.locator(`#${table} tbody tr[${attr}]`).evaluateAll((trs, a) => trs.map((tr) => tr.getAttribute(a)), attr);

  it('serves a public shell with no data under a strict CSP, then shows what the entered token may see', async () => {
    const asked: string[] = [];
    page.on('request', (r) => asked.push(new URL(r.url()).pathname));
    const shell = await page.goto(`${base}/ui`);
    expect(shell?.status()).toBe(200);
    const csp = shell?.headers()['content-security-policy'] ?? '';
    expect(csp).toContain("script-src 'self'");
    expect(csp).toContain("default-src 'none'");
    expect(await shell?.text()).not.toContain('web-01');
    await page.locator('#login').waitFor({ state: 'visible' });
    // its own icon, public: the browser does not ask for /favicon.ico (a 401, audited as a denial, at every opening)
    await page.waitForLoadState('networkidle');
    expect(asked).toContain('/ui/icon.svg');
    expect(asked).not.toContain('/favicon.ico');
    expect((await fetch(`${base}/ui/icon.svg`)).headers.get('content-type')).toBe('image/svg+xml');

    // a down VM with an error to show: one failed connect
    expect((await api('GET', '/v1/vms/web-dead/ping')).status).toBe(503);

    await page.fill('#token', TOKENS[0].token);
    await page.click('#login button[type=submit]');
    await page.locator('#vms tbody tr[data-vm="web-dead"]').waitFor();
    expect(await rows('vms', 'data-vm')).toEqual(['db-01', 'web-01', 'web-02', 'web-dead']);
    expect(await page.locator('#vms tr[data-vm="web-dead"]').getAttribute('data-agent')).toBe('down');
    expect(await rows('errors', 'data-error')).toContain('web-dead');
    expect(await page.evaluate(() => (globalThis as unknown as Dom).sessionStorage.getItem('qga-gateway-token'))).toBe(TOKENS[0].token);

    // frozen through the API: the page's own refresh (every 5 s) shows it with owner and a ticking countdown
    const f = await api('POST', '/v1/vms/web-01/fsfreeze', { ttlSeconds: 600 });
    expect(f.status).toBe(201);
    const { leaseId } = (await f.json()) as { leaseId: string };
    try {
      const frozen = page.locator('#freezes tbody tr[data-freeze="web-01"]');
      await frozen.waitFor({ timeout: 8_000 });
      expect(await frozen.getAttribute('data-owner')).toBe('admin');
      const cd = frozen.locator('td.countdown');
      const first = await cd.textContent();
      expect(first).toMatch(/^(9|10)m \d+s$/);
      // a function, not a string: the page's CSP forbids eval
      await page.waitForFunction((was) => (globalThis as unknown as Dom).document.querySelector('#freezes tr[data-freeze="web-01"] td.countdown')?.textContent !== was, first, { timeout: 3_000 });

      // another token, limited to web-*: only those VMs; the freeze of web-01 still shows
      await page.click('#logout');
      await page.locator('#login').waitFor({ state: 'visible' });
      await page.fill('#token', TOKENS[1].token);
      await page.click('#login button[type=submit]');
      await page.locator('#vms tbody tr[data-vm="web-01"]').waitFor();
      expect(await rows('vms', 'data-vm')).toEqual(['web-01', 'web-02', 'web-dead']);
      expect(await rows('freezes', 'data-freeze')).toEqual(['web-01']);

      // an unknown token: asked again, with the reason
      await page.click('#logout');
      await page.fill('#token', 'not-a-token-0123456789abcdef');
      await page.click('#login button[type=submit]');
      await page.locator('#login-error', { hasText: '401' }).waitFor();
    } finally {
      expect((await api('DELETE', `/v1/vms/web-01/fsfreeze?leaseId=${leaseId}`)).status).toBe(200);
    }
    // the only console error is the browser's own report of the 401 above
    expect(problems.filter((p) => !p.includes('401'))).toEqual([]);
  }, 60_000);

  it("never shows one token's data to the next: a refresh still in flight when the token is forgotten is dropped", async () => {
    const p = await browser.newPage();
    try {
      // the admin's refreshes after the first (every 5 s) answer late (1.5 s)
      let adminAsked = 0;
      await p.route('**/v1/vms?limit=1000*', async (route) => {
        if (route.request().headers().authorization === `Bearer ${TOKENS[0].token}` && ++adminAsked >= 2) await new Promise((r) => setTimeout(r, 1_500));
        await route.continue();
      });
      await p.goto(`${base}/ui`);
      await p.fill('#token', TOKENS[0].token);
      await p.click('#login button[type=submit]');
      await p.locator('#vms tbody tr[data-vm="db-01"]').waitFor();
      for (let i = 0; i < 400 && adminAsked < 2; i++) await new Promise((r) => setTimeout(r, 25));
      expect(adminAsked).toBe(2);
      // forgotten while the admin's refresh is out; the web-* reader logs in
      await p.click('#logout');
      await p.fill('#token', TOKENS[1].token);
      await p.click('#login button[type=submit]');
      // watch the table past the admin's late answer: db-01 (not the reader's) never appears
      const seen = new Set<string>();
      const t0 = Date.now();
      while (Date.now() - t0 < 3_000) {
        for (const vm of await p.locator('#vms tbody tr[data-vm]').evaluateAll((trs) => trs.map((tr) => tr.getAttribute('data-vm')))) seen.add(String(vm));
        await new Promise((r) => setTimeout(r, 50));
      }
      expect([...seen].sort()).toEqual(['web-01', 'web-02', 'web-dead']);
    } finally {
      await p.close();
    }
  }, 30_000);

  it('a fleet past the pages it follows says so, and still lists every down VM', async () => {
    const p = await browser.newPage();
    try {
      const vm = (name: string, state: string) => ({ name, agent: { state, since: new Date().toISOString(), ...(state === 'down' ? { lastError: `${name} is gone` } : {}) }, frozen: false, labels: {} });
      await p.route('**/v1/vms?limit=1000*', async (route) => {
        const url = new URL(route.request().url());
        if (url.searchParams.get('state') === 'down') return route.fulfill({ json: { items: [vm('z-down', 'down')] } });
        const n = Number(url.searchParams.get('cursor') ?? 0);
        // every page has a next: more than the page follows
        return route.fulfill({ json: { items: Array.from({ length: 1000 }, (_, i) => vm(`p${n}-${i}`, 'up')), next: String(n + 1) } });
      });
      await p.goto(`${base}/ui`);
      await p.fill('#token', TOKENS[0].token);
      await p.click('#login button[type=submit]');
      await p.locator('#vms tbody tr[data-vm="z-down"]').waitFor({ timeout: 15_000 });
      expect(await p.locator('#vms-count').textContent()).toMatch(/^\(10001: the first 10000 and every down VM; more not shown/);
      expect(await p.locator('#errors tbody tr[data-error="z-down"]').count()).toBe(1);
      // an up VM's old error is not a recent one
      expect(await p.locator('#errors tbody tr[data-error^="p0-"]').count()).toBe(0);
    } finally {
      await p.close();
    }
  }, 30_000);
});
