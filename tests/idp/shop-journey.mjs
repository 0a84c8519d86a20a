// A shopper's journey through the gateway in a real browser (Debian's Chromium, driven by
// playwright-core): sign in at the IdP, see the catalogue of the assigned variant, put a product
// in the cart, order, wait for the order's invoice and its notification, sign out.
//
//   node shop-journey.mjs <shop URL> <user> [--screenshot DIR] [--degraded] [--timeout-ms N]
//
// --degraded: the invoice service is expected to fail; the order page must show its degraded
//             state (data-degraded="invoice") instead of an error page.
// --screenshot DIR: PNGs of the catalogue, the cart and the order page.
// Prints one JSON line: {"variant", "order", "invoice", "notification", "degraded",
// "signedOut", "steps": [...]} and exits 0; exits 1 with {"error", "steps", "url", "body"}.
import { chromium } from 'playwright-core';

const [start, user, ...rest] = process.argv.slice(2);
const flag = (name) => rest.includes(name);
const value = (name) => {
  const i = rest.indexOf(name);
  return i >= 0 ? rest[i + 1] : undefined;
};
const screenshots = value('--screenshot');
const expectDegraded = flag('--degraded');
const timeout = Number(value('--timeout-ms') || 30000);
const steps = [];
const step = (s) => steps.push(s);

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--no-first-run', '--disable-sync', '--disable-quic'],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
page.setDefaultTimeout(20000);
const shot = async (name) => {
  if (screenshots) await page.screenshot({ path: `${screenshots}/${name}.png` });
};
const origin = new URL(start).origin;
// An attribute of the first element matching `selector`, null when there is none (no waiting).
const attr = async (selector, name) => {
  const l = page.locator(selector);
  return (await l.count()) ? l.first().getAttribute(name) : null;
};

async function signIn() {
  await page.goto(start);
  step(`redirected to ${new URL(page.url()).origin}`);
  // oidc-provider's development login form, then its consent page (first login only).
  await page.fill('input[name=login]', user);
  await page.fill('input[name=password]', 'any password');
  await page.click('button[type=submit]');
  await page.waitForLoadState('load');
  if (!page.url().startsWith(origin)) {
    await page.click('button[type=submit]');
  }
  await page.waitForURL((u) => u.origin === origin && !u.pathname.startsWith('/oauth2/'));
  step('signed in');
}

try {
  await signIn();
  const main = page.locator('main[data-variant]');
  await main.waitFor();
  const variant = await main.getAttribute('data-variant');
  step(`catalogue ${variant}`);
  await shot('catalogue');

  await page.locator('form[action="/cart/items"] button[type=submit]').first().click();
  await page.waitForURL(`${origin}/cart`);
  step('added to cart');
  await shot('cart');
  await page.locator('form[action="/checkout"] button[type=submit]').click();
  await page.waitForURL(/\/orders\/\d+$/);
  const order = await page.locator('[data-order]').first().getAttribute('data-order');
  step(`ordered ${order}`);

  // The invoice is created by store's outbox and its e-mail by invoice's: reload until both
  // show (or, in a drill, until the degraded state does).
  let invoice = null;
  let notification = null;
  let degraded = false;
  const deadline = Date.now() + timeout;
  while (Date.now() < deadline) {
    degraded = (await page.locator('[data-degraded="invoice"]').count()) > 0;
    invoice = await attr('[data-invoice]', 'data-invoice');
    notification = await attr('[data-notification]', 'data-notification');
    if (expectDegraded ? degraded : invoice && notification) break;
    await page.waitForTimeout(500);
    await page.reload();
  }
  step(`invoice ${invoice}, notification ${notification}, degraded ${degraded}`);
  await shot('order');
  if (expectDegraded ? !degraded : !(invoice && notification)) {
    throw new Error(expectDegraded ? 'no degraded invoice state on the order page'
      : 'the order page never showed its invoice and notification');
  }

  // Sign out: the proxy ends the session and sends the browser to the IdP's logout page.
  await page.locator(`a[href$="/oauth2/logout"], form[action$="/oauth2/logout"] button`).first().click();
  await page.waitForLoadState('load');
  if (!page.url().startsWith(origin)) {
    const confirm = page.locator('button[type=submit], button[autofocus]');
    if (await confirm.count()) await confirm.first().click();
    await page.waitForLoadState('load');
  }
  step(`after sign-out at ${new URL(page.url()).origin}${new URL(page.url()).pathname}`);
  // Signed out: the shop sends this browser to sign in again.
  await page.goto(start);
  const signedOut = !page.url().startsWith(origin) && (await page.locator('input[name=login]').count()) > 0;
  step(`signed out ${signedOut}`);
  console.log(JSON.stringify({ variant, order, invoice, notification, degraded, signedOut, steps }));
} catch (e) {
  console.log(JSON.stringify({ error: String(e), steps, url: page.url(), body: (await page.innerText('body').catch(() => '')).slice(0, 2000) }));
  process.exitCode = 1;
} finally {
  await browser.close();
}
